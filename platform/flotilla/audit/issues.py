"""cleanlab's ``Datalab`` over arrays: one shared kNN graph, row checks once, label checks per task.

:func:`detect_issues` is the audit's whole in-memory part on plain arrays, given the outputs already
(:func:`~flotilla.audit.arrays.find_issues` makes them with the probe first): it takes the
embeddings, each task's labels and *out-of-sample* outputs (:mod:`flotilla.audit.probe`, or a
model's predictions on data it never saw) and returns :class:`Issues`, one value per sample and check.

- **Row checks** (outlier, near-duplicate, non-iid ordering) do not depend on any label: one
  ``Datalab`` without labels runs them once, on the shared graph (:func:`~flotilla.audit.knn.knn_graph`).
  Near-duplicates are also looked for by image content (:mod:`~flotilla.audit.fingerprints`), where
  a model's embedding is the wrong ruler; a pair found either way is flagged.
- **Label checks** (label issues; for classification also class imbalance and underperforming
  groups) run in one ``Datalab`` per task, over that task's labelled rows only. When every row is
  labelled the shared graph is handed over as it is; otherwise the labelled rows' embeddings are
  (a sliced graph would leave rows with fewer than k neighbours).
- A regression task's label score is the residual in units of the residuals' spread
  (:func:`residual_spread`), so it scales to 50k samples.
- An underperforming-group check that cannot cluster the data (cleanlab reports "no meaningful
  clusters") is recorded as not computed, with cleanlab's reason, instead of failing the audit.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from flotilla.audit.fingerprints import content_duplicates
from flotilla.audit.knn import exact_duplicates, knn_graph, normalise
from flotilla.errors import SpecError

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix

ROW_CHECKS = ("outlier", "near_duplicate", "non_iid")
CLASS_CHECKS = ("label", "class_imbalance", "underperforming_group")
Say = Callable[[str], None]


@dataclass(frozen=True)
class TaskInput:
    """One task to audit: its labels (NaN where unlabelled) and out-of-sample outputs.

    ``outputs``: [n, C] class probabilities for ``binary`` / ``multiclass`` (a binary task's two
    columns are P(0), P(1)), [n] values for ``regression``; rows where the label is NaN are ignored.
    """

    name: str
    kind: str
    labels: np.ndarray
    outputs: np.ndarray

    @property
    def classification(self) -> bool:
        return self.kind != "regression"


@dataclass(frozen=True)
class TaskIssues:
    """One task's label check, per sample: flagged, score (lower = worse; NaN unlabelled), given label, suggestion."""

    name: str
    is_issue: np.ndarray
    score: np.ndarray
    given: np.ndarray
    suggested: np.ndarray


@dataclass(frozen=True)
class Issues:
    """Everything :func:`detect_issues` found, row-aligned with the ``sample_ids`` it was given."""

    sample_ids: tuple[str, ...]
    tasks: tuple[TaskIssues, ...]
    outlier: np.ndarray
    outlier_score: np.ndarray
    near_duplicate: np.ndarray
    near_duplicate_score: np.ndarray
    near_duplicate_of: tuple[str | None, ...]
    exact_duplicate_of: tuple[str | None, ...]
    dataset_issues: dict[str, dict[str, Any]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Flagged samples per issue type (``label:<task>``, ``outlier``, ``near_duplicate``, ``exact_duplicate``)."""
        out = {f"label:{t.name}": int(t.is_issue.sum()) for t in self.tasks}
        out["outlier"] = int(self.outlier.sum())
        out["near_duplicate"] = int(self.near_duplicate.sum())
        out["exact_duplicate"] = sum(d is not None for d in self.exact_duplicate_of)
        return out


def _run(lab: Any, what: str, **kwargs: Any) -> str:
    """``lab.find_issues(**kwargs)`` with cleanlab's own prints captured; returns them (they name a failed check's reason)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            lab.find_issues(**kwargs)
        except (ValueError, TypeError) as exc:
            raise SpecError(f"cleanlab could not audit {what}: {exc}") from None
    return buf.getvalue()


def _summary(lab: Any) -> dict[str, dict[str, Any]]:
    rows = lab.get_issue_summary().to_dict("records")
    return {str(r["issue_type"]): {"score": float(r["score"]), "flagged": int(r["num_issues"])} for r in rows}


def _not_computed(log: str, check: str) -> dict[str, Any]:
    reason = next((line.strip() for line in log.splitlines() if check in line and "Error" in line), "")
    return {"computed": False, "reason": reason.partition(":")[2].strip() or "cleanlab could not run it"}


def _row_checks(n: int, graph: csr_matrix, say: Say) -> tuple[Any, dict[str, dict[str, Any]]]:
    from cleanlab import Datalab

    say(f"outliers, near-duplicates and ordering over {n} samples")
    lab = Datalab(data={"row": np.arange(n)}, verbosity=0)
    log = _run(lab, "the rows", knn_graph=graph, issue_types={c: {} for c in ROW_CHECKS})
    summary = _summary(lab)
    dataset = {"non_iid": summary.get("non_iid", _not_computed(log, "non_iid"))}
    if "non_iid" in summary:
        dataset["non_iid"]["p_value"] = float(lab.get_info("non_iid").get("p-value", float("nan")))
    return lab, dataset


def residual_spread(labels: np.ndarray, predictions: np.ndarray) -> float:
    """A robust scale of the residuals (1.4826 × their median absolute deviation; the std, or 1, when that is 0).

    A regression task's label check scores ``exp(-|residual| / spread)``: cleanlab's default
    ("outre") compares each residual with half the dataset's, an n × n/2 matrix — 10 GB at 50k
    samples — while the residual score is linear and, measured in the residuals' own spread,
    independent of the label's unit (years, or a 0–1 score).
    """
    r = np.asarray(labels, dtype=np.float64) - np.asarray(predictions, dtype=np.float64)
    mad = 1.4826 * float(np.median(np.abs(r - np.median(r))))
    return mad if mad > 0 else (float(r.std()) or 1.0)


def output_quality(task: TaskInput, rows: np.ndarray) -> dict[str, Any]:
    """How good the out-of-sample outputs are on the labelled ``rows``, beside what guessing gets.

    Confident learning flags a label when the outputs doubt it, so the flags are only as good as the
    outputs: a probe right on 40 % of 7 emotions flags a third of the data. The audit records this so
    that a reader (and the CLI) can tell a data problem from a model too weak to judge the labels.
    Classification: accuracy vs the majority class's share; regression: the skill
    ``1 − MAE / MAE(predicting the median)`` vs 0.
    """
    y = np.asarray(task.labels, dtype=np.float64)[rows]
    out = task.outputs[rows]
    if task.classification:
        _, counts = np.unique(y.astype(np.int64), return_counts=True)
        accuracy = float((out.argmax(axis=1) == y.astype(np.int64)).mean())
        return {"measure": "accuracy", "score": accuracy, "chance": float(counts.max() / counts.sum())}
    baseline = float(np.abs(y - np.median(y)).mean()) or 1.0
    return {"measure": "skill", "score": 1.0 - float(np.abs(y - out).mean()) / baseline, "chance": 0.0}


def weak_outputs(quality: dict[str, Any]) -> bool:
    """Outputs that close less than a quarter of the gap between guessing and perfect: their label flags mislead."""
    return bool(quality["score"] < quality["chance"] + 0.25 * (1.0 - quality["chance"]))


def _label_check(
    task: TaskInput, features: np.ndarray, graph: csr_matrix, say: Say
) -> tuple[TaskIssues, dict[str, dict[str, Any]]]:
    from cleanlab import Datalab

    n = len(task.labels)
    rows = np.flatnonzero(~np.isnan(task.labels))
    given = np.asarray(task.labels, dtype=np.float64)
    is_issue, score = np.zeros(n, dtype=bool), np.full(n, np.nan)
    suggested = task.outputs.argmax(axis=1).astype(np.float64) if task.classification else task.outputs.astype(np.float64)
    suggested = np.where(np.isnan(given), np.nan, suggested) if len(rows) < n else suggested
    if len(rows) == 0:
        return TaskIssues(task.name, is_issue, score, given, suggested), {}
    say(f"label checks for {task.name!r} over {len(rows)} labelled samples")
    where = {"knn_graph": graph} if len(rows) == n else {"features": features[rows]}
    if task.classification:
        y = given[rows].astype(np.int64)
        present = np.unique(y)  # Datalab numbers the classes it sees 0..K-1: give it just those columns
        probs = np.clip(task.outputs[rows][:, present], 1e-12, None)
        lab = Datalab(data={"label": y}, label_name="label", task="classification", verbosity=0)
        checks = CLASS_CHECKS if len(present) > 1 else ("label",)
        log = _run(
            lab,
            f"task {task.name!r}",
            pred_probs=probs / probs.sum(axis=1, keepdims=True),
            issue_types={c: {} for c in checks},
            **where,
        )
    else:
        checks = ("label",)
        spread = residual_spread(given[rows], task.outputs[rows])
        lab = Datalab(data={"label": given[rows] / spread}, label_name="label", task="regression", verbosity=0)
        values = task.outputs[rows].astype(np.float64) / spread
        log = _run(lab, f"task {task.name!r}", pred_probs=values, issue_types={"label": {"method": "residual"}})
    found = lab.get_issues("label")
    is_issue[rows] = found["is_label_issue"].to_numpy(dtype=bool)
    score[rows] = found["label_score"].to_numpy(dtype=np.float64)
    summary = _summary(lab)
    dataset = {f"{c}:{task.name}": summary.get(c, _not_computed(log, c)) for c in checks if c != "label"}
    dataset[f"outputs:{task.name}"] = output_quality(task, rows) | {"flagged": int(is_issue.sum())}
    return TaskIssues(task.name, is_issue, score, given, suggested), dataset


def detect_issues(
    sample_ids: Sequence[str],
    embeddings: np.ndarray,
    tasks: Sequence[TaskInput],
    *,
    sha256: Sequence[str] | None = None,
    k: int = 10,
    graph: csr_matrix | None = None,
    prints: np.ndarray | None = None,
    say: Say | None = None,
) -> Issues:
    """Audit ``tasks``' labels and the samples themselves on arrays; see the module docstring.

    ``embeddings`` [n, d] (the model's, before normalising); ``sha256`` the images' hashes for
    exact duplicates (None: not checked); ``graph``: a kNN graph already built (else one of ``k``);
    ``prints``: the images' content fingerprints (:mod:`flotilla.audit.fingerprints`) — a pair near
    by content is a near-duplicate too, whatever the embeddings say (None: embeddings only).
    """
    say = say or (lambda _: None)
    n = len(sample_ids)
    if embeddings.shape[0] != n or any(len(t.labels) != n or len(t.outputs) != n for t in tasks):
        raise SpecError("detect_issues: embeddings, labels and outputs must have one row per sample id")
    features = normalise(embeddings)
    if graph is None:
        say(f"building the {k}-nearest-neighbour graph of {n} embeddings")
        graph = knn_graph(features, k)
    rows_lab, dataset = _row_checks(n, graph, say)
    outliers = rows_lab.get_issues("outlier")
    dups = rows_lab.get_issues("near_duplicate")
    near = dups["is_near_duplicate_issue"].to_numpy(dtype=bool)
    near_score = dups["near_duplicate_score"].to_numpy(dtype=np.float64)
    nearest = np.asarray(rows_lab.get_info("near_duplicate")["nearest_neighbor"], dtype=np.int64)
    if prints is not None:
        say(f"near-duplicates by image content over {n} fingerprints")
        content = content_duplicates(prints)
        nearest = np.where(content.is_duplicate, content.nearest, nearest)
        near_score = np.where(content.is_duplicate, np.minimum(near_score, content.score), near_score)
        near = near | content.is_duplicate
    task_issues = []
    for task in tasks:
        found, more = _label_check(task, features, graph, say)
        task_issues.append(found)
        dataset |= more
    return Issues(
        tuple(sample_ids),
        tuple(task_issues),
        outliers["is_outlier_issue"].to_numpy(dtype=bool),
        outliers["outlier_score"].to_numpy(dtype=np.float64),
        near,
        near_score,
        tuple(sample_ids[int(nearest[i])] if near[i] else None for i in range(n)),
        tuple(exact_duplicates(sample_ids, sha256)) if sha256 is not None else (None,) * n,
        dataset,
    )
