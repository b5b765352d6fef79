"""The node cache under disk pressure: it leaves a reserve free, and a disk it cannot write to is not an error.

A full cache disk used to fail training (ENOSPC in the cache's write, issue 22): the cache now caps
itself by free space as well as by size, and when a write fails anyway it serves the fetched bytes
uncached, with one warning naming the folder and the fix. The disks here are real tmpfs mounts
(this needs root, as CI's containers and the dev machine have); where mounting is not allowed the
tests that need one are skipped and the OSError test below still runs.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from flotilla.data import cache as cache_mod
from flotilla.data.cache import BlobCache, CacheUnwritable, cap_bytes
from flotilla.data.decoded import DecodedCache

BLOCK = 4096
HEADER = 48  # magic, length, sha256: every blob entry's header (a payload of n*BLOCK - HEADER fills n blocks)
G = 1 << 30


def small_disk(where: Path, size: int) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()[:80]})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB disk (tmpfs), empty."""
    yield from small_disk(tmp_path / "disk", 64 * BLOCK)


def key(i: int) -> str:
    return f"{i:02x}" + uuid.uuid4().hex * 2


def payload(blocks: int, fill: int = 1) -> bytes:
    return bytes([fill]) * (blocks * BLOCK - HEADER)


def test_the_cap_is_the_size_cap_or_what_leaves_the_reserve_free_whichever_is_smaller():
    assert cap_bytes(20 * G, 0, 100 * G, G) == 20 * G  # a roomy disk: the size cap
    assert cap_bytes(20 * G, 5 * G, 3 * G, G) == 7 * G  # the cache's own entries count as room (evicting frees them)
    assert cap_bytes(20 * G, 0, G // 2, G) == 0  # less than the reserve free: nothing at all
    assert cap_bytes(20 * G, 2 * G, 0, G) == G  # a full disk with 2 GiB of cache in it: give back one
    assert cap_bytes(4 * G, 30 * G, 50 * G, G) == 4 * G


def test_the_cache_never_fills_its_disk_past_the_reserve_and_keeps_the_newest(disk):
    reserve = 24 * BLOCK
    c = BlobCache(disk, max_bytes=G, reserve_bytes=reserve)
    keys = [key(i) for i in range(8)]
    for i, k in enumerate(keys):
        assert c.get(k, lambda i=i: payload(10, i)) == payload(10, i)
        assert shutil.disk_usage(disk).free >= reserve, f"write {i} ate into the reserve"
    kept = [k for k in keys if c.path(k).exists()]
    assert kept == keys[-4:], "the oldest entries go first; 40 blocks of room hold the 4 newest"
    assert c.stats.evictions == 4 and c.unwritable is None


def test_a_disk_with_less_than_the_reserve_free_serves_uncached_with_one_warning(disk):
    (disk / "someone-else").write_bytes(b"x" * (50 * BLOCK))  # another program filled the disk
    c = BlobCache(disk / "cache", reserve_bytes=20 * BLOCK)
    with pytest.warns(CacheUnwritable, match=rf"data cache in {disk / 'cache'} cannot be written.*FLOTILLA_CACHE") as seen:
        assert c.get(key(1), lambda: payload(2)) == payload(2)
        assert c.get(key(2), lambda: payload(2, 7)) == payload(2, 7)
    assert len(seen) == 1 and "checkpoint" not in str(seen[0].message)
    assert c.unwritable and c.size() == 0


def test_enospc_in_the_middle_of_a_write_leaves_no_partial_file_and_says_so_once(disk):
    c = BlobCache(disk, max_bytes=G, reserve_bytes=0)

    def too_big(fh):  # more than the disk holds: a real ENOSPC
        fh.write(b"y" * (100 * BLOCK))

    with pytest.warns(CacheUnwritable, match="No space left on device") as seen:
        assert c.write_atomic(key(1), too_big, size=BLOCK) is None
        assert c.write_atomic(key(2), too_big) is None  # not tried again in this process
        assert c.get(key(3), lambda: payload(1)) == payload(1)
    assert len(seen) == 1
    assert not [p for p in disk.rglob("*") if p.is_file()], "a partial or temporary file was left behind"
    assert shutil.disk_usage(disk).free == 64 * BLOCK


def test_any_oserror_writing_an_entry_serves_the_bytes_uncached(tmp_path, monkeypatch):
    """The branch a quota, a read-only remount or a vanished folder takes (faked: no tmpfs needed)."""

    def quota_exceeded(fd):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    c = BlobCache(tmp_path, reserve_bytes=0)
    monkeypatch.setattr(cache_mod.os, "fsync", quota_exceeded)
    with pytest.warns(CacheUnwritable, match="quota"):
        assert c.get(key(1), lambda: b"blob") == b"blob"
    monkeypatch.undo()
    assert c.stats.misses == 1 and c.size() == 0
    assert not list(tmp_path.rglob(".tmp-*"))


def test_a_hit_on_a_read_only_cache_is_still_a_hit(tmp_path, monkeypatch):
    c = BlobCache(tmp_path)
    c.get(key(1), lambda: b"blob")
    k = next(p.name for p in tmp_path.glob("*/*"))

    def read_only(*a, **kw):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(cache_mod.os, "utime", read_only)
    assert c.get(k, lambda: b"refetched") == b"blob" and c.stats.hits == 1


def test_decoded_images_are_served_from_memory_when_the_disk_is_full(disk):
    import io

    from PIL import Image

    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    pngs = []
    for im in images:
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    table = pa.table({"sample_id": [f"s{i}" for i in range(4)], "image": pngs})
    (disk / "someone-else").write_bytes(b"x" * (63 * BLOCK))
    dc = DecodedCache(BlobCache(disk / "cache", reserve_bytes=0))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        shard = dc.get(hashlib.sha256(b"s").hexdigest(), None, lambda: table)
    assert [w.category for w in seen] == [CacheUnwritable]
    assert shard.sample_ids == ("s0", "s1", "s2", "s3") and np.array_equal(shard.images, images)
    assert dc.blobs.unwritable and not [p for p in (disk / "cache").rglob("*") if p.is_file()]
