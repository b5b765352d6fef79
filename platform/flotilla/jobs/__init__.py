"""Running flotilla's workloads as Ray jobs: job specs, submission and handles.

``flotilla.jobs.submit(spec)`` validates a job spec, pins its data commit and submits it, returning a
:class:`JobHandle` (:mod:`flotilla.jobs.submission`, :mod:`flotilla.jobs.handle`). The local cluster the jobs run on lives one
layer down, in :mod:`flotilla.cluster`; ``up``/``down``/``status`` are re-exported here because a user
who submits jobs starts and stops that cluster too.
"""

from flotilla.cluster import ClusterError, ClusterStatus, LocalCluster, down, status, up
from flotilla.jobs.client import JobError
from flotilla.jobs.handle import JobHandle, get_job, list_jobs
from flotilla.jobs.specs import load_job_spec, parse_job_spec
from flotilla.jobs.submission import submit

__all__ = [
    "ClusterError",
    "ClusterStatus",
    "JobError",
    "JobHandle",
    "LocalCluster",
    "down",
    "get_job",
    "list_jobs",
    "load_job_spec",
    "parse_job_spec",
    "status",
    "submit",
    "up",
]
