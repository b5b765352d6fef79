"""Ray on 127.0.0.1: every port of flotilla's local Ray reachable from this machine only.

Ray binds its servers by the node's IP: the GCS, raylets, object managers, worker processes, the Ray
client server, the dashboard agent and the runtime-env agent listen on 127.0.0.1 when that IP is
``127.0.0.1``, and on all interfaces (or the routable IP) otherwise; so do the Prometheus ``/metrics``
endpoints of the dashboard, the autoscaler and each node's agent. But Ray 2.60 never keeps that IP:
``services.resolve_ip_for_localhost`` rewrites ``127.0.0.1`` to the machine's routable address,
both for ``--node-ip-address`` and for a GCS address a driver connects to, unless Ray runs in its
single-host mode (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, the default on macOS and Windows), where
the node IP is 127.0.0.1 and every ``127.0.0.1`` stays as it is.

So flotilla's Ray runs in that mode, in every process of it (nodes, workers, job drivers, Ray's own
CLI through ``flotilla cluster env``), and two places that the mode alone does not reach keep
127.0.0.1 by :func:`keep_loopback`: a worker node's ``ray start`` (Ray refuses to add a node in
single-host mode; :func:`main` starts it with the mode off for the node's own start-up and
127.0.0.1 kept) and a driver that imported Ray before the mode was set (``ensure_ray`` in a
notebook). Both patch Ray internals (its resolver; for a worker node's start also its multi-node
switch), so the loopback test (tests/integration/test_cluster_loopback.py) checks them against the
Ray installed: a Ray that stops honouring them fails it.

:data:`NOT_LOOPBACK` lists what still listens beyond loopback (docs/jobs.md, "Loopback only", names
it; the test allows exactly that).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from flotilla.settings import RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER, environment

LOOPBACK = "127.0.0.1"
SINGLE_HOST_ENV = {RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER: "0"}  # Ray's single-host mode: node IP 127.0.0.1, kept as given

# Listening sockets of flotilla's Ray that are not on 127.0.0.1, as (process, why). Empty with Ray 2.60:
# every server above binds loopback once the node IP is 127.0.0.1 (measured by the loopback test).
NOT_LOOPBACK: tuple[tuple[str, str], ...] = ()


@contextmanager
def keep_loopback() -> Iterator[None]:
    """Within: Ray keeps ``127.0.0.1`` (and ``localhost``, as 127.0.0.1) where it would put the routable IP.

    Also puts Ray's single-host mode in this process's environment, so the GCS, raylet, dashboard and
    workers that a ``ray.init`` here starts inherit it; both are taken back on the way out (a driver
    connected by then knows its node IP: Ray asks the connected node, not the resolver)."""
    from ray._private import services

    original = services.resolve_ip_for_localhost

    def resolve(host: str) -> str:
        return LOOPBACK if host in (LOOPBACK, "localhost") else original(host)

    services.resolve_ip_for_localhost = resolve
    try:
        with environment(SINGLE_HOST_ENV):
            yield
    finally:
        services.resolve_ip_for_localhost = original


def main(argv: list[str]) -> int:
    """``python -m flotilla.cluster.loopback start ...``: Ray's ``ray start`` with 127.0.0.1 kept.

    A worker node needs Ray's multi-node switch on to start at all, and 127.0.0.1 kept for its own IP and
    the head's GCS address; its processes inherit the single-host environment (from the caller), so
    they keep 127.0.0.1 themselves."""
    from ray._private import ray_constants
    from ray.scripts.scripts import main as ray_main

    ray_constants.ENABLE_RAY_CLUSTER = True  # this process only: `ray start --address` refuses to run without it
    with keep_loopback():
        sys.argv = ["ray", *argv]
        ray_main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
