"""Ground-truth checks: each task's metric on labelled current data vs the same model on its own validation data.

The comparison is made against the reference *recomputed* from the model's predictions on the
validation split of its training commit, not only against the number on the card: both sides are
then computed the same way from per-sample scores, and both have sampling error that the
confidence interval must include. The card's value is reported beside it as a check.

Per-sample scores: absolute error for regression (metric ``mae``, lower is better), 0/1 correctness
for classification (``accuracy``). The **degradation** is current minus reference for ``mae`` and
reference minus current for ``accuracy``, so positive is always worse. Its confidence interval is a
percentile bootstrap, resampling both sides independently. A task is flagged only when the whole
one-sided interval lies above ``tolerance``, at level ``alpha`` split Bonferroni-wise over the tasks
(and, separately, over the task x slice cells): a labelled sample of 40 faces gives a wide interval
and no alarm, which is the point.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from flotilla.errors import MonitoringError
from flotilla.models.tasks import TaskSpec

BOOTSTRAP = 2000
MIN_SLICE_LABELS = 30
"""A slice with fewer labelled current samples is left out of the per-slice checks: too few to say anything."""


@dataclass(frozen=True)
class MetricCheck:
    """One task's metric (on one slice, or on all the data), reference vs current, with its degradation's interval."""

    task: str
    metric: str  # "mae" | "accuracy"
    slice_column: str  # "" for all the data
    slice_value: str
    reference: float
    current: float
    degradation: float  # positive = worse, in the metric's units
    ci_low: float  # two-sided (1 - alpha) percentile interval of the degradation, for display
    ci_high: float
    bound: float  # the one-sided lower bound at the corrected level; flagged when it is above the tolerance
    n_reference: int
    n_current: int
    degraded: bool
    card: float | None = None  # the model card's validation value, where it has one

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GroundTruth:
    """The ground-truth check: one :class:`MetricCheck` per task and per task x slice."""

    alpha: float
    tolerance: float
    tasks: tuple[MetricCheck, ...]
    slices: tuple[MetricCheck, ...]
    labelled: int  # current samples with at least one label

    @property
    def degraded(self) -> tuple[str, ...]:
        return tuple(c.task for c in self.tasks if c.degraded)

    def degraded_slices(self) -> list[MetricCheck]:
        return [c for c in self.slices if c.degraded]

    def to_dict(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "tolerance": self.tolerance,
            "labelled": self.labelled,
            "degraded": list(self.degraded),
            "tasks": [c.to_dict() for c in self.tasks],
            "slices": [c.to_dict() for c in self.slices],
        }


def scores(task: TaskSpec, predicted: np.ndarray, labels: np.ndarray) -> tuple[str, np.ndarray, np.ndarray]:
    """(metric, per-sample score, labelled mask): absolute error for regression, correctness for classes."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    ok = ~np.isnan(y)
    if task.kind == "regression":
        return "mae", np.abs(p - np.nan_to_num(y)), ok
    return "accuracy", (p == np.nan_to_num(y, nan=-1)).astype(np.float64), ok


def bootstrap_means(x: np.ndarray, rng: np.random.Generator, draws: int = BOOTSTRAP, chunk: int = 200) -> np.ndarray:
    """``draws`` bootstrap resample means of ``x``, in chunks so memory stays O(chunk x n)."""
    out = np.empty(draws)
    for start in range(0, draws, chunk):
        k = min(chunk, draws - start)
        out[start : start + k] = x[rng.integers(0, len(x), size=(k, len(x)))].mean(axis=1)
    return out


def check_metric(
    task: TaskSpec,
    metric: str,
    reference: np.ndarray,
    current: np.ndarray,
    *,
    level: float,
    alpha: float,
    tolerance: float,
    rng: np.random.Generator,
    slice_column: str = "",
    slice_value: str = "",
    card: float | None = None,
) -> MetricCheck:
    """Compare one metric's per-sample scores; ``level`` is the corrected one-sided significance."""
    if len(reference) < 2 or len(current) < 2:
        raise MonitoringError(f"task {task.name!r}: a ground-truth check needs at least 2 labelled samples on each side")
    sign = 1.0 if metric == "mae" else -1.0
    diffs = sign * (bootstrap_means(current, rng) - bootstrap_means(reference, rng))
    observed = sign * (float(current.mean()) - float(reference.mean()))
    bound = float(np.quantile(diffs, level))
    lo, hi = (float(q) for q in np.quantile(diffs, [alpha / 2, 1 - alpha / 2]))
    return MetricCheck(
        task.name,
        metric,
        slice_column,
        slice_value,
        float(reference.mean()),
        float(current.mean()),
        observed,
        lo,
        hi,
        bound,
        len(reference),
        len(current),
        bound > tolerance,
        card,
    )


def ground_truth(
    tasks: Sequence[TaskSpec],
    reference_preds: Mapping[str, np.ndarray],
    reference_labels: Mapping[str, np.ndarray],
    current_preds: Mapping[str, np.ndarray],
    current_labels: Mapping[str, np.ndarray],
    *,
    reference_slices: Mapping[str, np.ndarray],
    current_slices: Mapping[str, np.ndarray],
    card_metrics: Mapping[str, float],
    alpha: float = 0.05,
    tolerance: float = 0.0,
    seed: int = 0,
) -> GroundTruth:
    """Each task's metric on the labelled current samples vs the reference, overall and per slice.

    ``*_preds``: per task, the predicted value (regression) or class; ``*_labels``: per task label
    column, NaN where unlabelled. Tasks with no labelled current sample are left out; no task at
    all is an error (there is nothing to check).
    """
    if not 0 < alpha < 1:
        raise MonitoringError(f"alpha must be between 0 and 1, got {alpha}")
    rng = np.random.default_rng(seed)
    usable: list[tuple[TaskSpec, str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    labelled = np.zeros(len(next(iter(current_preds.values()))) if current_preds else 0, dtype=bool)
    for t in tasks:
        label = t.label or t.name
        metric, ref_s, ref_ok = scores(t, reference_preds[t.name], reference_labels[label])
        _, cur_s, cur_ok = scores(t, current_preds[t.name], current_labels[label])
        labelled |= cur_ok
        if cur_ok.sum() >= 2 and ref_ok.sum() >= 2:
            usable.append((t, metric, ref_s, ref_ok, cur_s, cur_ok))
    if not usable:
        raise MonitoringError(
            "the current data has no labels for any of the model's tasks: nothing to check against ground truth",
            hint="label (part of) the current data first, or leave out --ground-truth",
        )
    overall = tuple(
        check_metric(
            t,
            m,
            rs[ro],
            cs[co],
            level=alpha / len(usable),
            alpha=alpha,
            tolerance=tolerance,
            rng=rng,
            card=card_metrics.get(f"{t.name}/{m}"),
        )
        for t, m, rs, ro, cs, co in usable
    )
    cells: list[tuple[TaskSpec, str, str, str, np.ndarray, np.ndarray]] = []
    for column, cur_values in current_slices.items():
        ref_values = np.asarray(reference_slices[column])
        for value in sorted(set(np.asarray(cur_values).tolist()) - {""}):
            for t, m, rs, ro, cs, co in usable:
                r_in, c_in = ro & (ref_values == value), co & (np.asarray(cur_values) == value)
                if c_in.sum() >= MIN_SLICE_LABELS and r_in.sum() >= MIN_SLICE_LABELS:
                    cells.append((t, m, column, str(value), rs[r_in], cs[c_in]))
    per_slice = tuple(
        check_metric(
            t, m, r, c, level=alpha / len(cells), alpha=alpha, tolerance=tolerance, rng=rng, slice_column=col, slice_value=v
        )
        for t, m, col, v, r, c in cells
    )
    ranked = tuple(sorted(per_slice, key=lambda c: -c.bound))
    return GroundTruth(alpha, tolerance, overall, ranked, int(labelled.sum()))
