"""The decoded-image cache: written once per node, shared, reused without re-hashing, rebuilt when damaged."""

from __future__ import annotations

import hashlib
import io
import multiprocessing

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from flotilla.data.cache import BlobCache
from flotilla.data.decoded import DecodedCache, decode_image, decoded_key
from flotilla.data.prefetch import prefetched
from flotilla.errors import DataValidationError

SHA = hashlib.sha256(b"a shard").hexdigest()


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _shard(n: int = 5, size: int = 16, seed: int = 0) -> tuple[pa.Table, np.ndarray]:
    images = np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    table = pa.table({"sample_id": [f"s{i}" for i in range(n)], "image": [_png(im) for im in images]})
    return table, images


class Reads:
    """A shard source that counts how often the decoded cache had to go back to the PNGs."""

    def __init__(self, table: pa.Table) -> None:
        self.table, self.calls = table, 0

    def __call__(self) -> pa.Table:
        self.calls += 1
        return self.table


def test_a_shard_is_decoded_once_then_mapped_read_only_by_every_reader(tmp_path):
    table, images = _shard()
    source = Reads(table)
    first = DecodedCache(BlobCache(tmp_path)).get(SHA, None, source)
    assert source.calls == 1 and first.sample_ids == tuple(f"s{i}" for i in range(5))
    np.testing.assert_array_equal(first.images, images)
    second_cache = DecodedCache(BlobCache(tmp_path))  # another process's view of the node cache
    second = second_cache.get(SHA, None, source)
    assert source.calls == 1 and second_cache.stats.hits == 1 and second_cache.stats.builds == 0
    np.testing.assert_array_equal(second.images, images)
    assert not second.images.flags.writeable  # a mapping of the shared file, not a private copy
    assert second.path == tmp_path / SHA[:2] / decoded_key(SHA, None)
    assert not [p for p in second.path.parent.iterdir() if p.name.startswith(".tmp-")]


def _open_in_child(root: str) -> tuple[int, int, bytes]:
    cache = DecodedCache(BlobCache(root))
    shard = cache.get(SHA, None, lambda: (_ for _ in ()).throw(AssertionError("rebuilt in the child")))
    return cache.stats.hits, cache.stats.builds, shard.images.tobytes()


def test_another_process_on_the_node_maps_the_same_entry(tmp_path):
    table, images = _shard()
    DecodedCache(BlobCache(tmp_path)).get(SHA, None, Reads(table))
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        hits, builds, pixels = pool.apply(_open_in_child, (str(tmp_path),))
    assert (hits, builds) == (1, 0) and pixels == images.tobytes()


def test_a_hit_reads_only_the_header_never_rehashing_the_pixels(tmp_path, monkeypatch):
    table, _ = _shard()
    cache = DecodedCache(BlobCache(tmp_path))
    cache.get(SHA, None, Reads(table))

    def no_hashing(*a, **kw):
        raise AssertionError("hashed on a hit")

    monkeypatch.setattr(hashlib, "sha256", no_hashing)
    assert DecodedCache(BlobCache(tmp_path)).get(SHA, None, Reads(table)).images.shape == (5, 16, 16, 3)


@pytest.mark.parametrize("damage", ["truncate", "header", "other shard"])
def test_a_truncated_or_mismatched_entry_is_detected_deleted_and_rebuilt(tmp_path, damage):
    table, images = _shard()
    cache = DecodedCache(BlobCache(tmp_path))
    p = cache.get(SHA, None, Reads(table)).path
    raw = p.read_bytes()
    if damage == "truncate":  # a torn write or a full disk
        p.write_bytes(raw[:-100])
    elif damage == "header":  # a bad sector in the header
        p.write_bytes(raw[:20] + b"\xff" * 8 + raw[28:])
    else:  # the entry of another shard under this key
        p.write_bytes(raw.replace(SHA.encode(), hashlib.sha256(b"other").hexdigest().encode(), 1))
    source = Reads(table)
    again = DecodedCache(BlobCache(tmp_path))
    shard = again.get(SHA, None, source)
    assert source.calls == 1 and again.stats.corrupt == 1 and again.stats.builds == 1
    np.testing.assert_array_equal(shard.images, images)
    assert DecodedCache(BlobCache(tmp_path)).get(SHA, None, Reads(table)).path.read_bytes() == raw


def test_image_size_is_part_of_the_key_and_resizes(tmp_path):
    table, _ = _shard(size=16)
    cache = DecodedCache(BlobCache(tmp_path))
    native, resized = cache.get(SHA, None, Reads(table)), cache.get(SHA, 8, Reads(table))
    assert native.images.shape == (5, 16, 16, 3) and resized.images.shape == (5, 8, 8, 3)
    assert native.path != resized.path and cache.stats.builds == 2
    np.testing.assert_array_equal(resized.images[2], decode_image(table.column("image")[2].as_py(), 8))


def test_images_of_different_sizes_need_an_image_size(tmp_path):
    small, _ = _shard(2, size=8)
    big, _ = _shard(2, size=16, seed=1)
    mixed = pa.concat_tables([small, big])
    with pytest.raises(DataValidationError, match="different sizes") as info:
        DecodedCache(BlobCache(tmp_path)).get(SHA, None, Reads(mixed))
    assert "image_size" in info.value.hint
    assert DecodedCache(BlobCache(tmp_path)).get(SHA, 12, Reads(mixed)).images.shape == (4, 12, 12, 3)


def test_decoded_entries_count_against_the_cap_and_are_evicted_oldest_first(tmp_path):
    import os

    table, _ = _shard(20, size=16)  # 15 KiB of pixels + a 4 KiB header per entry
    blobs = BlobCache(tmp_path, max_bytes=2 * (20 * 16 * 16 * 3 + 4096))
    cache = DecodedCache(blobs)
    shas = [hashlib.sha256(bytes([i])).hexdigest() for i in range(3)]
    paths = []
    for age, sha in enumerate(shas):
        paths.append(cache.get(sha, None, Reads(table)).path)
        os.utime(paths[-1], (1000 + age, 1000 + age))  # an LRU order that does not hang on the clock's resolution
    assert blobs.stats.evictions == 1 and not paths[0].exists() and paths[1].exists() and paths[2].exists()
    assert blobs.size() <= blobs.max_bytes
    assert cache.get(shas[1], None, Reads(table)).images.shape == (20, 16, 16, 3)  # the survivors still serve


def test_prefetched_keeps_order_raises_where_it_failed_and_stops_when_abandoned():
    assert list(prefetched(iter(range(50)), 3)) == list(range(50))
    assert list(prefetched(iter(range(5)), 0)) == list(range(5))

    def failing():
        yield 1
        raise DataValidationError("shard 2 is bad")

    got = []
    with pytest.raises(DataValidationError, match="shard 2"):
        for x in prefetched(failing(), 2):
            got.append(x)
    assert got == [1]
    made = []

    def endless():
        i = 0
        while True:
            made.append(i)
            yield i
            i += 1

    it = prefetched(endless(), 2)
    assert next(it) == 0
    it.close()  # the consumer stops: the producer thread stops too
    stopped_at = len(made)
    assert stopped_at <= 5 and len(made) == stopped_at
