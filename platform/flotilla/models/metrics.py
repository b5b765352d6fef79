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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from flotilla.models.tasks import TaskSpec

STATE_VERSION = 1


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        x = x.detach()
        if x.dtype.is_floating_point:
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def auc_from_scores(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney U statistic over average ranks (ties count one half).

    NaN when only one class is present: AUC is undefined there, and 0.5 would look like a result.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    pos = np.asarray(labels).astype(bool).ravel()
    n_pos = int(pos.sum())
    n_neg = pos.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    ends = np.r_[starts[1:], s.size]
    ranks = np.empty(s.size, dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)  # 1-based average rank of each tie group
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def macro_f1_from_confusion(confusion: np.ndarray) -> float:
    """Mean F1 over classes that occur in the labels or the predictions.

    A class absent from both has an undefined (0/0) F1 and is left out — the scikit-learn
    convention — so a small eval set lacking 'disgust' is not penalised for it; a class that is
    predicted but never true (or vice versa) scores 0.
    """
    cm = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(cm)
    denom = cm.sum(0) + cm.sum(1)  # = 2tp + fp + fn
    seen = denom > 0
    if not seen.any():
        return float("nan")
    return float(np.mean(2 * tp[seen] / denom[seen]))


class MetricAccumulator:
    """Masked streaming metrics for a list of tasks; keys ``"<task>/<metric>"`` and ``"<task>/n"``."""

    def __init__(self, tasks: Sequence[TaskSpec]) -> None:
        self.tasks = list(tasks)
        self.reset()

    def reset(self) -> None:
        self._stats: dict[str, dict[str, Any]] = {t.name: self._empty(t) for t in self.tasks}

    @staticmethod
    def _empty(task: TaskSpec) -> dict[str, Any]:
        if task.kind == "regression":
            return {"n": 0, "abs": 0.0, "sq": 0.0}
        if task.kind == "binary":
            d: dict[str, Any] = {"n": 0, "correct": 0}
            if "auc" in task.metrics:
                d |= {"scores": [], "labels": []}
            return d
        return {"n": 0, "confusion": np.zeros((task.out_dim, task.out_dim), dtype=np.int64)}

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
            self._update_task(task, out[mask], y[mask])

    def _update_task(self, task: TaskSpec, out: np.ndarray, y: np.ndarray) -> None:
        st = self._stats[task.name]
        st["n"] += int(y.shape[0])
        if task.kind == "regression":
            err = out.astype(np.float64).reshape(-1) * task.target_scale - y.astype(np.float64)
            st["abs"] += float(np.abs(err).sum())
            st["sq"] += float(np.square(err).sum())
            return
        labels = y.astype(np.int64).reshape(-1)
        n_classes = 2 if task.kind == "binary" else task.out_dim
        if labels.min() < 0 or labels.max() >= n_classes:
            bad = labels[(labels < 0) | (labels >= n_classes)][:5].tolist()
            raise ValueError(f"task {task.name!r}: labels {bad} are outside 0..{n_classes - 1}")
        if task.kind == "binary":
            logits = out.astype(np.float32).reshape(-1)
            st["correct"] += int(((logits > 0) == (labels == 1)).sum())
            if "scores" in st:
                # Logits, not probabilities: same ranking, but no ties from a saturated sigmoid.
                st["scores"].append(logits)
                st["labels"].append(labels.astype(np.uint8))
            return
        pred = out.reshape(labels.shape[0], -1).argmax(axis=1)
        st["confusion"] += np.bincount(labels * n_classes + pred, minlength=n_classes**2).reshape(n_classes, n_classes)

    def compute(self) -> dict[str, float]:
        out: dict[str, float] = {}
        nan = float("nan")
        for task in self.tasks:
            st = self._stats[task.name]
            n = st["n"]
            out[f"{task.name}/n"] = float(n)
            values: dict[str, float] = {}
            if task.kind == "regression":
                values = {"mae": st["abs"] / n if n else nan, "rmse": float(np.sqrt(st["sq"] / n)) if n else nan}
            elif task.kind == "binary":
                values["accuracy"] = st["correct"] / n if n else nan
                if "scores" in st:
                    scores, labels = self._concat(st)
                    values["auc"] = auc_from_scores(scores, labels)
            else:
                cm = st["confusion"]
                values = {
                    "accuracy": float(np.trace(cm) / n) if n else nan,
                    "macro_f1": macro_f1_from_confusion(cm) if n else nan,
                }
            out |= {f"{task.name}/{m}": float(values[m]) for m in task.metrics}
        return out

    @staticmethod
    def _concat(st: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        if not st["scores"]:
            return np.zeros(0, np.float32), np.zeros(0, np.uint8)
        return np.concatenate(st["scores"]), np.concatenate(st["labels"])

    def state(self) -> dict[str, Any]:
        """Picklable sufficient statistics (numpy/python only) for shipping between workers."""
        tasks: dict[str, Any] = {}
        for task in self.tasks:
            st = dict(self._stats[task.name])
            if "scores" in st:
                st["scores"], st["labels"] = self._concat(st)
            if "confusion" in st:
                st["confusion"] = st["confusion"].copy()
            tasks[task.name] = st
        return {"version": STATE_VERSION, "tasks": tasks}

    def merge(self, other: Mapping[str, Any] | MetricAccumulator) -> MetricAccumulator:
        """Fold another accumulator (or its :meth:`state`) into this one; returns ``self``."""
        state = other.state() if isinstance(other, MetricAccumulator) else other
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"cannot merge metric state version {state.get('version')!r} (expected {STATE_VERSION})")
        unknown = sorted(set(state["tasks"]) - set(self._stats))
        if unknown:
            raise ValueError(f"cannot merge metrics of tasks {unknown}: this accumulator has {sorted(self._stats)}")
        for name, theirs in state["tasks"].items():
            mine = self._stats[name]
            mine["n"] += int(theirs["n"])
            for key in ("abs", "sq", "correct"):
                if key in mine:
                    mine[key] += theirs[key]
            if "confusion" in mine:
                if np.shape(theirs["confusion"]) != mine["confusion"].shape:
                    raise ValueError(f"task {name!r}: confusion matrices of different class counts cannot merge")
                mine["confusion"] += np.asarray(theirs["confusion"], dtype=np.int64)
            if "scores" in mine and "scores" in theirs:
                mine["scores"].append(np.asarray(theirs["scores"], dtype=np.float32))
                mine["labels"].append(np.asarray(theirs["labels"], dtype=np.uint8))
        return self

    @classmethod
    def from_states(cls, tasks: Sequence[TaskSpec], states: Iterable[Mapping[str, Any]]) -> MetricAccumulator:
        """The driver's side of distributed evaluation: one accumulator from every worker's state."""
        acc = cls(tasks)
        for st in states:
            acc.merge(st)
        return acc
