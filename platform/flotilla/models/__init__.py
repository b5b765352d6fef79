"""Model families: tasks as data, shared backbones, per-task heads, masked losses and metrics.

Exports are resolved lazily (as in :mod:`flotilla`), so validating a task spec via
``flotilla.models.tasks`` never pays for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TaskSpec": "flotilla.models.tasks",
    "REFERENCE_TASKS": "flotilla.models.tasks",
    "task_from_dict": "flotilla.models.tasks",
    "resolve_tasks": "flotilla.models.tasks",
    "chance_level": "flotilla.models.tasks",
    "KINDS": "flotilla.models.kinds",
    "TaskKind": "flotilla.models.kinds",
    "task_kind": "flotilla.models.kinds",
    "build_backbone": "flotilla.models.backbones",
    "BACKBONES": "flotilla.models.backbones",
    "MultiTaskModel": "flotilla.models.family",
    "SingleTaskModel": "flotilla.models.family",
    "LossWeighting": "flotilla.models.family",
    "compute_losses": "flotilla.models.family",
    "postprocess": "flotilla.models.family",
    "MetricAccumulator": "flotilla.models.metrics",
    "auc_from_scores": "flotilla.models.scoring",
    "macro_f1_from_confusion": "flotilla.models.scoring",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flotilla.models' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
