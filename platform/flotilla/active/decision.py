"""Promote the retrained model or keep the old one: a rule stated up front, applied to both on one fixed evaluation set.

The new model is promoted only when it is **not worse on any task beyond that task's tolerance**
and **better on the objective**; otherwise the old model stays and the decision says why. The
objective is the mean over tasks of the relative improvement (``(old − new) / old`` for an error
such as MAE, ``(new − old) / old`` for accuracy): unit-free, so years of age error and points of
emotion accuracy weigh alike, and positive means better.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from flotilla.errors import ActiveLearningError

LOWER_IS_BETTER = frozenset({"mae", "rmse"})
DEFAULT_TOLERANCE = {"mae": 1.0, "rmse": 1.0, "accuracy": 0.02}
"""Absolute, in the metric's units: a year of age error, two points of accuracy."""


@dataclass(frozen=True)
class Comparison:
    """One task's metric, old vs new, on the evaluation set."""

    task: str
    metric: str
    old: float
    new: float
    improvement: float  # relative, positive = better
    tolerance: float
    worse_beyond_tolerance: bool


@dataclass(frozen=True)
class Decision:
    """Promote or keep, with every comparison and the reasons in words."""

    promote: bool
    objective: float  # mean relative improvement over tasks
    comparisons: tuple[Comparison, ...]
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "promote": self.promote,
            "objective": self.objective,
            "reasons": list(self.reasons),
            "comparisons": [asdict(c) for c in self.comparisons],
        }


def decide(
    old: Mapping[str, float], new: Mapping[str, float], metrics: Sequence[str], tolerance: Mapping[str, float] | None = None
) -> Decision:
    """Apply the rule to ``old`` and ``new`` metrics (``"<task>/<metric>"`` keys); ``metrics`` lists the keys compared."""
    if not metrics:
        raise ActiveLearningError("a promotion decision needs at least one metric to compare")
    tol = {**DEFAULT_TOLERANCE, **(tolerance or {})}
    comparisons, reasons = [], []
    for key in metrics:
        task, metric = key.split("/", 1)
        if key not in old or key not in new:
            raise ActiveLearningError(f"metric {key!r} is missing for the {'old' if key not in old else 'new'} model")
        o, n = float(old[key]), float(new[key])
        lower = metric in LOWER_IS_BETTER
        worse = (n - o) if lower else (o - n)
        improvement = -worse / max(abs(o), 1e-9)
        limit = float(tol.get(key, tol.get(metric, 0.0)))
        beyond = worse > limit
        comparisons.append(Comparison(task, metric, o, n, improvement, limit, beyond))
        if beyond:
            reasons.append(f"{key} is worse: {o:.4g} → {n:.4g} (tolerance {limit:g})")
    objective = sum(c.improvement for c in comparisons) / len(comparisons)
    if objective <= 0:
        reasons.append(f"no better on the objective (mean relative improvement {objective:+.2%})")
    promote = not reasons
    if promote:
        reasons.append(f"better on the objective ({objective:+.2%}) and no task worse beyond its tolerance")
    return Decision(promote, objective, tuple(comparisons), tuple(reasons))
