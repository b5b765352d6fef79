"""flotilla: train families of models on Ray from zero-copy branches of a lakeFS data hub.

The public API is re-exported here lazily, so ``import flotilla`` (and the CLI's
start-up) does not pay for importing the lakeFS SDK, Ray or torch until used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Hub": "flotilla.hub.client",
    "Repo": "flotilla.hub.repo",
    "Experiment": "flotilla.hub.experiment",
    "Retention": "flotilla.hub.experiment",
    "LocalHub": "flotilla.hub.server",
    "Settings": "flotilla.settings",
    "branch_id": "flotilla.names",
    "train": "flotilla.train.run",
    "FamilySpec": "flotilla.specs",
    "sweep": "flotilla.tune.sweep",
    "SweepSpec": "flotilla.tune.spec",
}

__all__ = sorted(_EXPORTS) + ["__version__", "errors"]


def __getattr__(name: str) -> Any:
    if name == "errors":
        return importlib.import_module("flotilla.errors")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flotilla' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
