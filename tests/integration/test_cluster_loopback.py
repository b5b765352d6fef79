"""flotilla's Ray listens on 127.0.0.1 only, and a driver or job joins the cluster its settings name (issue 22, item 8).

Two real local clusters run side by side, the second started last (what Ray's auto-discovery would pick). Drivers
run in subprocesses: this process keeps no Ray, so the sockets looked at are exactly those of the Ray under test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from tests.integration import helpers

from flotilla.cluster.local import LocalCluster
from flotilla.cluster.loopback import NOT_LOOPBACK
from flotilla.cluster.procs import descendants, marked_processes
from flotilla.hub.server import free_port
from flotilla.jobs.client import job_client
from flotilla.settings import FLOTILLA_HOME, Settings, child_env

pytestmark = pytest.mark.integration

LOOPBACK_IPS = {"127.0.0.1", "::ffff:127.0.0.1"}

# Connects as flotilla does (the cluster's GCS address, or none: a Ray of its own), runs one task on every node,
# prints what it saw and holds the connection, with its workers alive, until its stdin closes.
DRIVER = textwrap.dedent(
    """
    import json, os, sys
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    from flotilla.cluster import ensure_ray

    ensure_ray(sys.argv[1] if len(sys.argv) > 1 else None)

    @ray.remote(num_cpus=0)
    def marker():
        return os.environ.get("FLOTILLA_RAY_CLUSTER", "")

    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    on = [marker.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote() for n in nodes]
    seen = {"gcs": ray.get_runtime_context().gcs_address, "markers": ray.get(on), "pid": os.getpid()}
    print(json.dumps(seen), flush=True)
    sys.stdin.read()
    """
)


def listening(pids: set[int]) -> list[tuple[str, int, str]]:
    """(ip, port, process name) of every listening TCP socket of ``pids``."""
    out = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            try:
                name = psutil.Process(conn.pid).name()
            except psutil.Error:
                continue
            out.append((conn.laddr.ip, conn.laddr.port, name))
    return out


def beyond_loopback(pids: set[int]) -> list[tuple[str, int, str]]:
    allowed = {process for process, _ in NOT_LOOPBACK}
    return [s for s in listening(pids) if s[0] not in LOOPBACK_IPS and s[2] not in allowed]


def cluster_pids(cluster: LocalCluster) -> set[int]:
    st = cluster.state()
    assert st is not None
    return descendants([n["pid"] for n in st["nodes"]]) | marked_processes(st["cluster_id"])


class Driver:
    """A driver subprocess (``DRIVER``) with FLOTILLA_HOME set to ``home``; ``seen`` is what it printed."""

    def __init__(self, home: Path, *args: str) -> None:
        env = child_env(drop=("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"))
        env[FLOTILLA_HOME] = str(home)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", DRIVER, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"driver exited with {self.proc.wait(timeout=30)} before reporting"
        self.seen = json.loads(line)

    def pids(self) -> set[int]:
        return descendants([self.proc.pid])

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=120)


@pytest.fixture(scope="module")
def two_clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, LocalCluster]]:
    """Cluster A (head + one worker node), then cluster B (head only) on the same machine, each its own home."""
    cache = Settings.from_env().cache
    started = []
    try:
        for name, workers in (("a", 1), ("b", 0)):
            c = LocalCluster(Settings(home=tmp_path_factory.mktemp(f"home-{name}"), cache=cache))
            st = c.up(num_cpus=1, workers=workers, ray_port=free_port(), dashboard_port=free_port(), object_store_mb=128)
            started.append(c)
            assert st.running and st.healthy and st.nodes == workers + 1, st.describe()
        yield started[0], started[1]
    finally:
        for c in started:
            helpers.stop_cluster(c)


def test_every_socket_of_the_cluster_and_its_drivers_is_on_loopback(two_clusters):
    """GCS, raylets, object managers, workers (one per node, from a driver's tasks), agents, metrics, dashboard,
    Ray client server and the driver itself: nothing listens beyond 127.0.0.1 but :data:`NOT_LOOPBACK`."""
    a, b = two_clusters
    st = a.status()
    driver = Driver(a.settings.home, st.gcs_address)
    try:
        pids = cluster_pids(a) | driver.pids()
        sockets = listening(pids)
        names = {name for _, _, name in sockets}
        assert {"gcs_server", "raylet"} <= names and len({p for _, p, n in sockets if n == "raylet"}) >= 4, sockets
        assert len(driver.seen["markers"]) == 2  # a worker ran on each node while we looked
        assert beyond_loopback(pids) == []
        assert beyond_loopback(cluster_pids(b)) == []
    finally:
        driver.close()
    assert st.gcs_address.startswith("127.0.0.1:"), st.gcs_address  # what `cluster status` shows and drivers use


def test_a_driver_joins_the_cluster_its_settings_name_not_the_newest(two_clusters):
    """Given A's address (as ``flotilla train --address`` is), every task ran on A's nodes, though B started last."""
    a, b = two_clusters
    ids = (a.state() or {})["cluster_id"], (b.state() or {})["cluster_id"]
    driver = Driver(a.settings.home, a.status().gcs_address)
    driver.close()
    assert driver.seen["gcs"] == a.status().gcs_address
    assert driver.seen["markers"] == [ids[0], ids[0]]


def test_a_job_runs_on_the_cluster_its_settings_name_and_connects_by_its_address(two_clusters, monkeypatch):
    """A job sent with A's settings (no address: flotilla's local cluster) runs on A, and flotilla's connection
    inside it (``RAY_ADDRESS``, 127.0.0.1 kept) reaches A's GCS and runs its tasks there."""
    a = two_clusters[0]
    monkeypatch.setenv(FLOTILLA_HOME, str(a.settings.home))
    monkeypatch.delenv("FLOTILLA_RAY_ADDRESS", raising=False)
    entry = (
        "import os, ray; from flotilla.cluster import ensure_ray; from flotilla.settings import job_ray_address; "
        "ensure_ray(job_ray_address()); "
        "f = ray.remote(num_cpus=0)(lambda: os.environ['FLOTILLA_RAY_CLUSTER']); "
        "print('RAN-ON', ray.get_runtime_context().gcs_address, ray.get(f.remote()))"
    )
    client = job_client(settings=Settings.from_env())
    job = client.submit_job(entrypoint=f'python -c "{entry}"')  # the node's environment: its python, its flotilla
    deadline = time.monotonic() + 180
    while str(client.get_job_status(job)) not in {"SUCCEEDED", "FAILED", "STOPPED"} and time.monotonic() < deadline:
        time.sleep(1)
    logs = client.get_job_logs(job)
    assert str(client.get_job_status(job)) == "SUCCEEDED", logs[-3000:]
    assert f"RAN-ON {a.status().gcs_address} {(a.state() or {})['cluster_id']}" in logs, logs[-3000:]


def test_an_in_process_ray_is_on_loopback_and_joins_neither_cluster(two_clusters):
    """``ensure_ray()`` without an address starts a Ray of its own, on 127.0.0.1, with two clusters on the machine."""
    a, b = two_clusters
    driver = Driver(a.settings.home)
    try:
        sockets = listening(driver.pids())
        assert {"gcs_server", "raylet"} <= {name for _, _, name in sockets}, sockets
        assert beyond_loopback(driver.pids()) == []
        assert driver.seen["gcs"].startswith("127.0.0.1:")
        assert driver.seen["gcs"] not in {a.status().gcs_address, b.status().gcs_address}
        assert driver.seen["markers"] == [""]
    finally:
        driver.close()
