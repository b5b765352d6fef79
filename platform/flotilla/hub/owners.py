"""Who is writing a branch: an owner record per live branch, so a killed writer's branch is seen as orphaned.

lakeFS keeps no owner and no creation time for a branch, and staged (uncommitted) objects look
the same whether a process is still writing them or was SIGKILLed an hour ago. So every branch
:class:`~flotilla.hub.experiment.Experiment` creates is *claimed* first: a small JSON record
``FLOTILLA_HOME/branches/<repo>/<branch>.json`` with the host, the pid and the process's start
time (the pair pid + start time names one process for good: a recycled pid has another start
time). The record goes when the branch's work ends (committed, merged, deleted); one whose
process is gone, or that an aborted experiment could not delete (the hub was down), marks the
branch as **orphaned**: nothing will ever commit what is staged there.

The record is local, not on the hub: a process can only be checked on its own host, and the
local hub lives under the same ``FLOTILLA_HOME``. A record written on another host is never
judged (its owner may well be alive), and a branch without a record is never called orphaned.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from flotilla.hostio import write_private


@dataclass(frozen=True)
class Owner:
    """The process writing a branch; ``abandoned``: it gave the branch up without deleting it (the hub was down)."""

    host: str
    pid: int
    started: float  # the process's start time (epoch seconds): with pid, one process for good
    since: float  # when it claimed the branch
    keep: bool = False  # its retention keeps the branch on failure (a training run's checkpoints): never pruned
    abandoned: bool = False

    @classmethod
    def me(cls, *, keep: bool = False) -> Owner:
        return cls(socket.gethostname(), os.getpid(), _start_time(os.getpid()) or 0.0, time.time(), keep)

    def is_mine(self) -> bool:
        return self.host == socket.gethostname() and self.pid == os.getpid()

    def gone(self) -> bool:
        """Whether this owner will never write again: abandoned, or its process has ended (on this host).

        A record from another host is not judged (False): its process cannot be looked at from here.
        """
        if self.abandoned:
            return True
        if self.host != socket.gethostname():
            return False
        started = _start_time(self.pid)
        return started is None or abs(started - self.started) > 1.0

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.since))}"


def _start_time(pid: int) -> float | None:
    """When process ``pid`` started; None when there is none (or only a zombie waiting to be reaped)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(proc.create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def record_path(home: Path, repo: str, branch: str) -> Path:
    return home / "branches" / repo / f"{branch}.json"


def claim(home: Path, repo: str, branch: str, *, keep: bool = False) -> Owner:
    """Record this process as the owner of ``branch`` (before it is created: a kill in between leaves a record, not a
    branch nobody claimed); ``keep``: the branch is to be kept if its work fails."""
    owner = Owner.me(keep=keep)
    write(home, repo, branch, owner)
    return owner


def write(home: Path, repo: str, branch: str, owner: Owner) -> None:
    """Put ``owner``'s record in place (e.g. back, after a claim whose branch turned out to exist already)."""
    write_private(record_path(home, repo, branch), json.dumps(asdict(owner)))


def owner_of(home: Path, repo: str, branch: str) -> Owner | None:
    """The recorded owner of ``branch``; None without a (readable) record."""
    try:
        return Owner(**json.loads(record_path(home, repo, branch).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def release(home: Path, repo: str, branch: str) -> None:
    """The branch's work ended (committed, merged or deleted): drop its record."""
    with contextlib.suppress(FileNotFoundError):
        record_path(home, repo, branch).unlink()


def abandon(home: Path, repo: str, branch: str) -> None:
    """This process gives the branch up without having deleted it: mark its record so the branch reads as orphaned."""
    write(home, repo, branch, dataclasses.replace(owner_of(home, repo, branch) or Owner.me(), abandoned=True))


def recorded_branches(home: Path, repo: str) -> list[str]:
    """The branches of ``repo`` that have an owner record here."""
    folder = home / "branches" / repo
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
