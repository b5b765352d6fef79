"""What flotilla's local services share on the host: private files, file locks, port probes, their processes.

The lakeFS hub (``flotilla.hub``) and Label Studio (``flotilla.labelstudio``) sit side by side in one
layer and may not import each other; both write credentials that must never be world-readable, both
install binaries that two processes must not fetch at once, both ask whether their port is taken, and
both find and stop the server process their pid file names. One copy of each, here, below both.
Processes are found and stopped through ``psutil`` (portable, and it reaps our own children), not
``/proc`` by hand.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 from the first byte (no window where it is world-readable).

    Written beside the target and renamed over it, so a reader never sees half a credentials file. The
    temporary name is the writer's own (process and thread): two writers of one file at once (the models
    of a separate-strategy trial claiming their shared branch) each rename a whole file, the last one wins.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
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


def service_process(pid: int, name: str) -> psutil.Process | None:
    """The live process ``pid`` when its command line mentions ``name``; None when it is gone.

    A zombie counts as gone (it only waits to be reaped), and so does a recycled pid now running
    something else: a stale pid file must never get another program signalled.
    """
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            proc.wait(timeout=0)  # ours: collect it; another's: psutil raises, it stays their zombie
            return None
        # the command line is empty for a moment after exec: the process name (comm) covers that window
        return proc if name in proc.name() or any(name in part for part in proc.cmdline()) else None
    except psutil.TimeoutExpired:
        return None
    except psutil.AccessDenied:  # someone else's process under that pid: not our server
        return None
    except psutil.NoSuchProcess:
        return None


def stop_process(proc: psutil.Process, timeout: float, *, tree: bool = False) -> str:
    """SIGTERM ``proc`` (and, with ``tree``, every process it started), SIGKILL what is left after ``timeout``.

    Returns how it ended, for the command's message. Our own children are reaped on the way.
    """
    procs = [proc]
    if tree:
        try:
            procs += proc.children(recursive=True)
        except psutil.NoSuchProcess:
            return "(it had already exited)"
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            if p is proc:
                return "(it had already exited)"
    _, alive = psutil.wait_procs([proc], timeout=timeout)
    if not alive:
        stragglers = [p for p in procs[1:] if _running(p)]
        for p in stragglers:  # what it forked and left behind
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(stragglers, timeout=5.0)
        return "gracefully (SIGTERM)"
    started = time.monotonic()
    for p in procs:
        if _running(p):
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
    psutil.wait_procs(procs, timeout=max(0.0, 5.0 - (time.monotonic() - started)))
    return f"forcibly (SIGKILL after {timeout:.0f}s without exiting on SIGTERM)"


def _running(proc: psutil.Process) -> bool:
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
