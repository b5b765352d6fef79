"""Refusing work the cluster can never run, before it is queued.

Ray keeps a placement group that no node can hold pending forever, and Ray Train v2 retries starting
its worker group without end: without this check a run bigger than a fixed-size cluster just hangs.
"""

from __future__ import annotations

import logging

from flotilla.errors import ConfigError

log = logging.getLogger(__name__)


def check_fits(need: dict[str, float], *, local: bool, what: str, hint: str) -> None:
    """Refuse work that needs more CPUs/GPUs than the whole Ray cluster has.

    On a cluster of fixed size (``local``: see :func:`flotilla.cluster.connect.ensure_ray`) that is
    final; another cluster may autoscale, so there it is a warning.
    """
    import ray

    have = ray.cluster_resources()
    short = {k: (v, have.get(k, 0.0)) for k, v in need.items() if v > have.get(k, 0.0) + 1e-9}
    if not short:
        return
    msg = f"{what} could never start: it needs " + "; ".join(f"{v:g} {k}, the cluster has {h:g}" for k, (v, h) in short.items())
    if local:
        raise ConfigError(msg, hint=hint)
    log.warning("%s; it waits unless the cluster scales up (%s)", msg, hint)
