"""A node-local, content-addressed cache of hub objects.

Keys are lakeFS object checksums, so an entry never goes stale: a commit that
only fixes labels leaves every image shard's checksum — and cache entry — valid,
and every trial and epoch on a node shares one copy. Writes are atomic (temp
file, fsync, rename in the same directory), so a crashed or concurrent reader
never sees half a file; size is bounded by evicting least-recently-used entries.

A key names what an entry *should* hold, not what the disk holds now: a bad
sector, a full disk during an older write, or a hand-edited file would
otherwise be served to every trial on the node for as long as the entry lives.
So each entry carries a small header (magic, payload length, payload SHA-256)
and every hit is checked against it — length first, then the hash — and,
where the caller knows it (a shard's manifest records both), against the
expected length and SHA-256 too. A bad entry is deleted and fetched again.
Hashing on every hit is deliberate: a shard is read here once per node and image
size when training (its decoded images, :mod:`flotilla.data.decoded`, are what
epochs read, from entries in this same folder, under this cap) and otherwise once
per pass by tools that need the Parquet itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from flotilla.errors import ConfigError, DataValidationError

_KEY_RE = re.compile(r"\A[A-Za-z0-9_-]{8,128}\Z")  # \Z: '$' would let "key\n" through
DEFAULT_MAX_BYTES = 20 * 1024**3
_MAGIC = b"FLTBLOB1"
_HEADER_LEN = len(_MAGIC) + 8 + 32  # magic, payload length (big-endian), sha256 digest of the payload


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    bytes_fetched: int = 0
    evictions: int = 0
    corrupt: int = 0  # entries found damaged (or of an older format) on a hit, deleted and fetched again


class BlobCache:
    """``get(key, fetch)`` returns the bytes for ``key``, calling ``fetch()`` on a miss."""

    def __init__(self, root: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        self._lock = threading.Lock()

    def path(self, key: str) -> Path:
        if not _KEY_RE.match(key):
            raise ConfigError(f"invalid cache key {key!r}", hint="cache keys are object checksums (hex)")
        return self.root / key[:2] / key

    def get(
        self, key: str, fetch: Callable[[], bytes], *, sha256: str | None = None, size: int | None = None, what: str = ""
    ) -> bytes:
        """The bytes for ``key``: from disk if the entry is intact, else from ``fetch()``.

        ``sha256``/``size``, when given, are what the bytes must be (hex digest,
        length): a cached entry that differs is refetched, and fetched bytes that
        differ raise :class:`DataValidationError` naming ``what`` (default: the key)
        and are not cached.
        """
        p = self.path(key)
        data = self._read_intact(p, sha256, size)
        if data is not None:
            with contextlib.suppress(FileNotFoundError):  # another process on this node evicted it after we read it
                os.utime(p)  # LRU by mtime
            self.stats.hits += 1
            return data
        data = fetch()
        self.stats.misses += 1
        self.stats.bytes_fetched += len(data)
        digest = hashlib.sha256(data).digest()
        if (sha256 is not None and digest.hex() != sha256) or (size is not None and len(data) != size):
            raise DataValidationError(
                f"{what or key} does not match the checksum or size it should have"
                f" ({len(data)} bytes, sha256 {digest.hex()[:12]}...; expected {size} bytes, sha256 {(sha256 or '?')[:12]}...)",
                hint="the object was altered after it was recorded; re-ingest the dataset",
            )
        self._put(p, data, digest)
        return data

    def _read_intact(self, p: Path, sha256: str | None, size: int | None) -> bytes | None:
        """The entry's payload if it is whole and matches its header (and the expectations); else None, entry gone."""
        try:
            with open(p, "rb") as fh:
                header = fh.read(_HEADER_LEN)
                data = fh.read()
        except FileNotFoundError:
            return None
        ok = len(header) == _HEADER_LEN and header.startswith(_MAGIC)
        if ok:
            length, digest = int.from_bytes(header[8:16], "big"), header[16:]
            ok = (
                len(data) == length
                and (size is None or length == size)
                and (sha256 is None or digest.hex() == sha256)
                and hashlib.sha256(data).digest() == digest
            )
        if ok:
            return data
        self.stats.corrupt += 1
        p.unlink(missing_ok=True)  # if a good copy replaced it meanwhile, it is only fetched once more
        return None

    def _put(self, p: Path, data: bytes, digest: bytes) -> None:
        def write(fh: BinaryIO) -> None:
            fh.write(_MAGIC + len(data).to_bytes(8, "big") + digest)
            fh.write(data)

        self._write_file(p, write)

    def write_atomic(self, key: str, write: Callable[[BinaryIO], None]) -> Path:
        """Write the entry ``key`` with ``write(fh)``, atomically, then evict down to the cap.

        For derived entries another module formats (:mod:`flotilla.data.decoded`): they share the
        folder, the cap and the eviction order, but not the blob header, so :meth:`get` never reads them.
        """
        p = self.path(key)
        self._write_file(p, write)
        return p

    def _write_file(self, p: Path, write: Callable[[BinaryIO], None]) -> None:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
                fh.flush()
                # on disk before the rename makes it visible: else a crash can leave a named but empty file
                os.fsync(fh.fileno())
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._evict()

    def _entries(self) -> list[tuple[float, int, Path]]:
        """(mtime, size, path) of every cached object; one that another process removes meanwhile is skipped."""
        out = []
        for f in self.root.glob("*/*"):
            if f.name.startswith(".tmp-"):
                continue
            try:
                st = f.stat()
            except FileNotFoundError:
                continue
            out.append((st.st_mtime, st.st_size, f))
        return out

    def size(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def _evict(self) -> None:
        with self._lock:  # a thread lock: processes sharing the folder may evict at once, hence _entries' care
            files = self._entries()
            total = sum(s for _, s, _ in files)
            for _, size, f in sorted(files):
                if total <= self.max_bytes:
                    break
                f.unlink(missing_ok=True)
                total -= size
                self.stats.evictions += 1
