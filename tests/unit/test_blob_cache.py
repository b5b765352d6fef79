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
    h = cache_mod._HEADER_LEN  # every entry is its header plus the payload
    c = BlobCache(tmp_path, max_bytes=3 * h + 20)
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
    assert c.size() <= 3 * h + 20
    assert c.get("ff" + "e" * 62, lambda: b"1234567890123") == b"1234567890123"  # over the limit: evicts ...
    monkeypatch.undo()
    assert c.size() <= c.max_bytes, "eviction gave up at the first vanished file"  # ... without tripping over either
    assert c.path("ff" + "e" * 62).exists()  # and the newest entry is the one kept


def test_a_key_with_a_trailing_newline_is_refused(tmp_path):
    import pytest

    from flotilla.errors import ConfigError

    with pytest.raises(ConfigError, match="invalid cache key"):
        BlobCache(tmp_path).path(KEY + "\n")


def test_a_damaged_entry_is_refetched_not_served(tmp_path):
    import hashlib

    good = b"shard bytes " * 100
    sha = hashlib.sha256(good).hexdigest()
    c = BlobCache(tmp_path)
    assert c.get(sha, lambda: good, sha256=sha, size=len(good)) == good
    p = c.path(sha)
    damages = {
        "flipped byte": lambda raw: raw[:-5] + bytes([raw[-5] ^ 1]) + raw[-4:],
        "truncated": lambda raw: raw[: len(raw) // 2],
        "empty (lost write)": lambda raw: b"",
        "raw payload, no header": lambda raw: good,
    }
    for name, damage in damages.items():
        p.write_bytes(damage(p.read_bytes()))
        fetched: list[int] = []
        assert c.get(sha, lambda fetched=fetched: fetched.append(1) or good, sha256=sha, size=len(good)) == good, name
        assert fetched == [1], name
        assert c.get(sha, lambda: b"never", sha256=sha, size=len(good)) == good, name  # healed: a hit again
    assert c.stats.corrupt == len(damages)


def test_a_commit_keyed_entry_without_a_known_hash_is_still_verified_on_hit(tmp_path):
    key = "cd" + "1" * 62  # manifest/labels: keyed by (repo, commit, path), no expected sha256 known up front
    c = BlobCache(tmp_path)
    c.get(key, lambda: b'{"name": "faces"}')
    p = c.path(key)
    raw = p.read_bytes()
    p.write_bytes(raw.replace(b"faces", b"fakes"))
    assert c.get(key, lambda: b'{"name": "faces"}') == b'{"name": "faces"}' and c.stats.corrupt == 1


def test_an_entry_that_matches_its_header_but_not_the_expected_hash_is_refetched(tmp_path):
    import hashlib

    good, other = b"right", b"wrong"
    sha = hashlib.sha256(good).hexdigest()
    BlobCache(tmp_path).get(sha, lambda: other)  # e.g. written by a caller that did not check
    c = BlobCache(tmp_path)
    assert c.get(sha, lambda: good, sha256=sha, size=len(good)) == good and c.stats.misses == 1


def test_fetched_bytes_that_do_not_match_raise_and_are_not_cached(tmp_path):
    import hashlib

    import pytest

    from flotilla.errors import DataValidationError

    sha = hashlib.sha256(b"right").hexdigest()
    c = BlobCache(tmp_path)
    with pytest.raises(DataValidationError, match="lakefs://faces/abc/shard-0") as err:
        c.get(sha, lambda: b"wrong", sha256=sha, size=5, what="lakefs://faces/abc/shard-0")
    assert "re-ingest" in err.value.hint and not c.path(sha).exists()


def test_an_entry_is_fsynced_before_it_is_renamed_into_place(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(
        cache_mod.os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))) or real_fsync(fd)
    )
    monkeypatch.setattr(cache_mod.os, "replace", lambda a, b: events.append(("replace", str(a))) or real_replace(a, b))
    BlobCache(tmp_path).get(KEY, lambda: b"blob")
    assert [e[0] for e in events] == ["fsync", "replace"] and events[0][1] == events[1][1]
