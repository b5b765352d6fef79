"""The cluster.yaml path under Ray's own autoscaler: a train job grows the cluster by a worker and it shrinks again.

The cluster is ``cluster.yaml``'s node types launched by Ray's fake multi-node provider (``tests.cluster_config``
derives the variant from the file, so the two cannot drift): a head that advertises no CPU for work, and worker
types the autoscaler starts as local raylets when work asks for them. The head is started the way
``cluster.yaml``'s ``head_start_ray_commands`` start it (token auth, dashboard on 127.0.0.1, the hub's key pair
as ``LAKECTL_*`` in its environment, ``--autoscaling-config``), the job is submitted the way a user submits to a
remote cluster (its dashboard address, the token through ``RAY_AUTH_TOKEN_PATH``). Nothing is mocked; what is not
exercised is the cloud: no instance is launched, no setup command runs, no IAM policy is checked.

Ray's ``AutoscalingCluster`` helper is not used: it runs ``ray stop --force``, which stops every Ray on the
machine. This module starts one ``ray start --block`` in its own session and stops only the processes that
carry its marker.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import pytest
import yaml
from tests import cluster_config

from flotilla.cluster.files import auth_headers, ensure_token
from flotilla.cluster.health import http_get
from flotilla.cluster.procs import alive, send, wait_gone
from flotilla.data.api import generate
from flotilla.data.validate import Thresholds
from flotilla.hub.server import free_port
from flotilla.jobs.submission import submit
from flotilla.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.autoscale, pytest.mark.timeout(900)]

MARK = "FLOTILLA_TEST_AUTOSCALE"  # every process of this module's cluster carries it (the fake nodes too)
WORKER_TYPE = "cpu_worker"  # where a CPU train job must land: the cheapest type that holds it, not the GPU one


def _marked(marker: str) -> set[int]:
    found = set()
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARK) == marker and proc.status() != psutil.STATUS_ZOMBIE:
                found.add(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


class FakeCluster:
    """One autoscaling head on this machine, its dashboard URL, token and the variant it runs."""

    def __init__(self, url: str, token: Path, variant: dict, head_pid: int, marker: str, temp_dir: Path) -> None:
        self.url, self.token, self.variant, self.head_pid, self.marker = url, token, variant, head_pid, marker
        self.temp_dir = temp_dir

    def autoscaler_log(self) -> str:
        """What Ray's autoscaler (the monitor) said: its own word for which nodes it launched and removed, and why."""
        logs = sorted(self.temp_dir.glob("session_*/logs/monitor.log"))
        return logs[-1].read_text(errors="replace") if logs else ""

    def nodes(self) -> list[dict]:
        data = http_get(f"{self.url}/api/v0/nodes?limit=1000&detail=true", auth_headers(self.token), timeout=5)
        try:
            return list(data["data"]["result"]["result"])
        except (TypeError, KeyError):
            return []

    def alive_workers(self) -> list[dict]:
        return [n for n in self.nodes() if n.get("state") == "ALIVE" and not n.get("is_head_node")]

    def stop(self) -> None:
        send({self.head_pid}, signal.SIGTERM)  # `ray start --block` stops its head's daemons, the monitor among them
        wait_gone({self.head_pid}, 20)
        left = _marked(self.marker)  # the fake nodes the monitor started, if it had no time to stop them
        send(left, signal.SIGTERM)
        if not wait_gone(left, 10):
            send({p for p in left if alive(p)}, signal.SIGKILL)
            wait_gone(left, 5)


@pytest.fixture(scope="module")
def autoscaling(hub, tmp_path_factory):
    home = tmp_path_factory.mktemp("autoscale-home")
    token = ensure_token(Settings(home=home, cache=Settings.from_env().cache))
    tmp = Path(tempfile.mkdtemp(prefix="fl-as-", dir="/tmp"))  # Ray's socket paths have a length limit
    gcs_port, dashboard_port = free_port(), free_port()
    variant = cluster_config.fake_variant(cluster_config.load(), gcs_address=f"127.0.0.1:{gcs_port}")
    config = tmp / "autoscaling.yaml"
    config.write_text(yaml.safe_dump(variant))
    head = variant["available_node_types"][variant["head_node_type"]]["resources"]
    marker = uuid.uuid4().hex
    creds = hub.credentials
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "FLOTILLA_", "LAKECTL_"))}
    env |= {
        # what cluster.yaml's head start command sets: token auth, the hub's key pair for every Ray process
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "LAKECTL_SERVER_ENDPOINT_URL": creds.endpoint,
        "LAKECTL_CREDENTIALS_ACCESS_KEY_ID": creds.access_key_id,
        "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY": creds.secret_access_key,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        # what the fake provider needs, and an autoscaler that looks every second instead of every five
        "RAY_FAKE_CLUSTER": "1",
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",
        # this machine: its own state API for Ray Train's cleaner (another Ray may run beside it), a home of its own
        "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{dashboard_port}",
        "RAY_TMPDIR": str(tmp),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        "FLOTILLA_HOME": str(home),
        MARK: marker,
    }
    cmd = [
        str(Path(sys.executable).parent / "ray"),
        "start",
        "--head",
        "--block",
        "--disable-usage-stats",
        f"--port={gcs_port}",
        f"--num-cpus={head.get('CPU', 0)}",
        f"--num-gpus={head.get('GPU', 0)}",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard_port}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--ray-client-server-port={free_port()}",
        f"--object-store-memory={128 * 1024 * 1024}",
        f"--temp-dir={tmp / 'ray'}",
        f"--autoscaling-config={config}",
    ]
    log = tmp / "head.log"
    t0 = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    cluster = FakeCluster(f"http://127.0.0.1:{dashboard_port}", token, variant, proc.pid, marker, tmp / "ray")
    try:
        deadline = time.monotonic() + 120
        while not [n for n in cluster.nodes() if n.get("state") == "ALIVE"]:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the autoscaling head did not come up:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        print(f"\nautoscaling head up: {time.monotonic() - t0:.1f}s")
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def data_repo(hub):
    name = f"t-autoscale-{uuid.uuid4().hex[:8]}"
    hub.ensure_repo(name)
    generate(hub, name, "faces", 300, seed=11, thresholds=Thresholds(min_group_count=2))
    yield hub.repo(name)
    hub.delete_repo(name)


def test_a_train_job_grows_the_cluster_by_a_worker_and_it_shrinks_back(autoscaling, data_repo, hub, monkeypatch):
    """Before: the head alone, with no CPU for work. The job's workers wait for a node the autoscaler adds; the
    model trains from the hub's data and lands on the hub; once idle the node is removed and the head stays."""
    assert autoscaling.alive_workers() == []
    head = [n for n in autoscaling.nodes() if n.get("is_head_node")]
    assert len(head) == 1 and head[0]["resources_total"].get("CPU", 0) == 0, head
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(autoscaling.token))  # the user's copy of the cluster's token
    family = {
        "name": "autoscaled",
        "data": {"repo": data_repo.name, "dataset": "faces", "ref": "main", "image_size": 32},
        "epochs": 1,
        "batch_size": 32,
        "model": {"width": 8},
        "tracking": {"wandb": False},
        "scaling": {"workers": 2, "cpus_per_worker": 1},
    }
    t0 = time.monotonic()
    handle = submit({"kind": "train", "name": "autoscaled", "family": family}, autoscaling.url, hub=hub)
    seen: dict[str, dict] = {}
    grown_at = None
    while (status := handle.status()) not in ("SUCCEEDED", "FAILED", "STOPPED"):
        for n in autoscaling.alive_workers():
            seen.setdefault(n["node_id"], n)
        if seen and grown_at is None:
            grown_at = time.monotonic() - t0
        assert time.monotonic() - t0 < 600, f"the job did not end in 10 min:\n{handle.logs()[-3000:]}"
        time.sleep(1)
    ran = time.monotonic() - t0
    logs = handle.logs()
    assert status == "SUCCEEDED", logs[-4000:]
    assert "it waits unless the cluster scales up" in " ".join(logs.split()), "the job did not know it could wait"
    # one node of the worker type that holds the job, with that type's resources; none of the GPU type
    want = autoscaling.variant["available_node_types"][WORKER_TYPE]["resources"]
    assert len(seen) == 1, seen
    (node,) = seen.values()
    assert node["resources_total"].get("CPU") == want["CPU"] and not node["resources_total"].get("GPU"), node
    # trained from the hub's data, and on the hub
    result = handle.result()
    assert result["data_commit"] == data_repo.resolve("main")
    (model,) = result["models"]
    assert model["metrics"] and data_repo.get(model["commit"], f"models/{result['run_id']}/{model['name']}/card.json")
    # idle, the node goes away (idle_timeout_minutes of the variant) and the head stays
    t1 = time.monotonic()
    while autoscaling.alive_workers():
        assert time.monotonic() - t1 < 180, f"the idle node was not removed: {autoscaling.alive_workers()}"
        time.sleep(1)
    gone = time.monotonic() - t1
    states = {n["node_id"]: n["state"] for n in autoscaling.nodes()}
    assert states[node["node_id"]] == "DEAD" and list(states.values()).count("ALIVE") == 1, states
    said = autoscaling.autoscaler_log()
    assert f"Launching 1 nodes, type {WORKER_TYPE}." in said, said[-3000:]
    assert "gpu_worker." not in said and said.count("Launching ") == 1, said[-3000:]
    assert "(idle)" in [line.rsplit(" ", 1)[-1] for line in said.splitlines() if "Terminating the node" in line], said[-3000:]
    print(f"\nnode added after {grown_at:.1f}s; job SUCCEEDED after {ran:.1f}s; idle node removed {gone:.1f}s later")
