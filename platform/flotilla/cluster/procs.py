"""Finding and stopping the processes of one local Ray cluster, and nothing else.

A cluster's processes are the process trees of its ``ray start --block`` pids
(Ray's job drivers start their own sessions, so process groups are not enough)
plus every live process whose environment carries the cluster's marker variable
(orphans reparented to init keep it). Processes that rewrite their title (Ray's
dashboard modules) lose the readable environment but stay in the tree.
"""

from __future__ import annotations

import contextlib
import os
import time

from flotilla.settings import FLOTILLA_RAY_CLUSTER


def _stat(pid: int) -> tuple[int, str] | None:
    """(ppid, state) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            rest = fh.read().rsplit(")", 1)[1].split()
        return int(rest[1]), rest[0]
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


def alive(pid: int) -> bool:
    """Running (a zombie counts as dead: it is only waiting to be reaped)."""
    st = _stat(pid)
    return st is not None and st[1] not in ("Z", "X")


def descendants(roots: list[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (st := _stat(int(name))):
            children.setdefault(st[0], []).append(int(name))
    out, stack = set(), [r for r in roots if _stat(r)]
    while stack:
        pid = stack.pop()
        if pid not in out:
            out.add(pid)
            stack.extend(children.get(pid, []))
    return out


def marked_processes(cluster_id: str) -> set[int]:
    """Every live process whose environment carries this cluster's marker (nodes, workers, job drivers)."""
    needle = f"{FLOTILLA_RAY_CLUSTER}={cluster_id}\0".encode()
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                if needle in fh.read() and alive(int(name)):
                    found.add(int(name))
        except OSError:
            continue
    return found


def reap(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def send(pids: set[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def wait_gone(pids: set[int], timeout: float) -> bool:
    """Reap and wait until none of ``pids`` runs; True when they all ended in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap(pids)
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return False
