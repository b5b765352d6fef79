"""Streaming, mergeable, masked evaluation metrics — numpy only, no sklearn.

Evaluation runs sharded over Ray workers, so every metric is kept as *sufficient
statistics* that add up across workers: sums of errors for MAE/RMSE, a confusion
matrix for accuracy and macro-F1 (O(C^2), not O(samples)), and — only where a
metric genuinely needs every sample — the raw scores and labels for AUC. A
worker ships :meth:`MetricAccumulator.state` (plain numpy, picklable); the
driver :meth:`merge`\\ s them and computes once, which gives exactly the numbers
a single accumulator over all samples would.

Regression metrics are reported in the task's original units (years, not
years/100): the model's scaled output is multiplied back by ``target_scale``.
Which statistics a task keeps, and how they become metrics, is its kind's
business (:mod:`flotilla.models.kinds`); this module masks, counts and ships them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from flotilla.models.scoring import auc_from_scores, macro_f1_from_confusion
from flotilla.models.tasks import TaskSpec

__all__ = ["STATE_VERSION", "MetricAccumulator", "auc_from_scores", "macro_f1_from_confusion"]

STATE_VERSION = 1


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        x = x.detach()
        if x.dtype.is_floating_point:
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


class MetricAccumulator:
    """Masked streaming metrics for a list of tasks; keys ``"<task>/<metric>"`` and ``"<task>/n"``."""

    def __init__(self, tasks: Sequence[TaskSpec]) -> None:
        self.tasks = list(tasks)
        self.reset()

    def reset(self) -> None:
        self._stats: dict[str, dict[str, Any]] = {t.name: t.behaviour.empty_stats(t) for t in self.tasks}

    def update(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> None:
        """Add one batch: ``outputs`` are the model's raw outputs, ``batch`` the loader's columns."""
        for task in self.tasks:
            if task.name not in outputs or task.label not in batch:
                continue  # an eval set may lack a task's column entirely: it just reports n=0
            out = _numpy(outputs[task.name])
            y = _numpy(batch[task.label])
            mask = np.ones(y.shape[0], dtype=bool)
            if task.mask_column in batch:
                mask &= _numpy(batch[task.mask_column]).astype(bool).reshape(-1)
            if y.dtype.kind == "f":
                mask &= np.isfinite(y)
            if not mask.any():
                continue
            st = self._stats[task.name]
            st["n"] += int(mask.sum())
            task.behaviour.accumulate(task, st, out[mask], y[mask])

    def compute(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for task in self.tasks:
            st = self._stats[task.name]
            out[f"{task.name}/n"] = float(st["n"])
            values = task.behaviour.metric_values(st)
            out |= {f"{task.name}/{m}": float(values[m]) for m in task.metrics}
        return out

    def state(self) -> dict[str, Any]:
        """Picklable sufficient statistics (numpy/python only) for shipping between workers."""
        tasks = {t.name: t.behaviour.export_stats(self._stats[t.name]) for t in self.tasks}
        return {"version": STATE_VERSION, "tasks": tasks}

    def merge(self, other: Mapping[str, Any] | MetricAccumulator) -> MetricAccumulator:
        """Fold another accumulator (or its :meth:`state`) into this one; returns ``self``."""
        state = other.state() if isinstance(other, MetricAccumulator) else other
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"cannot merge metric state version {state.get('version')!r} (expected {STATE_VERSION})")
        unknown = sorted(set(state["tasks"]) - set(self._stats))
        if unknown:
            raise ValueError(f"cannot merge metrics of tasks {unknown}: this accumulator has {sorted(self._stats)}")
        kinds = {t.name: t.behaviour for t in self.tasks}
        for name, theirs in state["tasks"].items():
            mine = self._stats[name]
            mine["n"] += int(theirs["n"])
            kinds[name].merge_stats(name, mine, theirs)
        return self

    @classmethod
    def from_states(cls, tasks: Sequence[TaskSpec], states: Iterable[Mapping[str, Any]]) -> MetricAccumulator:
        """The driver's side of distributed evaluation: one accumulator from every worker's state."""
        acc = cls(tasks)
        for st in states:
            acc.merge(st)
        return acc
