"""Running flotilla's workloads as Ray jobs: a local Ray cluster, job specs, submission and handles.

``flotilla.jobs.up()/down()/status()`` manage the local cluster
(:mod:`flotilla.jobs.cluster`); ``flotilla.jobs.submit(spec)`` validates a job
spec, pins its data commit and submits it, returning a :class:`JobHandle`
(:mod:`flotilla.jobs.submit`). Exports are lazy so importing the package does
not import Ray.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "up": "flotilla.jobs.cluster",
    "down": "flotilla.jobs.cluster",
    "status": "flotilla.jobs.cluster",
    "LocalCluster": "flotilla.jobs.cluster",
    "ClusterStatus": "flotilla.jobs.cluster",
    "ClusterError": "flotilla.jobs.cluster",
    "submit": "flotilla.jobs.submit",
    "get_job": "flotilla.jobs.submit",
    "list_jobs": "flotilla.jobs.submit",
    "JobHandle": "flotilla.jobs.submit",
    "JobError": "flotilla.jobs.submit",
    "load_job_spec": "flotilla.jobs.specs",
    "parse_job_spec": "flotilla.jobs.specs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flotilla.jobs' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
