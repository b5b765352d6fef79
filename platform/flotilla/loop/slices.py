"""The columns a monitor slices by — age band and gender — from labels where both sides have them, else from predictions.

A slice is only comparable when it is defined the same way on both sides. Incoming data usually
has no labels, so by default both sides are sliced by what the model *predicted* (``age band
(predicted)``): a slice then means "faces the model places there", which is what a production
system routes on anyway. Where the current data is fully labelled for a column (a labelled
sample that arrived later), both sides use the labels. A family without an age or gender task
has no such column, and the monitor reports no slices rather than inventing one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from flotilla.data.layout import GENDERS
from flotilla.data.validate import AGE_BANDS
from flotilla.errors import MonitoringError
from flotilla.models.tasks import TaskSpec

if TYPE_CHECKING:
    import pyarrow as pa

SLICE_LABELS = ("age", "gender")


def age_band(values: np.ndarray) -> np.ndarray:
    """Ages in years → the data report's ten-year bands ("0-9" ... "80+"); NaN → ""."""
    v = np.asarray(values, dtype=np.float64)
    idx = np.clip(np.floor(np.nan_to_num(v, nan=0.0) / 10), 0, len(AGE_BANDS) - 1).astype(np.int64)
    return np.where(np.isnan(v), "", np.asarray(AGE_BANDS, dtype=object)[idx]).astype(str)


def gender_name(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    ok = ~np.isnan(v) & (v >= 0) & (v < len(GENDERS))
    names = np.asarray(GENDERS, dtype=object)[np.where(ok, v, 0).astype(np.int64)]
    return np.where(ok, names, "").astype(str)


def aligned_labels(sample_ids: Sequence[str], labels: pa.Table, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """``labels``' ``columns`` in the order of ``sample_ids`` as float arrays, NaN where unlabelled (or absent)."""
    index = {sid: i for i, sid in enumerate(labels.column("sample_id").to_pylist())}
    missing = [s for s in sample_ids if s not in index]
    if missing:
        raise MonitoringError(
            f"{len(missing)} predicted sample(s) are not in the dataset's labels table, e.g. {missing[:3]}",
            hint="the predictions were made on other data than the dataset they name: run flotilla infer again",
        )
    rows = np.fromiter((index[s] for s in sample_ids), dtype=np.int64, count=len(sample_ids))
    out: dict[str, np.ndarray] = {}
    for col in columns:
        if col not in labels.column_names:
            out[col] = np.full(len(rows), np.nan)
            continue
        values = labels.column(col).to_numpy(zero_copy_only=False).astype(np.float64)
        out[col] = values[rows]
    return out


@dataclass(frozen=True)
class SliceColumns:
    """Slice values per sample on both sides, and where each column came from (``labels`` or ``predictions``)."""

    reference: Mapping[str, np.ndarray]
    current: Mapping[str, np.ndarray]
    source: Mapping[str, str]


def _from_predictions(task: TaskSpec, decisions: Mapping[str, np.ndarray]) -> np.ndarray:
    values = np.asarray(decisions[task.name], dtype=np.float64)
    return age_band(values) if (task.label or task.name) == "age" else gender_name(values)


def slice_columns(
    tasks: Sequence[TaskSpec],
    reference_decisions: Mapping[str, np.ndarray],
    current_decisions: Mapping[str, np.ndarray],
    reference_labels: Mapping[str, np.ndarray],
    current_labels: Mapping[str, np.ndarray],
) -> SliceColumns:
    """Age band and gender per sample on both sides, from labels where both are fully labelled, else predicted.

    ``*_decisions``: per task, the predicted value or class id; ``*_labels``: per label column, NaN where unlabelled.
    """
    ref: dict[str, np.ndarray] = {}
    cur: dict[str, np.ndarray] = {}
    source: dict[str, str] = {}
    by_label = {t.label or t.name: t for t in tasks}
    for label in SLICE_LABELS:
        name = "age band" if label == "age" else label
        to_slice = age_band if label == "age" else gender_name
        rl, cl = reference_labels.get(label), current_labels.get(label)
        if rl is not None and cl is not None and len(cl) and not np.isnan(rl).any() and not np.isnan(cl).any():
            ref[name], cur[name], source[name] = to_slice(rl), to_slice(cl), "labels"
            continue
        task = by_label.get(label)
        if task is None or (label == "age") != (task.kind == "regression"):
            continue
        ref[f"{name} (predicted)"] = _from_predictions(task, reference_decisions)
        cur[f"{name} (predicted)"] = _from_predictions(task, current_decisions)
        source[f"{name} (predicted)"] = "predictions"
    return SliceColumns(ref, cur, source)
