"""The node-local blob cache when other processes on the node evict from the same folder."""

from __future__ import annotations

import os

from flotilla.data import cache as cache_mod
from flotilla.data.cache import BlobCache

KEY = "ab" + "0" * 62


def test_a_hit_evicted_by_another_process_between_read_and_touch_is_still_a_hit(tmp_path, monkeypatch):
    c = BlobCache(tmp_path, max_bytes=1 << 20)
    c.get(KEY, lambda: b"blob")
    real_utime = os.utime

    def evicted_meanwhile(path, *a, **kw):  # what another worker's eviction does between our read and touch
        os.unlink(path)
        return real_utime(path, *a, **kw)

    monkeypatch.setattr(cache_mod.os, "utime", evicted_meanwhile)
    assert c.get(KEY, lambda: b"refetched") == b"blob" and c.stats.hits == 1


def test_eviction_and_size_skip_files_that_vanish_while_they_are_listed(tmp_path, monkeypatch):
    c = BlobCache(tmp_path, max_bytes=20)
    for i in range(3):
        c.get(f"{i:02d}" + "f" * 62, lambda: b"123456")
    first, second, _ = sorted(p for p in tmp_path.glob("*/*") if not p.name.startswith(".tmp-"))
    path_type, real_glob, real_stat = type(tmp_path), type(tmp_path).glob, type(tmp_path).stat

    def listed_then_gone(self, pattern):  # another worker evicts `first` right after our listing
        found = list(real_glob(self, pattern))
        first.unlink(missing_ok=True)
        return iter(found)

    def gone_after_one_look(self, *a, **kw):  # ... and `second` right after we first looked at it
        st = real_stat(self, *a, **kw)
        if self == second:
            second.unlink(missing_ok=True)
        return st

    monkeypatch.setattr(path_type, "glob", listed_then_gone)
    monkeypatch.setattr(path_type, "stat", gone_after_one_look)
    assert c.size() <= 20
    c.get("ff" + "e" * 62, lambda: b"1234567890123")  # over the limit: evicts without tripping over either
