"""Ray underneath flotilla: connecting a driver, flotilla's own local cluster, its processes and token,
and the check that work fits. Below :mod:`flotilla.training` and :mod:`flotilla.tune`, which use it,
and below :mod:`flotilla.jobs`, which submits work to it."""

from flotilla.cluster.connect import RayConnector, driver_auth_env, ensure_ray, is_own_cluster
from flotilla.cluster.files import ClusterError
from flotilla.cluster.fit import check_fits
from flotilla.cluster.health import ClusterStatus
from flotilla.cluster.local import LocalCluster, down, status, up

__all__ = [
    "ClusterError",
    "ClusterStatus",
    "LocalCluster",
    "RayConnector",
    "check_fits",
    "down",
    "driver_auth_env",
    "ensure_ray",
    "is_own_cluster",
    "status",
    "up",
]
