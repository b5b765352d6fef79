"""The local Ray cluster flotilla runs itself (``flotilla cluster up | down | status``).

State lives under ``<FLOTILLA_HOME>/ray``::

    auth_token      Ray's token-auth secret (0600), generated once, reused by every node and client
    cluster.json    pids, ports, addresses, temp dirs of the running cluster (0600)
    logs/           output of each ``ray start`` (head.log, worker-1.log, ...)
    tmp/            RAY_TMPDIR: Ray's session dirs, sockets and logs (see ``ray_tmpdir``)

Each node is one ``ray start --block`` subprocess in its own session, so the
processes of this cluster are exactly the process trees of the pids we record,
and every one of them inherits ``FLOTILLA_RAY_CLUSTER=<id>`` in its environment.
``down`` stops those and nothing else (never ``ray stop``, which kills every Ray
of the user). Token authentication stays on (Ray 2.60's default): the nodes read
the token through ``RAY_AUTH_TOKEN_PATH``; flotilla's clients send it as a Bearer
header. The token is never printed, logged or put on a command line.

Every node runs on 127.0.0.1 (:mod:`flotilla.cluster.loopback`): its GCS, raylet, workers,
agents, metrics and dashboard (with the Jobs API) listen on loopback only, so nothing of it
is reachable from another machine, token or not.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flotilla.cluster.files import ClusterError, auth_headers, ensure_token, private_dir, ray_dir, ray_tmpdir, token_path
from flotilla.cluster.health import ClusterStatus, alive_nodes, http_get, normalise_address
from flotilla.cluster.loopback import LOOPBACK, SINGLE_HOST_ENV
from flotilla.cluster.procs import alive, descendants, marked_processes, reap, send, wait_gone
from flotilla.errors import ConfigError
from flotilla.hostio import port_free, write_private
from flotilla.hub.server import free_port
from flotilla.settings import (
    DEFAULT_DASHBOARD_PORT,
    DEFAULT_RAY_PORT,
    FLOTILLA_DASHBOARD_PORT,
    FLOTILLA_RAY_CLUSTER,
    FLOTILLA_RAY_PORT,
    RAY_ADDRESS,
    RAY_API_SERVER_ADDRESS,
    RAY_AUTH_MODE,
    RAY_AUTH_TOKEN,
    RAY_AUTH_TOKEN_PATH,
    RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S,
    RAY_TMPDIR,
    RAY_USAGE_STATS_ENABLED,
    Settings,
    child_env,
    local_dashboard_port,
    local_ray_port,
    ray_address,
)

RAY_WORKER_PORTS = (10002, 19999)  # `ray start`'s default --min/--max-worker-port: no other port may lie there
Reporter = Callable[[str], None]


def _noop(_: str) -> None:
    pass


def ray_start() -> list[str]:
    """``ray start`` of this interpreter's environment (the venv, not whatever is on PATH), on 127.0.0.1."""
    if not (Path(sys.executable).parent / "ray").exists():
        raise ConfigError(f"no 'ray' next to {sys.executable}", hint="install flotilla's dependencies: make venv")
    return [sys.executable, "-m", "flotilla.cluster.loopback", "start", "--node-ip-address", LOOPBACK]


class LocalCluster:
    """Lifecycle of the one local Ray cluster that belongs to one FLOTILLA_HOME."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.dir = ray_dir(self.settings)
        self.state_path = self.dir / "cluster.json"
        self.log_dir = self.dir / "logs"
        self.tmpdir = ray_tmpdir(self.settings)
        self.token_path = token_path(self.settings)

    # ---- state ---------------------------------------------------------------------------
    def state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state_path.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def headers(self) -> dict[str, str]:
        return auth_headers(self.token_path)

    def status(self) -> ClusterStatus:
        st = self.state()
        if st is None:
            return ClusterStatus(False, False, f"http://127.0.0.1:{local_dashboard_port()}", note=f"(state in {self.dir})")
        roots = [n["pid"] for n in st["nodes"]]
        marked = marked_processes(st["cluster_id"]) if any(alive(p) for p in roots) else set()
        live = [p for p in roots if p in marked]  # alive, and not a recycled pid
        if not live:
            return ClusterStatus(
                False,
                False,
                st["dashboard_url"],
                st["gcs_address"],
                pids=roots,
                note=f"stale state file: processes {' '.join(map(str, roots))} are gone (crashed or killed). "
                "Last log lines:\n" + self.tail("head", 10),
            )
        nodes = alive_nodes(st["dashboard_url"], self.headers())
        note = "" if len(live) == len(roots) else f"only {len(live)} of {len(roots)} node processes are alive"
        client = f"ray://127.0.0.1:{st['client_port']}" if st.get("client_port") else ""
        return ClusterStatus(
            True, nodes is not None, st["dashboard_url"], st["gcs_address"], nodes or 0, live, note=note, client_address=client
        )

    def tail(self, node: str = "head", lines: int = 30) -> str:
        try:
            return "\n".join((self.log_dir / f"{node}.log").read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log yet)"

    # ---- lifecycle -----------------------------------------------------------------------
    def up(
        self,
        *,
        num_cpus: int | None = None,
        workers: int = 0,
        worker_cpus: int = 1,
        ray_port: int | None = None,
        dashboard_port: int | None = None,
        object_store_mb: int | None = None,
        timeout: float = 90.0,
        report: Reporter = _noop,
    ) -> ClusterStatus:
        """Start head (+ ``workers`` local worker nodes) unless running; wait until all nodes are alive."""
        current = self.status()
        for _ in range(20):  # running but not answering yet: maybe still starting (another `up`)
            if not current.running or current.healthy:
                break
            time.sleep(0.5)
            current = self.status()
        if current.running:
            if not current.healthy:  # never kill a cluster (and its jobs) because its dashboard was slow to answer
                raise ClusterError(
                    f"the local Ray cluster is running (processes {' '.join(map(str, current.pids))}) but its dashboard "
                    f"at {current.address} did not answer for 10 s",
                    hint="it may be busy or still starting: try again shortly; to start afresh, 'flotilla cluster down' "
                    "(this stops its jobs) then 'flotilla cluster up'",
                )
            running_workers = len(current.pids) - 1  # live node processes, the head first
            if running_workers != workers:
                report(
                    f"already running with {running_workers} worker node(s), not {workers}: "
                    "'flotilla cluster down' first to change it"
                )
            return current
        elif self.state() is not None:
            report("cleaning up a stale cluster state")
            self.down()
        ray_port = ray_port or local_ray_port()
        dashboard_port = dashboard_port or local_dashboard_port()
        for name, port, env_var in (("GCS", ray_port, FLOTILLA_RAY_PORT), ("dashboard", dashboard_port, FLOTILLA_DASHBOARD_PORT)):
            if RAY_WORKER_PORTS[0] <= port <= RAY_WORKER_PORTS[1]:  # Ray refuses it with a traceback in head.log
                raise ClusterError(
                    f"{name} port {port} lies in the range Ray keeps for its worker processes "
                    f"({RAY_WORKER_PORTS[0]}-{RAY_WORKER_PORTS[1]})",
                    hint=f"set {env_var} to a port outside it "
                    f"(the default is {DEFAULT_RAY_PORT if name == 'GCS' else DEFAULT_DASHBOARD_PORT})",
                )
            if not port_free(port):
                raise ClusterError(
                    f"{name} port {port} is already in use by another program", hint=f"set {env_var} to a free port"
                )
        for d in (self.dir, self.log_dir, self.tmpdir):
            private_dir(d, shared_parent=d.parent == Path("/tmp"))
        token = ensure_token(self.settings)
        cluster_id = secrets.token_hex(6)
        env = self._env(token, cluster_id, dashboard_port)
        common = ["--block", "--disable-usage-stats"]
        if object_store_mb:
            common += ["--object-store-memory", str(object_store_mb * 1024 * 1024)]
        head_tmp = self.tmpdir / "ray"
        client_port = free_port()
        head_cmd = [
            *ray_start(),
            "--head",
            *common,
            "--port",
            str(ray_port),
            "--include-dashboard",
            "true",
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(dashboard_port),
            "--dashboard-agent-listen-port",
            str(free_port()),
            "--ray-client-server-port",
            str(client_port),
            "--temp-dir",
            str(head_tmp),
        ]
        if num_cpus is not None:
            head_cmd += ["--num-cpus", str(num_cpus)]
        (head_tmp / "ray_current_cluster").unlink(missing_ok=True)
        state: dict[str, Any] = {
            "cluster_id": cluster_id,
            "python": sys.executable,
            "ray_port": ray_port,
            "client_port": client_port,
            "dashboard_port": dashboard_port,
            "dashboard_url": f"http://127.0.0.1:{dashboard_port}",
            "gcs_address": "",
            "ray_tmpdir": str(self.tmpdir),
            "token_path": str(token),
            "started_at": time.time(),
            "nodes": [],
        }
        t0 = time.monotonic()
        report(f"starting Ray head (dashboard {state['dashboard_url']})")
        state["nodes"].append(self._spawn("head", head_cmd, env, head_tmp))
        self._save(state)
        try:
            state["gcs_address"] = self._wait_head(state, head_tmp, timeout)
            self._save(state)
            for i in range(1, workers + 1):
                report(f"starting worker node {i}/{workers}")
                wtmp = self.tmpdir / f"w{i}"
                cmd = [
                    *ray_start(),
                    "--address",
                    state["gcs_address"],
                    *common,
                    "--num-cpus",
                    str(worker_cpus),
                    "--dashboard-agent-listen-port",
                    str(free_port()),
                    "--temp-dir",
                    str(wtmp),
                ]
                state["nodes"].append(self._spawn(f"worker-{i}", cmd, env, wtmp))
                self._save(state)
            report(f"waiting for {workers + 1} node(s) to register")
            self._wait_nodes(state, workers + 1, t0 + timeout)
        except BaseException:
            self.down()
            raise
        return self.status()

    def _env(self, token: Path, cluster_id: str, dashboard_port: int) -> dict[str, str]:
        env = child_env(drop=(RAY_ADDRESS, RAY_AUTH_TOKEN, RAY_API_SERVER_ADDRESS))
        env.update(
            {
                # every driver and worker of this cluster finds ITS state API here: Ray Train's placement-group
                # cleaner otherwise scans the machine and dies with "Found multiple active Ray instances"
                # when another Ray runs beside it (a test suite, a notebook's ray.init())
                RAY_API_SERVER_ADDRESS: f"http://127.0.0.1:{dashboard_port}",
                RAY_TMPDIR: str(self.tmpdir),
                RAY_AUTH_MODE: "token",
                RAY_AUTH_TOKEN_PATH: str(token),
                RAY_USAGE_STATS_ENABLED: "0",
                **SINGLE_HOST_ENV,  # 127.0.0.1 stays 127.0.0.1 in every process: nodes, workers, job drivers
                FLOTILLA_RAY_CLUSTER: cluster_id,
                # Ray 2.60 drains a node for up to 30 s on SIGTERM (for Serve on Kubernetes); `down` means now
                RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S: "0",
                # jobs run `python`: make it this venv's interpreter on every node of the local cluster
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            }
        )
        return env

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str], temp_dir: Path) -> dict[str, Any]:
        temp_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.dir,
                start_new_session=True,  # outlives the CLI; its pgid = its pid, so it can be signalled as a group
            )
        return {"name": name, "pid": proc.pid, "temp_dir": str(temp_dir), "log": str(log_path)}

    def _save(self, state: dict[str, Any]) -> None:
        write_private(self.state_path, json.dumps(state, indent=2))

    def _wait_head(self, state: dict[str, Any], head_tmp: Path, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        pid = state["nodes"][0]["pid"]
        addr_file = head_tmp / "ray_current_cluster"
        while time.monotonic() < deadline:
            reap({pid})
            if not alive(pid):
                raise ClusterError(
                    f"the Ray head exited during start-up. Last lines of {self.log_dir / 'head.log'}:\n{self.tail('head', 20)}",
                    hint="fix what the log says (a port clash, too little /dev/shm), then 'flotilla cluster up' again",
                )
            if addr_file.exists() and http_get(f"{state['dashboard_url']}/api/version", self.headers()):
                return addr_file.read_text().strip()
            time.sleep(0.3)
        raise ClusterError(
            f"the Ray head did not answer within {timeout:.0f}s:\n{self.tail('head', 20)}", hint="try a longer --timeout"
        )

    def _wait_nodes(self, state: dict[str, Any], want: int, deadline: float) -> None:
        n = 0
        while time.monotonic() < deadline:
            for node in state["nodes"]:
                reap({node["pid"]})
                if not alive(node["pid"]):
                    raise ClusterError(
                        f"Ray node {node['name']} exited during start-up:\n{self.tail(node['name'], 20)}",
                        hint="see the log above; 'flotilla cluster down' cleans up what is left",
                    )
            n = alive_nodes(state["dashboard_url"], self.headers()) or 0
            if n >= want:
                return
            time.sleep(0.3)
        raise ClusterError(f"only {n} of {want} Ray nodes registered in time", hint="try a longer --timeout or fewer --workers")

    def down(self, timeout: float = 15.0) -> str:
        """Stop this cluster's processes only: SIGTERM to each node's ``ray start``, SIGKILL what is left after ``timeout``."""
        st = self.state()
        if st is None:
            return f"local Ray cluster was not running (no state in {self.dir})"
        recorded = [n["pid"] for n in st["nodes"]]
        marked = marked_processes(st["cluster_id"])
        roots = [p for p in recorded if p in marked]  # a recycled pid of a long-dead node is not ours
        procs = descendants(roots) | marked
        if not procs:
            self._forget(st)
            return f"local Ray cluster was not running (removed stale state for processes {' '.join(map(str, recorded))})"
        # each `ray start --block` stops its node's daemons and workers on SIGTERM (no drain: see _env)
        send(set(roots) or procs, signal.SIGTERM)  # no live node root: stray processes directly
        how = "gracefully (SIGTERM)"
        if not wait_gone(procs, timeout):
            left = {p for p in procs | marked_processes(st["cluster_id"]) if alive(p)}
            send(left, signal.SIGTERM)
            if not wait_gone(left, 3.0):
                send({p for p in left if alive(p)}, signal.SIGKILL)
                wait_gone(left, 5.0)
            how = f"({len(left)} process(es) still running after {timeout:.0f}s needed a direct SIGTERM/SIGKILL)"
        stragglers = marked_processes(st["cluster_id"])  # e.g. a job driver started during shutdown
        send(stragglers, signal.SIGKILL)
        wait_gone(stragglers, 5.0)
        self._forget(st)
        return f"local Ray cluster ({len(recorded)} node(s)) stopped {how}"

    def _forget(self, st: dict[str, Any]) -> None:
        for node in st["nodes"]:
            Path(node["temp_dir"], "ray_current_cluster").unlink(missing_ok=True)
        (Path(st["ray_tmpdir"]) / "ray" / "ray_current_cluster").unlink(missing_ok=True)
        self.state_path.unlink(missing_ok=True)


def ray_cli_env(cluster: LocalCluster) -> dict[str, str]:
    """What Ray's own CLI needs to reach this cluster: its addresses, token auth on, the token file's path.

    ``RAY_ADDRESS`` serves both ``ray job`` (the dashboard URL) and ``ray status`` reads
    ``RAY_ADDRESS`` as the GCS address; ``ray job`` prefers ``RAY_API_SERVER_ADDRESS`` when it is
    set, so both are given. A cluster that is not running is an error, not a half environment.
    """
    st = cluster.status()
    if not st.running:
        raise ClusterError(f"the local Ray cluster is not running. {st.note}".strip(), hint="start it with 'flotilla cluster up'")
    return {
        RAY_ADDRESS: st.gcs_address,
        RAY_API_SERVER_ADDRESS: st.address,
        RAY_AUTH_MODE: "token",
        RAY_AUTH_TOKEN_PATH: str(cluster.token_path),
        **SINGLE_HOST_ENV,  # else Ray's CLI turns the GCS's 127.0.0.1 into the routable IP, where nothing listens
    }


# ---- module-level twins of the CLI -------------------------------------------------------------
def up(settings: Settings | None = None, **kwargs: Any) -> ClusterStatus:
    return LocalCluster(settings).up(**kwargs)


def down(settings: Settings | None = None, timeout: float = 15.0) -> str:
    return LocalCluster(settings).down(timeout=timeout)


def status(settings: Settings | None = None, address: str | None = None) -> ClusterStatus:
    """The local cluster's status, or (with ``address`` / FLOTILLA_RAY_ADDRESS) the cluster answering there.

    An address is asked through Ray's own Jobs API client, so "the token was refused" (Ray's
    ``AuthenticationError``) and "nothing answers" (``ConnectionError``) stay two answers. Our own
    cluster's dashboard URL gets our own token, as every flotilla client does.
    """
    address = address or ray_address()
    local = LocalCluster(settings)
    if not address:
        return local.status()
    url = normalise_address(address)
    state = local.state()
    headers = local.headers() if state and state["dashboard_url"] == url else auth_headers(None)
    return remote_status(url, headers)


def remote_status(url: str, headers: dict[str, str]) -> ClusterStatus:
    import requests
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    try:
        JobSubmissionClient(url, headers=dict(headers))  # checks the connection and the token
    except AuthenticationError:
        return ClusterStatus(
            True,
            False,
            url,
            local=False,
            refused=True,
            note="Give it the cluster's token: RAY_AUTH_TOKEN_PATH=<its token file> (flotilla's own cluster: "
            "'flotilla cluster env').",
        )
    except (ConnectionError, requests.RequestException) as exc:
        return ClusterStatus(False, False, url, local=False, note=f"Nothing answers there ({type(exc).__name__}).")
    except (RuntimeError, ValueError) as exc:  # an HTTP server that is not a Ray dashboard
        return ClusterStatus(
            False, False, url, local=False, note=f"What answers there is not a Ray dashboard ({str(exc)[:200]})."
        )
    version = (http_get(f"{url}/api/version", headers) or {}).get("ray_version", "?")
    return ClusterStatus(True, True, url, nodes=alive_nodes(url, headers) or 0, local=False, note=f"Ray {version}")
