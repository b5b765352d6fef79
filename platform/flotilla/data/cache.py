"""A node-local, content-addressed cache of hub objects.

Keys are lakeFS object checksums, so an entry never goes stale: a commit that
only fixes labels leaves every image shard's checksum — and cache entry — valid,
and every trial and epoch on a node shares one copy. Writes are atomic (temp
file + rename in the same directory), so a crashed or concurrent reader never
sees half a file; size is bounded by evicting least-recently-used entries.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flotilla.errors import ConfigError

_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{8,128}$")
DEFAULT_MAX_BYTES = 20 * 1024**3


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    bytes_fetched: int = 0
    evictions: int = 0


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

    def get(self, key: str, fetch: Callable[[], bytes]) -> bytes:
        p = self.path(key)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            pass
        else:
            try:
                os.utime(p)  # LRU by mtime
            except FileNotFoundError:  # another process on this node evicted it after we read it: fine
                pass
            self.stats.hits += 1
            return data
        data = fetch()
        self.stats.misses += 1
        self.stats.bytes_fetched += len(data)
        self._put(p, data)
        return data

    def _put(self, p: Path, data: bytes) -> None:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
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
