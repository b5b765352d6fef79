"""Drift tests as the monitor runs them: label-free prediction shift per task, per-slice views, one verdict.

Black-box shift detection (Lipton et al. 2018; Rabanser et al. 2019): a model's own predictions
are a low-dimensional summary of its input that changes where the input change matters to it,
and they need no labels. Regression outputs are compared with KS, class decisions with a
chi-square test on their histograms. The embedding test (:func:`~flotilla.loop.twosample.mmd_test`)
sees input change the heads may ignore; :func:`verdict` combines any set of tests under Holm's
correction, so adding a test never raises the false-alarm rate above ``alpha``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from flotilla.errors import MonitoringError
from flotilla.loop.twosample import TwoSampleResult, chi2_test, ks_test

__all__ = [
    "DriftVerdict",
    "Outcome",
    "SliceShare",
    "SliceShift",
    "holm",
    "predicted_classes",
    "prediction_shift",
    "share_shift",
    "slice_shift",
    "verdict",
]

Kind = Literal["regression", "binary", "multiclass"]
Test = Callable[[np.ndarray, np.ndarray], TwoSampleResult]

DEFAULT_ALPHA = 0.05
MIN_SLICE_SIZE = 50
"""Below this many samples on either side a slice is not tested: its test would have almost no power
and would still cost the other slices a share of ``alpha`` under the correction."""


def predicted_classes(preds: Any, kind: Kind) -> np.ndarray:
    """Class decisions from a classifier's output: P(label=1) ≥ 0.5 for binary, argmax of [n, C] probabilities for multiclass.

    Integer class ids pass through unchanged (1-D input to a multiclass task).
    """
    p = np.asarray(preds)
    if kind == "binary":
        if p.ndim != 1:
            raise MonitoringError(f"binary predictions must be [n] probabilities, got shape {p.shape}")
        return (p >= 0.5).astype(np.int64)
    if kind == "multiclass":
        if p.ndim == 2:
            return np.asarray(np.argmax(p, axis=1), dtype=np.int64)
        if p.ndim == 1 and np.issubdtype(p.dtype, np.integer):
            return p.astype(np.int64)
        raise MonitoringError(f"multiclass predictions must be [n, C] probabilities or [n] class ids, got shape {p.shape}")
    raise MonitoringError(f"no class decisions for a {kind!r} task")


def prediction_shift(reference_preds: Any, current_preds: Any, kind: Kind) -> TwoSampleResult:
    """Has the distribution of one task's predictions moved? KS for regression, chi-square on predicted classes otherwise."""
    if kind == "regression":
        return ks_test(np.asarray(reference_preds).reshape(-1), np.asarray(current_preds).reshape(-1))
    if kind not in ("binary", "multiclass"):
        raise MonitoringError(f"unknown task kind {kind!r}: one of regression, binary, multiclass")
    ref, cur = predicted_classes(reference_preds, kind), predicted_classes(current_preds, kind)
    if len(ref) < 1 or len(cur) < 1:
        raise MonitoringError(f"no predictions to compare (reference {len(ref)}, current {len(cur)})")
    width = int(max(ref.max(), cur.max())) + 1
    if kind == "multiclass" and np.asarray(reference_preds).ndim == 2:
        width = max(width, np.asarray(reference_preds).shape[1])
    return chi2_test(np.bincount(ref, minlength=width), np.bincount(cur, minlength=width))


def holm(p_values: Any) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values: reject where adjusted ≤ alpha, family-wise error ≤ alpha under any dependence."""
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    k = len(p)
    if k == 0:
        return p
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((k - np.arange(k)) * p[order])
    adjusted = np.empty(k)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


@dataclass(frozen=True)
class SliceShift:
    """One slice (``column == value``) tested against the same slice of the reference."""

    column: str
    value: str
    result: TwoSampleResult
    adjusted_p: float  # Holm over every slice tested

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "value": self.value, **self.result.to_dict(), "adjusted_p": self.adjusted_p}


def slice_shift(
    reference: Any,
    current: Any,
    reference_slices: Mapping[str, Any],
    current_slices: Mapping[str, Any],
    *,
    test: Test,
    min_size: int = MIN_SLICE_SIZE,
) -> list[SliceShift]:
    """Run ``test`` per slice, current slice against the reference's same slice, most shifted first.

    The reference's own slice, not the whole reference: a slice such as "age 80+" differs from the
    population by construction, and only its change over time is drift. Slices with fewer than
    ``min_size`` samples on either side are skipped. The p-values are Holm-adjusted over all slices
    tested, so scanning many slices does not manufacture a shifted one.
    """
    ref, cur = np.asarray(reference), np.asarray(current)
    tested: list[tuple[str, str, TwoSampleResult]] = []
    for column, cur_values in current_slices.items():
        if column not in reference_slices:
            raise MonitoringError(f"slice column {column!r} is in the current data but not in the reference")
        rv, cv = np.asarray(reference_slices[column]), np.asarray(cur_values)
        if len(rv) != len(ref) or len(cv) != len(cur):
            raise MonitoringError(f"slice column {column!r} does not have one value per sample")
        for value in sorted(set(cv.tolist()), key=str):
            in_ref, in_cur = rv == value, cv == value
            if int(in_ref.sum()) >= min_size and int(in_cur.sum()) >= min_size:
                tested.append((column, str(value), test(ref[in_ref], cur[in_cur])))
    adjusted = holm([r.p_value for _, _, r in tested])
    out = [SliceShift(c, v, r, float(a)) for (c, v, r), a in zip(tested, adjusted, strict=True)]
    return sorted(out, key=lambda s: (s.adjusted_p, s.result.p_value))


@dataclass(frozen=True)
class SliceShare:
    """How much of the data one slice is, in the reference and now, with a two-proportion test of the change."""

    column: str
    value: str
    reference_share: float
    current_share: float
    p_value: float
    adjusted_p: float  # Holm over every slice value of every column

    @property
    def change(self) -> float:
        return self.current_share - self.reference_share

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "value": self.value,
            "reference_share": self.reference_share,
            "current_share": self.current_share,
            "change": self.change,
            "p_value": self.p_value,
            "adjusted_p": self.adjusted_p,
        }


def share_shift(
    reference_slices: Mapping[str, Any], current_slices: Mapping[str, Any], *, alpha: float = DEFAULT_ALPHA
) -> list[SliceShare]:
    """Which slices grew or shrank: each value of each column, its share now vs in the reference.

    Ordered for reading: the slices whose change is significant at ``alpha`` first, largest change
    first (a big slice's small change has the smaller p-value, but is not the news), then the rest.

    A mix shift (more old faces, fewer women) moves shares without changing any one slice's inside,
    so :func:`slice_shift` cannot see it; a 2x2 chi-square per value can, and Holm over all values
    keeps scanning many of them from inventing one.
    """
    from scipy.stats import chi2_contingency

    rows: list[tuple[str, str, float, float, float]] = []
    for column, cur_values in current_slices.items():
        if column not in reference_slices:
            raise MonitoringError(f"slice column {column!r} is in the current data but not in the reference")
        rv, cv = np.asarray(reference_slices[column]).astype(str), np.asarray(cur_values).astype(str)
        if len(rv) == 0 or len(cv) == 0:
            raise MonitoringError(f"slice column {column!r} has no values on one side")
        for value in sorted(set(rv.tolist()) | set(cv.tolist())):
            a, b = int((rv == value).sum()), int((cv == value).sum())
            table = np.array([[a, len(rv) - a], [b, len(cv) - b]])
            p = 1.0 if (table.sum(axis=0) == 0).any() else float(chi2_contingency(table, correction=True).pvalue)
            rows.append((column, value, a / len(rv), b / len(cv), p))
    adjusted = holm([r[4] for r in rows])
    out = [SliceShare(c, v, rs, cs, p, float(a)) for (c, v, rs, cs, p), a in zip(rows, adjusted, strict=True)]
    return sorted(out, key=lambda s: (s.adjusted_p > alpha, -abs(s.change), s.adjusted_p))


@dataclass(frozen=True)
class Outcome:
    """One test in a verdict: its result, its Holm-adjusted p-value and whether it rejected at the verdict's alpha."""

    name: str
    result: TwoSampleResult
    adjusted_p: float
    rejected: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.result.to_dict(), "adjusted_p": self.adjusted_p, "rejected": self.rejected}


@dataclass(frozen=True)
class DriftVerdict:
    """Did the current data drift from the reference? ``drifted`` is True when any test rejects after Holm at ``alpha``.

    Slices say *where*; they do not set ``drifted`` (each is corrected only among the slices): the
    headline tests run on all the data and are the alarm.
    """

    alpha: float
    tests: tuple[Outcome, ...]
    slices: tuple[SliceShift, ...] = field(default=())

    @property
    def drifted(self) -> bool:
        return any(t.rejected for t in self.tests)

    def shifted_slices(self) -> list[SliceShift]:
        return [s for s in self.slices if s.adjusted_p <= self.alpha]

    def to_dict(self) -> dict[str, Any]:
        return {
            "drifted": self.drifted,
            "alpha": self.alpha,
            "correction": "holm",
            "tests": [t.to_dict() for t in self.tests],
            "slices": [s.to_dict() for s in self.slices],
        }


def verdict(
    tests: Mapping[str, TwoSampleResult], *, alpha: float = DEFAULT_ALPHA, slices: list[SliceShift] | tuple[SliceShift, ...] = ()
) -> DriftVerdict:
    """Combine named tests into one verdict at family-wise significance ``alpha`` (Holm's correction)."""
    if not 0 < alpha < 1:
        raise MonitoringError(f"alpha must be between 0 and 1, got {alpha}")
    if not tests:
        raise MonitoringError("a drift verdict needs at least one test")
    names = list(tests)
    adjusted = holm([tests[n].p_value for n in names])
    outcomes = tuple(Outcome(n, tests[n], float(a), bool(a <= alpha)) for n, a in zip(names, adjusted, strict=True))
    return DriftVerdict(alpha=alpha, tests=outcomes, slices=tuple(slices))
