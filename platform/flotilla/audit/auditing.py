"""``audit_dataset``: a dataset at a commit, judged by a model's embeddings, findings committed beside the data.

1. **Plan** (nothing written): the model resolves to its card and tasks, the ref to the dataset's
   content commit; the method, the tasks and their labels are checked. ``method="model"`` on the
   model's own training commit is refused (its predictions there are not out-of-sample).
2. **Predictions**: found again, or made on Ray Data and committed by
   :func:`~flotilla.loop.inference.ensure_predictions` — the embeddings (and, for ``model``, the
   outputs) come from there.
3. **Audit** in memory (:func:`~flotilla.audit.inputs.task_inputs`, then
   :func:`~flotilla.audit.issues.detect_issues`), and the image hashes from the shards for exact duplicates.
4. **Commit** ``findings.parquet`` and ``summary.json`` (:mod:`flotilla.data.findings`) on
   ``audit-<dataset>-<audit_id>``, cut from the audited commit through ``repo.transact``, with an
   :class:`~flotilla.lineage.AuditRun` record. A failure before the commit deletes the branch.
"""

from __future__ import annotations

import io
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from flotilla.audit.fingerprints import SIDE, fingerprints
from flotilla.audit.inputs import check_method, task_inputs
from flotilla.audit.issues import Issues, detect_issues
from flotilla.audit.table import findings_table
from flotilla.data.findings import FINDINGS, SUMMARY, AuditSummary, audit_branch, audit_dir
from flotilla.data.layout import SPLITS
from flotilla.data.loader import HubDataset
from flotilla.data.pinning import DataRef, resolve_data
from flotilla.errors import SpecError
from flotilla.hub.client import Hub
from flotilla.hub.experiment import Retention
from flotilla.lineage import AuditRun, ModelCard
from flotilla.loop.inference import ensure_predictions
from flotilla.loop.predictions import content_commit, prediction_column, read_predictions
from flotilla.loop.slices import aligned_labels
from flotilla.models.tasks import TaskSpec, resolve_tasks
from flotilla.names import check_branch_id
from flotilla.registry import ModelLocation, read_card, resolve

if TYPE_CHECKING:
    import pyarrow as pa

Say = Callable[[str], None]


@dataclass(frozen=True)
class AuditResult:
    """What one audit found and where it is committed: the summary, the branch and commit, the findings table."""

    summary: AuditSummary
    branch: str
    commit: str
    findings: pa.Table

    def worst(self, n: int = 10) -> list[dict[str, Any]]:
        """The ``n`` flagged rows with the lowest ``worst_score``, as dicts."""
        import pyarrow.compute as pc

        flagged = self.findings.filter(pc.greater(pc.list_value_length(self.findings.column("issues")), 0))
        rows: list[dict[str, Any]] = flagged.sort_by([("worst_score", "ascending")]).slice(0, n).to_pylist()
        return rows


@dataclass(frozen=True)
class AuditPlan:
    """What an audit reads, fixed and checked before anything is written."""

    model: ModelLocation
    card: ModelCard
    data: DataRef
    split: str | None
    tasks: tuple[TaskSpec, ...]
    method: str


def new_audit_id() -> str:
    """Sortable by time (UTC, to the second), unique by a short random tail: ``20261206T234501-3fa2``."""
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"


def _say(message: str) -> None:
    print(f"[flotilla] audit: {message}", file=sys.stderr, flush=True)


def _pick_tasks(card: ModelCard, names: Sequence[str] | None) -> tuple[TaskSpec, ...]:
    tasks = resolve_tasks(list(card.tasks))
    if names is None:
        return tuple(tasks)
    known = {t.name: t for t in tasks}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise SpecError(f"the model has no task(s) {', '.join(unknown) or '(none named)'}", hint=f"pick among {', '.join(known)}")
    return tuple(known[n] for n in names)


def _check_labels(data: DataRef, labels: pa.Table, tasks: Sequence[TaskSpec], split: str | None) -> None:
    import pyarrow.compute as pc

    rows = labels if split is None else labels.filter(pc.equal(labels.column("split"), split))
    for t in tasks:
        column = t.label or t.name
        if column not in rows.column_names or rows.column(column).null_count == rows.num_rows:
            raise SpecError(
                f"dataset {data.dataset!r} at {data.commit[:12]} ({split or 'all'}) has no {column!r} labels "
                f"to audit task {t.name!r}",
                hint="label it first, or leave the task out (tasks=[...] / --task)",
            )


def plan_audit(
    hub: Hub, ref: str, dataset: str, model: str, *, repo: str, split: str | None, tasks: Sequence[str] | None, method: str
) -> AuditPlan:
    """Resolve and check everything an audit reads; raise before anything is written."""
    check_method(method)
    if split is not None and split not in SPLITS:
        raise SpecError(f"unknown split {split!r}", hint=f"use one of {', '.join(SPLITS)}, or none for every sample")
    location = resolve(hub, model, repo)
    card = read_card(hub.repo(location.repo), location)
    data = content_commit(hub.repo(repo), resolve_data(hub, repo, ref, dataset))
    check_branch_id(audit_branch(dataset, new_audit_id()))
    picked = _pick_tasks(card, tasks)
    _check_labels(data, HubDataset(data, hub.credentials).labels, picked, split)
    if method == "model":
        trained = content_commit(
            hub.repo(card.data.repo), DataRef(card.data.repo, card.data.commit, card.data.dataset, card.data.ref)
        )
        if (trained.repo, trained.dataset, trained.commit) == (data.repo, data.dataset, data.commit):
            raise SpecError(
                f"{dataset}@{data.commit[:12]} is {location.name}'s own training data: its predictions there are not "
                "out-of-sample (it learnt those labels, wrong ones included)",
                hint="use method 'probe' (--method probe), or audit data the model never saw",
            )
    return AuditPlan(location, card, data, split, picked, method)


def _content(hub: Hub, data: DataRef, sample_ids: Sequence[str], say: Say) -> tuple[list[str], np.ndarray]:
    """Per sample (in ``sample_ids``' order): its image's sha256 and its content fingerprint, one shard at a time."""
    shards = HubDataset(data, hub.credentials)
    hashes: dict[str, str] = {}
    prints: dict[str, np.ndarray] = {}
    for i, shard in enumerate(shards.manifest.shards):
        table = shards.read_shard(shard).select(["sample_id", "sha256"])
        hashes |= dict(zip(table.column("sample_id").to_pylist(), table.column("sha256").to_pylist(), strict=True))
        ids, images = shards.shard_samples(i)
        if ids:
            prints |= dict(zip(ids, fingerprints(np.stack(images)), strict=True))
        say(f"image hashes and fingerprints: shard {i + 1}/{len(shards.manifest.shards)}")
    blank = np.zeros(SIDE * SIDE * 3, dtype=np.float32)
    return [hashes.get(s, f"missing:{s}") for s in sample_ids], np.stack([prints.get(s, blank) for s in sample_ids])


def _parquet(table: pa.Table) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def audit_dataset(
    hub: Hub | None,
    ref: str,
    dataset: str,
    model: str,
    *,
    repo: str,
    split: str | None = None,
    tasks: Sequence[str] | None = None,
    method: str = "probe",
    folds: int = 5,
    k: int = 10,
    seed: int = 0,
    infer_options: dict[str, Any] | None = None,
    on_progress: Say | None = None,
) -> AuditResult:
    """Audit ``dataset`` at ``ref`` in ``repo`` with ``model``'s embeddings; commit the findings on an ``audit-*`` branch.

    ``model``: a run id, ``<family>@<alias>`` or ``lakefs://`` URI. ``tasks``: a subset of the
    model's tasks (default all; each needs labels in the data). ``method``: ``probe`` (a
    ``folds``-fold linear probe on the frozen embeddings: out-of-sample on any data) or ``model``
    (the model's own predictions: only for data it never saw). ``k``: neighbours in the shared kNN
    graph. ``infer_options``: :func:`~flotilla.loop.inference.infer`'s options for predictions it
    has to make. ``on_progress``: one line per step (default: stderr).
    """
    t0 = time.monotonic()
    hub = hub or Hub()
    say = on_progress or _say
    plan = plan_audit(hub, ref, dataset, model, repo=repo, split=split, tasks=tasks, method=method)
    found = ensure_predictions(
        hub, plan.model, plan.data, split, first=(ref,), run=dict(infer_options or {}), say=say, what="audit"
    )
    table = read_predictions(hub.repo(repo), found)
    ids = [str(s) for s in table.column("sample_id").to_pylist()]
    say(f"{len(ids)} samples of {dataset}@{plan.data.commit[:12]}: reading labels and image hashes")
    labels_table = HubDataset(plan.data, hub.credentials).labels
    labels = aligned_labels(ids, labels_table, sorted({t.label or t.name for t in plan.tasks}))
    index = {s: i for i, s in enumerate(labels_table.column("sample_id").to_pylist())}
    all_splits = labels_table.column("split").to_pylist()
    splits = [all_splits[index[s]] for s in ids]
    embeddings = prediction_column(table, "embedding", "audit")
    outputs = {}
    if method == "model":
        for t in plan.tasks:
            column = t.name if t.kind == "regression" else f"{t.name}_probs"
            outputs[column] = prediction_column(table, column, "audit")
    inputs = task_inputs(plan.tasks, labels, embeddings, outputs, method=method, folds=folds, seed=seed, say=say)
    sha256, prints = _content(hub, plan.data, ids, say)
    issues = detect_issues(ids, embeddings, inputs, sha256=sha256, prints=prints, k=k, say=say)
    return _commit(hub, plan, issues, splits, repo=repo, seconds=time.monotonic() - t0, say=say)


def _commit(hub: Hub, plan: AuditPlan, issues: Issues, splits: list[str], *, repo: str, seconds: float, say: Say) -> AuditResult:
    audit_id = new_audit_id()
    findings = findings_table(issues, splits)
    counts = issues.counts()
    summary = AuditSummary(
        audit_id=audit_id,
        repo=repo,
        dataset=plan.data.dataset,
        data_commit=plan.data.commit,
        model_uri=plan.model.uri,
        model_data_commit=plan.card.data.commit,
        method=plan.method,
        tasks=tuple(t.label or t.name for t in plan.tasks),  # the findings' columns: label columns
        rows=findings.num_rows,
        issues=counts,
        dataset_issues=issues.dataset_issues,
        seconds=round(seconds, 3),
        created=time.time(),
    )
    record = AuditRun(
        audit_id,
        plan.data.dataset,
        plan.data.commit,
        plan.model.uri,
        plan.card.data.commit,
        plan.method,
        plan.split or "",
        findings.num_rows,
        counts,
    )
    branch = audit_branch(plan.data.dataset, audit_id)
    flagged = ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "nothing flagged"
    exp = hub.repo(repo).transact(
        audit_id,
        plan.data.commit,
        prefix="audit-",
        message=f"Audit of {plan.data.dataset}@{plan.data.commit[:12]} by {plan.model.name} ({plan.method}): {flagged}",
        metadata=record.to_metadata(),
        retention=Retention(on_success="keep", on_failure="delete"),
        branch=branch,
    )
    with exp:
        exp.put(audit_dir(plan.data.dataset, audit_id) + FINDINGS, _parquet(findings))
        exp.put(audit_dir(plan.data.dataset, audit_id) + SUMMARY, summary.to_json())
    say(f"findings committed on {branch!r} under {summary.path}")
    return AuditResult(summary, exp.branch, exp.commit_id or "", findings)
