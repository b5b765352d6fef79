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

The cache must never be why training fails. Its size is capped twice: by ``max_bytes`` (20 GiB by
default) and by the disk it lives on, where it leaves ``reserve_bytes`` free (:func:`cap_bytes`),
so checkpoints, logs and other programs on that disk keep their room. And when it cannot write at
all (a disk filled by someone else, a quota, a read-only or vanished folder: any ``OSError``), it
stops trying for the rest of the process with one warning that names the folder and the fix, and
:meth:`BlobCache.get` serves the fetched bytes uncached (the loader then reads and decodes shards
from the hub every epoch: slower, identical batches).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import tempfile
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from flotilla.errors import ConfigError, DataValidationError

_KEY_RE = re.compile(r"\A[A-Za-z0-9_-]{8,128}\Z")  # \Z: '$' would let "key\n" through
DEFAULT_MAX_BYTES = 20 * 1024**3
DEFAULT_RESERVE_BYTES = 1024**3
"""Free space the cache leaves on its disk, whatever its own cap."""
_MAGIC = b"FLTBLOB1"
_HEADER_LEN = len(_MAGIC) + 8 + 32  # magic, payload length (big-endian), sha256 digest of the payload


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    bytes_fetched: int = 0
    evictions: int = 0
    corrupt: int = 0  # entries found damaged (or of an older format) on a hit, deleted and fetched again


def cap_bytes(max_bytes: int, cached: int, free: int, reserve: int) -> int:
    """The most the cache may hold now: ``max_bytes``, and no more than leaves ``reserve`` free on its disk.

    ``cached`` (the cache's own bytes) counts as room, since evicting it frees that much.
    """
    return max(0, min(max_bytes, cached + free - reserve))


_warned: set[str] = set()
_warned_lock = threading.Lock()


class CacheUnwritable(UserWarning):
    """The node's data cache cannot be written; the loader reads from the hub uncached (slower, same batches)."""


class BlobCache:
    """``get(key, fetch)`` returns the bytes for ``key``, calling ``fetch()`` on a miss."""

    def __init__(
        self, root: str | Path, max_bytes: int = DEFAULT_MAX_BYTES, *, reserve_bytes: int = DEFAULT_RESERVE_BYTES
    ) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.reserve_bytes = reserve_bytes
        self.stats = CacheStats()
        self.unwritable: str | None = None  # why this process stopped writing entries (None: it writes)
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
            with contextlib.suppress(OSError):  # evicted by another process after we read it; a read-only cache
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
        self._put(p, data, digest)  # or not, when the disk has no room: the bytes are served all the same
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
        with contextlib.suppress(OSError):  # if a good copy replaced it meanwhile, it is only fetched once more
            p.unlink(missing_ok=True)
        return None

    def _put(self, p: Path, data: bytes, digest: bytes) -> None:
        def write(fh: BinaryIO) -> None:
            fh.write(_MAGIC + len(data).to_bytes(8, "big") + digest)
            fh.write(data)

        self._write_file(p, write, _HEADER_LEN + len(data))

    def write_atomic(self, key: str, write: Callable[[BinaryIO], None], *, size: int = 0) -> Path | None:
        """Write the entry ``key`` with ``write(fh)``, atomically, evicting down to the cap; None when not written.

        For derived entries another module formats (:mod:`flotilla.data.decoded`): they share the
        folder, the cap and the eviction order, but not the blob header, so :meth:`get` never reads them.
        ``size`` (what the entry will take, at least) is made room for first. An entry is not written when
        it alone exceeds the cap, or when the cache cannot write (:attr:`unwritable`, with one warning).
        """
        p = self.path(key)
        return p if self._write_file(p, write, size) else None

    def _write_file(self, p: Path, write: Callable[[BinaryIO], None], size: int) -> bool:
        if self.unwritable is not None or size > self.max_bytes:
            return False
        if not self._evict(size):
            self._give_up(
                f"less than {_gib(self.reserve_bytes)} would be left free on its disk ({_gib(_free_bytes(self.root) or 0)} free)"
            )
            return False
        tmp: str | None = None
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as fh:
                write(fh)
                fh.flush()
                # on disk before the rename makes it visible: else a crash can leave a named but empty file
                os.fsync(fh.fileno())
            os.replace(tmp, p)
            tmp = None
        except OSError as exc:  # a full disk, a quota, a read-only folder: uncached from now on, not a failure
            self._give_up(exc.strerror or errno.errorcode.get(exc.errno or 0) or str(exc))
            return False
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    Path(tmp).unlink(missing_ok=True)
        self._evict(0)
        return True

    def _give_up(self, why: str) -> None:
        """Stop writing entries in this process, with the one warning that says where and what to do."""
        if self.unwritable is not None:
            return
        self.unwritable = why
        with _warned_lock:
            if str(self.root) in _warned:  # another cache object on the same folder in this process said it
                return
            _warned.add(str(self.root))
        warnings.warn(
            f"the node's data cache in {self.root} cannot be written ({why}): data is read from the hub without "
            "caching from now on (training goes on, with the same batches; each epoch fetches and decodes its "
            f"shards again). To fix: free space on that disk, or point FLOTILLA_CACHE at a disk with room (the "
            f"cache keeps {_gib(self.reserve_bytes)} free there and holds at most {_gib(self.max_bytes)})",
            CacheUnwritable,
            stacklevel=4,
        )

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

    def _evict(self, incoming: int) -> bool:
        """Evict oldest first until ``incoming`` more bytes fit under :func:`cap_bytes`; False if they cannot."""
        with self._lock:  # a thread lock: processes sharing the folder may evict at once, hence _entries' care
            files = self._entries()
            total = sum(s for _, s, _ in files)
            free = _free_bytes(self.root)
            limit = self.max_bytes if free is None else cap_bytes(self.max_bytes, total, free, self.reserve_bytes)
            for _, size, f in sorted(files):
                if total + incoming <= limit:
                    break
                f.unlink(missing_ok=True)
                total -= size
                self.stats.evictions += 1
            return total + incoming <= limit


def _free_bytes(root: Path) -> int | None:
    """Free bytes on the disk holding ``root`` (or its nearest existing parent); None when unknown."""
    for p in (root, *root.parents):
        try:
            return shutil.disk_usage(p).free
        except FileNotFoundError:
            continue
        except OSError:
            return None
    return None


def _gib(n: int) -> str:
    return f"{n / 1024**3:.1f} GiB" if n >= 1024**3 / 10 else f"{n / 1024**2:.1f} MiB"
