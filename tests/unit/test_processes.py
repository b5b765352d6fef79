"""Finding and stopping a service's process (flotilla.hostio) and a Ray cluster's marked processes.

Real processes (``sleep``, a Python that ignores SIGTERM), no mocks: what is checked is exactly the
behaviour a stale pid file or a stubborn server meets.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil

from flotilla.cluster.procs import alive, descendants, marked_processes
from flotilla.hostio import service_process, stop_process
from flotilla.settings import FLOTILLA_RAY_CLUSTER

STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
PARENT = (
    "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
    " print('ready', flush=True); time.sleep(60)"
)


def _start(code: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_a_pid_running_something_else_is_not_our_service() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        assert service_process(proc.pid, "sleep") is not None
        assert service_process(proc.pid, "lakefs") is None  # a recycled pid must never be signalled
    finally:
        proc.kill()
        proc.wait()
    assert service_process(proc.pid, "sleep") is None


def test_a_zombie_child_counts_as_gone_and_is_reaped() -> None:
    proc = subprocess.Popen(["sleep", "0"])
    time.sleep(0.3)  # exited, not yet waited for: a zombie
    assert service_process(proc.pid, "sleep") is None
    assert not psutil.pid_exists(proc.pid) or psutil.Process(proc.pid).status() != psutil.STATUS_ZOMBIE


def test_stop_process_terminates_gracefully() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    found = service_process(proc.pid, "sleep")
    assert found is not None
    assert stop_process(found, timeout=5) == "gracefully (SIGTERM)"
    assert service_process(proc.pid, "sleep") is None


def test_stop_process_kills_what_ignores_sigterm() -> None:
    proc = _start(STUBBORN)
    found = service_process(proc.pid, "signal.SIG_IGN")
    assert found is not None
    how = stop_process(found, timeout=0.5)
    assert how.startswith("forcibly (SIGKILL after")
    assert service_process(proc.pid, "signal.SIG_IGN") is None


def test_stop_process_with_tree_takes_the_children_too() -> None:
    proc = _start(PARENT)
    found = service_process(proc.pid, "subprocess.Popen")
    assert found is not None
    children = [c.pid for c in found.children()]
    assert len(children) == 1
    stop_process(found, timeout=5, tree=True)
    assert not alive(children[0])


def test_marked_processes_finds_by_environment_and_descendants_by_tree() -> None:
    marker = f"test-{os.getpid()}-{time.monotonic_ns()}"
    proc = _start(PARENT, env={**os.environ, FLOTILLA_RAY_CLUSTER: marker})
    try:
        marked = marked_processes(marker)
        tree = descendants([proc.pid])
        assert proc.pid in marked and len(marked) == 2  # the child inherits the marker
        assert tree == marked
        assert marked_processes(marker + "-other") == set()
    finally:
        for pid in descendants([proc.pid]):
            psutil.Process(pid).kill()
        proc.wait()
