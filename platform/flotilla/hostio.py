"""What flotilla's local services share on the host: private files, exclusive file locks, port probes.

The lakeFS hub (``flotilla.hub``) and Label Studio (``flotilla.labelstudio``) sit side by side in one
layer and may not import each other; both write credentials that must never be world-readable, both
install binaries that two processes must not fetch at once, and both ask whether their port is taken.
One copy of each, here, below both.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 from the first byte (no window where it is world-readable).

    Written beside the target and renamed over it, so a reader never sees half a credentials file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def port_free(port: int) -> bool:
    """Whether nothing listens on ``port`` of 127.0.0.1 (nor on every interface, which covers it).

    SO_REUSEADDR, like Go's and Django's listeners: a previous server's connections in TIME_WAIT do not
    block the port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block: one installer at a time."""
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
