"""Decoded images of a shard, memory-mapped and shared by every process on a node.

Decoding PNGs was 83 % of a warm epoch, repeated every epoch by every trial on a node. So the first
reader of a shard decodes it once (from bytes the :class:`~flotilla.data.cache.BlobCache` has just
verified against the manifest's SHA-256) into one uint8 array ``(N, H, W, 3)`` at the run's image
size, and writes it next to the shard's blob in the same node cache, atomically: every later epoch,
trial and worker on the node maps that file (``np.memmap``, read-only) and never decodes or hashes
again; the page cache holds one copy for all of them (``mmap``, read-only; never read whole into RAM).

An entry is keyed by the shard's SHA-256 and the image size, so it never goes stale either (a
label-only commit reuses it; another image size is another entry). It is verified once, when
written: its source bytes were hash-checked. On open only its header (magic, source SHA-256,
shape, dtype) and its exact file length are checked, which catches a torn or truncated file and a
mismatched key, not a flipped pixel: re-hashing tens of MB per shard every epoch is the cost this
cache exists to remove. A bad entry is deleted and rebuilt. Entries live in the blob cache's folder,
so its size cap and LRU eviction count them (a mapped entry that is evicted stays readable by the
processes that mapped it, as an unlinked file does).

The file is a 4 KiB-aligned JSON header (which also lists the shard's sample ids in row order, so a
warm reader never opens the Parquet shard) followed by the raw pixels.
"""

from __future__ import annotations

import contextlib
import io
import json
import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from flotilla.data.cache import BlobCache
from flotilla.errors import DataValidationError

if TYPE_CHECKING:
    import pyarrow as pa

_MAGIC = b"FLTDEC01"
_ALIGN = 4096
FORMAT = 1


@dataclass
class DecodedStats:
    hits: int = 0  # entries opened from disk (built by this or another process)
    builds: int = 0  # shards decoded and written by this process
    corrupt: int = 0  # entries found torn, truncated or not matching their key, deleted and rebuilt


@dataclass(frozen=True)
class DecodedShard:
    """One shard's sample ids and its images, ``images[j]`` the decoded image of ``sample_ids[j]``."""

    sample_ids: tuple[str, ...]
    images: np.ndarray  # read-only, over a shared mapping of the entry's file; uint8 (N, H, W, 3)
    path: Path


def decoded_key(sha256: str, image_size: int | None) -> str:
    """The cache key of a shard's decoded images at ``image_size`` (None: as stored)."""
    return f"{sha256}-{f's{image_size}' if image_size else 'native'}"


def decode_image(data: bytes, image_size: int | None) -> np.ndarray:
    """One PNG (or any format Pillow reads) as uint8 RGB ``[H, W, 3]``, resized bilinearly to ``image_size``."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as opened:
        rgb = opened.convert("RGB")
        if image_size and rgb.size != (image_size, image_size):
            rgb = rgb.resize((image_size, image_size), Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)


def decode_images(images: list[bytes], image_size: int | None, what: str) -> np.ndarray:
    """All of a shard's images in one ``(N, H, W, 3)`` array; images of different sizes need ``image_size``."""
    first = [decode_image(b, image_size) for b in images[:1]]
    shape = first[0].shape if first else (image_size or 0, image_size or 0, 3)
    out = np.empty((len(images), *shape), dtype=np.uint8)
    for j, b in enumerate(images):
        img = first[0] if j == 0 else decode_image(b, image_size)
        if img.shape != shape:
            raise DataValidationError(
                f"{what} holds images of different sizes ({shape[1]}x{shape[0]} and {img.shape[1]}x{img.shape[0]})",
                hint="give the dataset an image_size (the family spec's data.image_size) so every image is resized to it",
            )
        out[j] = img
    return out


class DecodedCache:
    """``get(sha256, image_size, table)``: the shard's decoded images, built from ``table()`` on a miss."""

    def __init__(self, blobs: BlobCache) -> None:
        self.blobs = blobs
        self.stats = DecodedStats()

    def path(self, sha256: str, image_size: int | None) -> Path:
        return self.blobs.path(decoded_key(sha256, image_size))

    def get(self, sha256: str, image_size: int | None, table: Callable[[], pa.Table], *, what: str = "") -> DecodedShard:
        """The entry for (``sha256``, ``image_size``), opened if intact, else built from ``table()``
        (the shard, already verified against ``sha256``) and written once for every process on the node."""
        p = self.path(sha256, image_size)
        shard = self._open(p, sha256, image_size)
        if shard is not None:
            self.stats.hits += 1
            with contextlib.suppress(OSError):  # evicted by another process meanwhile (still mapped); a read-only cache
                os.utime(p)  # LRU by mtime, as for blobs
            return shard
        t = table()
        ids = tuple(t.column("sample_id").to_pylist())
        images = decode_images(t.column("image").to_pylist(), image_size, what or f"shard {sha256[:12]}")
        header = {"format": FORMAT, "sha256": sha256, "image_size": image_size, "shape": list(images.shape), "dtype": "uint8"}
        written = self.blobs.write_atomic(
            decoded_key(sha256, image_size), lambda fh: _write(fh, header | {"ids": list(ids)}, images), size=images.nbytes
        )
        self.stats.builds += 1
        shard = self._open(p, sha256, image_size) if written else None
        if shard is None:  # not written (no room, see BlobCache.unwritable) or evicted at once: serve what we decoded
            return DecodedShard(ids, images, p)
        return shard

    def _open(self, p: Path, sha256: str, image_size: int | None) -> DecodedShard | None:
        """The entry mapped read-only if its header matches the key and its length the header; else None, entry gone."""
        try:
            with open(p, "rb") as fh:
                head = fh.read(16)
                size = os.fstat(fh.fileno()).st_size
                ok = len(head) == 16 and head[:8] == _MAGIC
                offset = int.from_bytes(head[8:16], "big") if ok else 0
                meta = json.loads(fh.read(offset - 16)) if ok and 16 < offset <= size else None
        except FileNotFoundError:
            return None
        except (ValueError, UnicodeDecodeError):
            meta = None
        shape = tuple(meta.get("shape", ())) if isinstance(meta, dict) else ()
        good = (
            isinstance(meta, dict)
            and meta.get("format") == FORMAT
            and meta.get("sha256") == sha256
            and meta.get("image_size") == image_size
            and meta.get("dtype") == "uint8"
            and len(shape) == 4
            and shape[3] == 3
            and len(meta.get("ids", ())) == shape[0]
            and size == offset + int(np.prod(shape))
        )
        if not good:
            self.stats.corrupt += 1
            with contextlib.suppress(OSError):  # if a good copy replaced it meanwhile, it is only built once more
                p.unlink(missing_ok=True)
            return None
        assert isinstance(meta, dict)
        return DecodedShard(tuple(meta["ids"]), _map(p, offset, shape), p)


def _map(p: Path, offset: int, shape: tuple[int, ...]) -> np.ndarray:
    """The pixels as a read-only array over a shared mapping of the file (the file itself is closed)."""
    if shape[0] == 0:
        return np.empty(shape, dtype=np.uint8)
    with open(p, "rb") as fh:
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    with contextlib.suppress(AttributeError, OSError):  # read ahead: the first epoch in a process faults less
        mapped.madvise(mmap.MADV_WILLNEED)
    return np.frombuffer(mapped, dtype=np.uint8, count=int(np.prod(shape)), offset=offset).reshape(shape)


def _write(fh: BinaryIO, meta: dict[str, object], images: np.ndarray) -> None:
    body = json.dumps(meta).encode()
    offset = -(-(16 + len(body)) // _ALIGN) * _ALIGN
    fh.write(_MAGIC + offset.to_bytes(8, "big") + body.ljust(offset - 16))
    fh.write(np.ascontiguousarray(images).data)
