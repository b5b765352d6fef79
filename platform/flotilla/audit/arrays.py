"""The audit on plain arrays, probe included: what ``bench/audit.py`` and a notebook call.

:func:`find_issues` takes embeddings and labels (no hub, no Ray, no model file), makes each task's
out-of-sample outputs with the cross-validated probe (:mod:`flotilla.audit.probe`) unless given
them, runs :func:`~flotilla.audit.issues.detect_issues` and returns the findings table of
:mod:`flotilla.data.findings` — the very table :func:`~flotilla.audit.auditing.audit_dataset` commits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from flotilla.audit.fingerprints import fingerprints
from flotilla.audit.issues import TaskInput, detect_issues
from flotilla.audit.probe import probe_probabilities, probe_values
from flotilla.audit.table import findings_table
from flotilla.errors import SpecError

if TYPE_CHECKING:
    import pyarrow as pa

KINDS = ("regression", "binary", "multiclass")


def _classes(kind: str, labels: np.ndarray, given: int | None) -> int:
    if kind == "binary":
        return 2
    if given is not None:
        return given
    return int(np.nanmax(labels)) + 1 if np.isfinite(labels).any() else 1


def find_issues(
    sample_ids: Sequence[str],
    embeddings: np.ndarray,
    *,
    labels: Mapping[str, np.ndarray],
    kinds: Mapping[str, str],
    outputs: Mapping[str, np.ndarray] | None = None,
    num_classes: Mapping[str, int] | None = None,
    sha256: Sequence[str] | None = None,
    images: np.ndarray | Sequence[np.ndarray] | None = None,
    splits: Sequence[str] | None = None,
    folds: int = 5,
    k: int = 10,
    seed: int = 0,
    say: Callable[[str], None] | None = None,
) -> pa.Table:
    """Audit ``labels`` (per label column; NaN where unlabelled) against ``embeddings``; the findings table.

    ``kinds``: per column, ``regression``, ``binary`` or ``multiclass``. ``outputs``: out-of-sample
    outputs per column ([n, C] probabilities or [n] values) to use instead of the probe — only for
    samples the model that made them never learnt. ``num_classes``: per multiclass column (default:
    the largest label + 1). ``images``: the samples' images (uint8 [H, W, 3] each), for near-duplicates
    by content (:mod:`~flotilla.audit.fingerprints`; None: by embeddings only). ``splits``: per sample
    (default ``""``).
    """
    unknown = {c: kd for c, kd in kinds.items() if kd not in KINDS}
    if unknown or set(kinds) != set(labels):
        raise SpecError(f"find_issues: kinds must name each label column once as one of {', '.join(KINDS)}; got {dict(kinds)}")
    x = np.asarray(embeddings, dtype=np.float64)
    tasks = []
    for column, kind in kinds.items():
        y = np.asarray(labels[column], dtype=np.float64)
        if outputs is not None and column in outputs:
            out = np.asarray(outputs[column], dtype=np.float64)
        elif kind == "regression":
            out = probe_values(x, y, folds=folds, seed=seed, what=f"column {column!r}")
        else:
            c = _classes(kind, y, (num_classes or {}).get(column))
            out = probe_probabilities(x, y, c, folds=folds, seed=seed, what=f"column {column!r}")
        tasks.append(TaskInput(column, kind, y, out))
    prints = fingerprints(images) if images is not None else None
    issues = detect_issues(sample_ids, x, tasks, sha256=sha256, k=k, prints=prints, say=say)
    return findings_table(issues, list(splits) if splits is not None else [""] * len(sample_ids))
