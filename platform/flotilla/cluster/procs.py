"""Finding and stopping the processes of one local Ray cluster, and nothing else.

A cluster's processes are the process trees of its ``ray start --block`` pids
(Ray's job drivers start their own sessions, so process groups are not enough)
plus every live process whose environment carries the cluster's marker variable
(orphans reparented to init keep it). Processes that rewrite their title (Ray's
dashboard modules) lose the readable environment but stay in the tree.
Discovery goes through ``psutil`` (process table, environments, children), not ``/proc`` by hand.
"""

from __future__ import annotations

import contextlib
import os
import time

import psutil

from flotilla.settings import FLOTILLA_RAY_CLUSTER


def alive(pid: int) -> bool:
    """Running (a zombie counts as dead: it is only waiting to be reaped)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def descendants(roots: list[int]) -> set[int]:
    out: set[int] = set()
    for root in roots:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc = psutil.Process(root)
            out.add(root)
            out.update(child.pid for child in proc.children(recursive=True))
    return out


def marked_processes(cluster_id: str) -> set[int]:
    """Every live process whose environment carries this cluster's marker (nodes, workers, job drivers)."""
    found = set()
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if proc.environ().get(FLOTILLA_RAY_CLUSTER) == cluster_id and proc.status() != psutil.STATUS_ZOMBIE:
                found.add(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def reap(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def send(pids: set[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).send_signal(sig)


def wait_gone(pids: set[int], timeout: float) -> bool:
    """Reap and wait until none of ``pids`` runs; True when they all ended in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap(pids)
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return False
