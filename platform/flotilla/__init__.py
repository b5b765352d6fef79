"""flotilla: train families of models on Ray from zero-copy branches of a lakeFS data hub.

Every package names its public API in ``__all__`` and re-exports it from its ``__init__``. This top
level is the one place that defers the imports behind its names (PEP 562, as Optuna defers its heavy
submodules): ``flotilla.train`` pulls in Ray and ``flotilla.Hub`` the lakeFS SDK, several seconds on
a small machine, and the CLI (``flotilla --help``) and ``import flotilla`` must not pay for that. The
public subpackages (``flotilla.jobs``, ``flotilla.tune``, ...) are deferred the same way, so a notebook
reaches ``flotilla.jobs.submit`` after a bare ``import flotilla``. What comes back is the real
function or class (its signature and docstring are ``help``'s), never a wrapper.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from flotilla import errors
from flotilla.names import branch_id
from flotilla.settings import Settings
from flotilla.version import __version__

if TYPE_CHECKING:
    from flotilla.audit import audit_dataset
    from flotilla.hub import Experiment, Hub, LocalHub, Repo, Retention
    from flotilla.loop import infer, monitor
    from flotilla.specs import FamilySpec
    from flotilla.training import reproduce, train
    from flotilla.tune import SweepSpec, sweep

_DEFERRED = {
    "audit_dataset": "flotilla.audit",
    "Experiment": "flotilla.hub",
    "FamilySpec": "flotilla.specs",
    "Hub": "flotilla.hub",
    "infer": "flotilla.loop",
    "LocalHub": "flotilla.hub",
    "monitor": "flotilla.loop",
    "Repo": "flotilla.hub",
    "Retention": "flotilla.hub",
    "reproduce": "flotilla.training",
    "SweepSpec": "flotilla.tune",
    "sweep": "flotilla.tune",
    "train": "flotilla.training",
}

__all__ = [
    "Experiment",
    "FamilySpec",
    "Hub",
    "LocalHub",
    "Repo",
    "Retention",
    "Settings",
    "SweepSpec",
    "__version__",
    "audit_dataset",
    "branch_id",
    "errors",
    "infer",
    "monitor",
    "reproduce",
    "sweep",
    "train",
]


# the public subpackages: ``flotilla.jobs.submit(...)`` works after a bare ``import flotilla``
SUBPACKAGES = (
    "active", "audit", "cli", "cluster", "data", "hub", "jobs", "labelstudio",
    "loop", "models", "registry", "training", "tune",
)  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in SUBPACKAGES:
        value = importlib.import_module(f"flotilla.{name}")  # the import binds it here as well
    elif name in _DEFERRED:
        value = getattr(importlib.import_module(_DEFERRED[name]), name)
    else:
        raise AttributeError(f"module 'flotilla' has no attribute {name!r}")
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, *SUBPACKAGES})
