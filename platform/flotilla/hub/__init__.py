"""The data hub: a lakeFS server (local or remote) and flotilla's API over it."""

from flotilla.hub.branches import BranchInfo, flotilla_branches, prune_branches
from flotilla.hub.client import Hub
from flotilla.hub.credentials import HubCredentials
from flotilla.hub.experiment import SCRATCH, Experiment, Retention
from flotilla.hub.local import down, install, local_hub, logs, status, up
from flotilla.hub.protection import is_protected, protect, protection_rules, unprotect
from flotilla.hub.repo import Change, CommitInfo, ObjectInfo, Repo
from flotilla.hub.server import HubStatus, LocalHub

__all__ = [
    "SCRATCH",
    "BranchInfo",
    "Change",
    "CommitInfo",
    "Experiment",
    "Hub",
    "HubCredentials",
    "HubStatus",
    "LocalHub",
    "ObjectInfo",
    "Repo",
    "Retention",
    "down",
    "flotilla_branches",
    "install",
    "is_protected",
    "local_hub",
    "logs",
    "protect",
    "protection_rules",
    "prune_branches",
    "status",
    "unprotect",
    "up",
]
