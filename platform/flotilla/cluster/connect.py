"""Reaching a Ray cluster from a driver: a local Ray, flotilla's own cluster, or any other by address.

What a connection did is kept in one :class:`RayConnector` per process (not in module globals), because
it outlives the call: the auth variables set for flotilla's own cluster must be taken back before a
notebook connects anywhere else, and a second ``train()``/``sweep()`` with Ray already up must still
know whether the cluster it is on can grow.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from flotilla.cluster.files import token_path
from flotilla.cluster.local import LocalCluster
from flotilla.cluster.loopback import LOOPBACK, keep_loopback
from flotilla.errors import FlotillaError
from flotilla.hub.server import free_port
from flotilla.settings import (
    RAY_API_SERVER_ADDRESS,
    RAY_AUTH_MODE,
    RAY_AUTH_TOKEN_PATH,
    RAY_TRAIN_ENV,
    Settings,
    in_flotilla_cluster,
    ray_auth_chosen,
)

log = logging.getLogger(__name__)

CLIENT_ATTEMPTS = 2
REACH_HINT = (
    "check the address (e.g. ray://head:10001 or head:6379) and that 'ray start --head' runs there; a cluster with "
    "token auth also needs RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH=<its token file> (set for you for flotilla's "
    "own local cluster); leave --address out to use a local Ray"
)


def is_own_cluster(address: str, settings: Settings | None = None) -> bool:
    """Whether ``address`` (``host:port`` or ``ray://host:port``) is this machine's flotilla cluster: its GCS
    port, or its Ray-client port for ``ray://``, on 127.0.0.1, localhost or the GCS's own host."""
    settings = settings or Settings.from_env()
    st = LocalCluster(settings).state()
    if not st:
        return False
    client = address.startswith("ray://")
    host, _, port = address.removeprefix("ray://").rpartition(":")
    gcs_host = st.get("gcs_address", "").rpartition(":")[0]
    ours = st.get("client_port") if client else st.get("ray_port")
    return host in {"127.0.0.1", "localhost", gcs_host} - {""} and port.isdigit() and int(port) == ours


def driver_auth_env(address: str, settings: Settings | None = None) -> dict[str, str]:
    """The variables a driver needs to join flotilla's own local cluster at ``address`` (``host:port`` or ``ray://host:port``).

    That cluster runs with token auth, and a driver started outside it (``flotilla train --address``,
    ``flotilla sweep --address``, a notebook) that does not send the token gets "Failed to connect" or
    "Ray client connection timeout", with no word about auth. Jobs need none of this (they inherit it
    from their node). Only this cluster's own GCS and Ray-client ports on this machine match: the token
    is never offered to another cluster. Empty when the caller chose a token already (RAY_AUTH_TOKEN or
    RAY_AUTH_TOKEN_PATH); RAY_AUTH_MODE alone does not count: Ray sets it in any process that started a
    local Ray, whose token (~/.ray/auth_token) is not this cluster's.
    """
    if ray_auth_chosen():
        return {}
    settings = settings or Settings.from_env()
    token = token_path(settings)
    if not token.exists() or not is_own_cluster(address, settings):
        return {}
    return {RAY_AUTH_MODE: "token", RAY_AUTH_TOKEN_PATH: str(token)}


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast when nothing listens at ``host:port``: ``ray.init`` would retry the GCS for minutes, silently."""
    if address.startswith(("http://", "https://")):  # what `cluster status` shows, and `jobs --address` takes
        raise FlotillaError(
            f"{address!r} is a dashboard / Jobs API URL: training and sweeps connect to Ray itself",
            hint="give the GCS address (host:port, 'flotilla cluster status' shows it) or ray://host:<client port>; "
            "to run on the cluster as a job instead, use 'flotilla jobs submit ... --address " + address + "'",
        )
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():  # "auto" and other forms Ray resolves itself
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise FlotillaError(
            f"cannot reach the Ray cluster at {address!r}: nothing answers at {host}:{port} ({exc.strerror or exc})",
            hint=REACH_HINT,
        ) from None


def refresh_ray_auth() -> None:
    """Make auth variables set in this process count: Ray caches them once per process (its Config and
    token loader); refresh both, as Ray's own ``_enable_token_auth`` does."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]  # compiled: no stubs

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):  # another Ray version: set RAY_AUTH_MODE/RAY_AUTH_TOKEN_PATH before starting
        log.warning(
            "could not refresh Ray's auth settings in this process; set RAY_AUTH_MODE=token and "
            "RAY_AUTH_TOKEN_PATH before starting it if the connection is refused"
        )


def local_ray_options(dashboard_port: int) -> dict[str, Any]:
    """``ray.init`` arguments for a local Ray started by this driver.

    The dashboard also serves the state API that Ray Train's placement-group cleaner polls from inside
    the cluster. That actor finds the API by ``RAY_API_SERVER_ADDRESS``, else ``RAY_ADDRESS``, else by
    scanning the machine for GCS processes; a Ray started by ``ray.init`` is recorded nowhere, so with a
    second Ray on the machine (flotilla's own cluster, another user's) the scan found both and the
    cleaner died with a "Found multiple active Ray instances" traceback on the console. Choosing the
    dashboard port here lets every worker of this job be told, through the job's runtime environment.
    The node runs on 127.0.0.1, so all of it listens on loopback only (:mod:`flotilla.cluster.loopback`).
    """
    return {
        "address": "local",
        "_node_ip_address": LOOPBACK,
        "include_dashboard": True,
        "dashboard_host": "127.0.0.1",
        "dashboard_port": dashboard_port,
        "runtime_env": {"env_vars": {RAY_API_SERVER_ADDRESS: f"http://127.0.0.1:{dashboard_port}"}},
        "log_to_driver": True,
    }


def _gcs_address() -> str | None:
    import ray

    try:
        return ray.get_runtime_context().gcs_address
    except Exception:  # Ray client and older Rays may not say: then nothing is remembered as fixed-size
        return None


@dataclass
class RayConnector:
    """Connects this process to Ray and remembers what that did (one per process: :data:`CONNECTOR`).

    ``our_auth``: the auth variables set here for flotilla's own cluster, taken back before connecting
    anywhere else. ``fixed_gcs``: the GCS of the fixed-size cluster reached (a local Ray started here,
    or flotilla's own), so a later call with Ray already up still knows it cannot grow.
    """

    our_auth: dict[str, str] = field(default_factory=dict)
    fixed_gcs: str | None = None
    retry_wait_s: float = 5.0

    def ensure_ray(self, address: str | None = None) -> bool:
        """Connect to ``address``, or start a local Ray when none is running.

        Returns whether the cluster reached is of a fixed size: a local Ray started here, flotilla's own
        local cluster (by its address, or from a job running on it). Work bigger than such a cluster would
        wait forever (Ray Train v2 retries its worker-group start without end), so the callers refuse it;
        any other cluster may autoscale.
        """
        import ray

        for name, value in RAY_TRAIN_ENV.items():  # a local Ray started below passes them on to its workers
            os.environ.setdefault(name, value)
        inside_ours = in_flotilla_cluster()
        if ray.is_initialized():
            return inside_ours or (self.fixed_gcs is not None and _gcs_address() == self.fixed_gcs)
        self.drop_our_auth()
        if address:
            check_reachable(address)
            auth = driver_auth_env(address)  # flotilla's own cluster: its token (and only there)
            if auth:
                os.environ.update(auth)
                self.our_auth.update(auth)
                refresh_ray_auth()
            self.init_remote(address)
            fixed = inside_ours or is_own_cluster(address)
        else:
            with keep_loopback():
                ray.init(**local_ray_options(free_port()))
            fixed = True
        self.fixed_gcs = _gcs_address() if fixed else None
        return fixed

    def init_remote(self, address: str) -> None:
        """``ray.init(address)``; a Ray client connection that fails is tried once more.

        The port answered already (:func:`check_reachable`), and a Ray client connection is several steps
        on the head: its proxy asks the runtime-env agent for an environment, then starts a server process
        for this client. On a busy head one of them can fail once (seen on CI: a 2-core head that had just
        run jobs), where a second try, as a user would make by hand, gets through. A GCS address
        is not retried: Ray already retries it for a minute.
        """
        import ray

        attempts = CLIENT_ATTEMPTS if address.startswith("ray://") else 1
        for attempt in range(1, attempts + 1):
            try:
                with keep_loopback():  # flotilla's own cluster listens on 127.0.0.1 only: Ray must not rewrite it
                    ray.init(address=address)
                return
            except (ConnectionError, ValueError) as exc:  # ValueError: an address Ray cannot parse
                if isinstance(exc, ValueError) or attempt == attempts:
                    raise FlotillaError(f"cannot reach the Ray cluster at {address!r}: {exc}", hint=REACH_HINT) from None
                last = str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else ""
                log.warning(
                    "connecting to %s failed (%s: %s); trying once more in %.0f s",
                    address,
                    type(exc).__name__,
                    last,
                    self.retry_wait_s,
                )
                time.sleep(self.retry_wait_s)

    def drop_our_auth(self) -> None:
        """Take back the auth variables an earlier connection set for flotilla's cluster, before connecting anew.

        A variable the user has changed since is theirs, and stays."""
        dropped = False
        for key, value in self.our_auth.items():
            if os.environ.get(key) == value:
                del os.environ[key]
                dropped = True
        self.our_auth.clear()
        if dropped:
            refresh_ray_auth()


CONNECTOR = RayConnector()


def ensure_ray(address: str | None = None) -> bool:
    """This process's :meth:`RayConnector.ensure_ray`: connect (or start a local Ray); whether the cluster is fixed-size."""
    return CONNECTOR.ensure_ray(address)
