"""Which flagged samples a review shows, and what each one is: pure, read from the findings table.

A review takes the rows an audit flagged (:mod:`flotilla.data.findings`), optionally only some
issues (``label`` matches every ``label:<task>``; ``outlier``, ``near_duplicate``,
``exact_duplicate`` match themselves), worst first (ascending ``worst_score``: cleanlab's scores are
low for likely problems), at most ``limit`` of them. Each becomes a :class:`FlaggedRow`: its current
labels, the model's out-of-sample suggestion for the tasks flagged, and the sample it duplicates.

Tasks are the audit's (``summary.tasks``), named by their label column. What a reviewer may set for
each is a :class:`ReviewTask`: choices for a categorical column (its class names), a bounded number
for age, an unbounded number for any other continuous column.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flotilla.data.findings import task_columns
from flotilla.data.schema import FACE_SCHEMA, LabelSchema
from flotilla.errors import AuditError

if TYPE_CHECKING:
    import pyarrow as pa

ISSUE_KINDS = ("label", "outlier", "near_duplicate", "exact_duplicate")


@dataclass(frozen=True)
class ReviewTask:
    """One label column as a reviewer sets it: a choice among ``classes``, or a number in ``low..high``."""

    column: str
    classes: tuple[str, ...] = ()
    low: float = -math.inf
    high: float = math.inf

    @property
    def categorical(self) -> bool:
        return bool(self.classes)

    def show(self, value: float | None) -> str:
        """A stored value as a reviewer reads it: the class name, or the number."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "unknown"
        if self.categorical:
            i = int(value)
            return self.classes[i] if 0 <= i < len(self.classes) else f"class {i}"
        return f"{value:.1f}".rstrip("0").rstrip(".")

    def same(self, a: float | None, b: float | None, tolerance: float = 0.0) -> bool:
        if a is None or b is None:
            return a is b
        return int(a) == int(b) if self.categorical else abs(float(a) - float(b)) <= tolerance


def review_tasks(tasks: Sequence[str], schema: LabelSchema = FACE_SCHEMA) -> tuple[ReviewTask, ...]:
    """The audit's tasks as review controls, shaped by the dataset's declared ``schema``.

    A binary or categorical column is a choice among its declared classes (class codes when it names
    none), a regression column a number in its declared range; a column the schema does not declare
    is a plain number.
    """
    out = []
    for t in tasks:
        col = schema.get(t)
        if col is None:
            out.append(ReviewTask(t))
        elif col.kind == "regression":
            low, high = col.range or (-math.inf, math.inf)
            out.append(ReviewTask(t, low=low, high=high))
        else:
            out.append(ReviewTask(t, tuple(col.classes)))
    return tuple(out)


@dataclass(frozen=True)
class FlaggedRow:
    """One flagged sample as the review shows it."""

    sample_id: str
    split: str
    issues: tuple[str, ...]
    worst_score: float
    given: Mapping[str, float | None] = field(default_factory=dict)  # task → current label
    suggested: Mapping[str, float | None] = field(default_factory=dict)  # flagged task → the model's suggestion
    duplicate_of: str | None = None

    @property
    def label_flags(self) -> tuple[str, ...]:
        """The tasks whose label the audit doubts (the ones a reviewer can accept a suggestion for)."""
        return tuple(i.split(":", 1)[1] for i in self.issues if i.startswith("label:"))

    @property
    def duplicate(self) -> bool:
        return "near_duplicate" in self.issues or "exact_duplicate" in self.issues


def check_issues(issues: Sequence[str] | None) -> tuple[str, ...] | None:
    """``issues`` as a filter, each one a known issue kind or ``label:<task>``; None: every flag."""
    if issues is None:
        return None
    bad = [i for i in issues if i not in ISSUE_KINDS and not (i.startswith("label:") and len(i) > 6)]
    if bad:
        raise AuditError(
            f"unknown issue(s) {', '.join(map(repr, bad))}",
            hint=f"choose among {', '.join(ISSUE_KINDS)} or label:<task> (e.g. label:emotion)",
        )
    return tuple(issues)


def _matches(flags: Sequence[str], wanted: tuple[str, ...] | None) -> bool:
    if wanted is None:
        return bool(flags)
    return any(f == w or f.startswith(w + ":") for f in flags for w in wanted)


def _value(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def flagged_rows(
    findings: pa.Table, tasks: Sequence[str], *, issues: Sequence[str] | None = None, limit: int | None = None
) -> list[FlaggedRow]:
    """The rows to review: flagged (by ``issues`` when given), worst first, at most ``limit``."""
    wanted = check_issues(issues)
    if limit is not None and limit < 1:
        raise AuditError(f"limit must be at least 1, got {limit}")
    data = findings.to_pylist()
    chosen = [r for r in data if _matches(r.get("issues") or [], wanted)]
    chosen.sort(key=lambda r: (float(r.get("worst_score", 1.0)), str(r["sample_id"])))
    return [to_row(r, tasks) for r in chosen[:limit]]


def to_row(r: Mapping[str, Any], tasks: Sequence[str]) -> FlaggedRow:
    """One findings row (a dict of its columns) as a :class:`FlaggedRow`."""
    flags = tuple(str(i) for i in r.get("issues") or [])
    given, suggested = {}, {}
    for t in tasks:
        _, _, given_col, suggested_col = task_columns(t)
        given[t] = _value(r.get(given_col))
        if f"label:{t}" in flags:
            suggested[t] = _value(r.get(suggested_col))
    dup = r.get("exact_duplicate_of") or (r.get("near_duplicate_of") if r.get("near_duplicate") else None)
    return FlaggedRow(
        str(r["sample_id"]), str(r.get("split") or ""), flags, float(r.get("worst_score", 1.0)), given, suggested, dup
    )
