""":class:`~flotilla.audit.issues.Issues` as the findings table :mod:`flotilla.data.findings` defines.

Columns, in order: ``sample_id``, ``split``, each task's four (:func:`~flotilla.data.findings.task_columns`),
then the rest of :data:`~flotilla.data.findings.FINDINGS_COLUMNS`. An exact duplicate's flag
carries its near-duplicate score (same bytes: as near as it gets), so ``worst_score`` ranks it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from flotilla.audit.issues import Issues
from flotilla.data.findings import FINDINGS_COLUMNS, task_columns

if TYPE_CHECKING:
    import pyarrow as pa


def row_flags(issues: Issues) -> tuple[list[list[str]], np.ndarray]:
    """Per row, the flags set and the lowest of their scores (1.0: none).

    Flags: ``label:<task>``, ``outlier``, ``near_duplicate``, ``exact_duplicate``.
    """
    n = len(issues.sample_ids)
    flags: list[list[str]] = [[] for _ in range(n)]
    worst = np.ones(n)

    def mark(rows: np.ndarray, name: str, scores: np.ndarray) -> None:
        for i in np.flatnonzero(rows):
            flags[i].append(name)
            worst[i] = min(worst[i], float(np.nan_to_num(scores[i], nan=1.0)))

    for t in issues.tasks:
        mark(t.is_issue, f"label:{t.name}", t.score)
    mark(issues.outlier, "outlier", issues.outlier_score)
    mark(issues.near_duplicate, "near_duplicate", issues.near_duplicate_score)
    mark(np.array([d is not None for d in issues.exact_duplicate_of], dtype=bool), "exact_duplicate", issues.near_duplicate_score)
    return flags, worst


def findings_table(issues: Issues, splits: Sequence[str]) -> pa.Table:
    """The findings table of ``issues`` (``splits``: each sample's split, row-aligned)."""
    import pyarrow as pa

    def score(values: np.ndarray) -> pa.Array:
        return pa.array(values.astype(np.float32), pa.float32(), from_pandas=True)

    def maybe(values: np.ndarray) -> pa.Array:
        return pa.array(values.astype(np.float64), pa.float64(), from_pandas=True)

    flags, worst = row_flags(issues)
    columns: dict[str, pa.Array] = {
        "sample_id": pa.array(list(issues.sample_ids), pa.string()),
        "split": pa.array(list(splits), pa.string()),
    }
    for t in issues.tasks:
        issue, label_score, given, suggested = task_columns(t.name)
        columns[issue] = pa.array(t.is_issue, pa.bool_())
        columns[label_score] = score(t.score)
        columns[given] = maybe(t.given)
        columns[suggested] = maybe(t.suggested)
    columns |= {
        "outlier": pa.array(issues.outlier, pa.bool_()),
        "outlier_score": score(issues.outlier_score),
        "near_duplicate": pa.array(issues.near_duplicate, pa.bool_()),
        "near_duplicate_score": score(issues.near_duplicate_score),
        "near_duplicate_of": pa.array(list(issues.near_duplicate_of), pa.string()),
        "exact_duplicate_of": pa.array(list(issues.exact_duplicate_of), pa.string()),
        "issues": pa.array(flags, pa.list_(pa.string())),
        "worst_score": score(worst),
    }
    assert set(FINDINGS_COLUMNS) <= set(columns)
    return pa.table(columns)
