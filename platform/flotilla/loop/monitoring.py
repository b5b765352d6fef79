"""Drift monitoring anchored to the training commit: ``monitor(hub, "face-family@production", repo="faces", current="main")``.

The reference is never a window someone picked: it is the model's own validation split at the very
commit its card says it was trained on. Each run:

1. **Pins** both sides to their dataset's content commit (:func:`~flotilla.loop.predictions.content_commit`).
   Current data that *is* the training data is answered "no drift" at once, with nothing run.
2. **Finds or makes predictions** for each side (:func:`~flotilla.loop.predictions.find_predictions`;
   missing ones are made by :func:`~flotilla.loop.inference.infer` on Ray Data and committed, so
   the next run over the same data finds them and costs seconds).
3. **Tests** (:mod:`~flotilla.loop.drift`): MMD on the model's embeddings, each task's prediction
   shift, combined under Holm at ``alpha`` into one :class:`~flotilla.loop.drift.DriftVerdict`; per
   slice (age band, gender: :mod:`~flotilla.loop.slices`) the change of each slice's share and MMD
   inside each slice; with ``ground_truth``, each task's metric on the labelled current samples
   against the reference with bootstrap intervals (:mod:`~flotilla.loop.groundtruth`).
4. **Reports** (:mod:`~flotilla.loop.report`): JSON, HTML and PNGs with the most atypical current
   faces, written locally and committed under ``monitoring/`` on a ``monitor-*`` branch cut from the
   current data's commit, with a :class:`~flotilla.lineage.MonitorRun` record (model, both commits,
   verdict); merged into ``merge_into`` when asked.

Faults: nothing is written before the tests have run; the report's branch is deleted if its commit
fails, so a killed run leaves at most committed predictions (valid, and reused by the rerun).
"""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flotilla.data.loader import HubDataset
from flotilla.data.pinning import DataRef, resolve_data
from flotilla.errors import MonitoringError, SpecError
from flotilla.hub.client import Hub
from flotilla.hub.experiment import Retention
from flotilla.lineage import ModelCard, MonitorRun
from flotilla.loop.drift import DEFAULT_ALPHA, DriftVerdict, SliceShare, prediction_shift, share_shift, slice_shift, verdict
from flotilla.loop.examples import atypicality, load_images
from flotilla.loop.groundtruth import GroundTruth, ground_truth
from flotilla.loop.inference import ensure_predictions
from flotilla.loop.predictions import PredictionSet, content_commit, describe, prediction_column, read_predictions
from flotilla.loop.report import render_report
from flotilla.loop.slices import SliceColumns, age_band, aligned_labels, gender_name, slice_columns
from flotilla.loop.twosample import TwoSampleResult, mmd_test
from flotilla.models.tasks import TaskSpec, resolve_tasks
from flotilla.names import branch_id
from flotilla.registry import ModelLocation, read_card, resolve

if TYPE_CHECKING:
    pass

MONITORING = "monitoring/"
EXAMPLES = 8
Say = Callable[[str], None]


@dataclass(frozen=True)
class Side:
    """One side of the comparison: its data, its predictions and the arrays the tests read."""

    data: DataRef
    split: str | None
    predictions: PredictionSet
    sample_ids: tuple[str, ...]
    embedding: np.ndarray
    outputs: dict[str, np.ndarray]  # per task: value (regression), P(1) (binary), [n, C] probabilities
    decisions: dict[str, np.ndarray]  # per task: value or class id
    labels: dict[str, np.ndarray]  # per label column, NaN where unlabelled

    def describe(self) -> dict[str, Any]:
        return {"dataset": self.data.dataset, "commit": self.data.commit, "ref": self.data.ref, "split": self.split or "all"} | {
            "rows": len(self.sample_ids),
            "predictions": describe(self.predictions),
        }


@dataclass(frozen=True)
class MonitorResult:
    """What one monitoring run found, and where its report is. ``alarm``: drift found, or a task degraded."""

    model: str
    model_uri: str
    reference: dict[str, Any]
    current: dict[str, Any]
    verdict: DriftVerdict | None
    shares: tuple[SliceShare, ...] = ()
    slice_sources: dict[str, str] = field(default_factory=dict)
    ground_truth: GroundTruth | None = None
    examples: tuple[dict[str, Any], ...] = ()
    message: str = ""
    report_path: str = ""  # the report's directory in the repository
    branch: str = ""
    commit: str = ""
    merge_commit: str | None = None
    local_dir: str = ""

    @property
    def drifted(self) -> bool:
        return bool(self.verdict and self.verdict.drifted)

    @property
    def degraded(self) -> tuple[str, ...]:
        return self.ground_truth.degraded if self.ground_truth else ()

    @property
    def alarm(self) -> bool:
        return self.drifted or bool(self.degraded)

    def shifted_slices(self) -> list[str]:
        """The slices that moved, most shifted first, in words ("age band (predicted)=70-79: share 9% → 31%")."""
        out = [
            f"{s.column}={s.value}: share {s.reference_share:.0%} → {s.current_share:.0%}"
            for s in self.shares
            if s.adjusted_p <= (self.verdict.alpha if self.verdict else DEFAULT_ALPHA)
        ]
        if self.verdict:
            out += [f"{s.column}={s.value}: embedding MMD p={s.adjusted_p:.3g}" for s in self.verdict.shifted_slices()]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "model_uri": self.model_uri,
            "drifted": self.drifted,
            "degraded": list(self.degraded),
            "alarm": self.alarm,
            "message": self.message,
            "reference": self.reference,
            "current": self.current,
            "verdict": self.verdict.to_dict() if self.verdict else None,
            "shifted_slices": self.shifted_slices(),
            "slice_shares": [s.to_dict() for s in self.shares],
            "slice_sources": self.slice_sources,
            "ground_truth": self.ground_truth.to_dict() if self.ground_truth else None,
            "examples": list(self.examples),
            "report_path": self.report_path,
            "branch": self.branch,
            "commit": self.commit,
            "merge_commit": self.merge_commit,
        }


def _say(message: str) -> None:
    print(f"[flotilla] monitor: {message}", file=sys.stderr, flush=True)


def _side(hub: Hub, data: DataRef, split: str | None, found: PredictionSet, tasks: list[TaskSpec], what: str) -> Side:
    table = read_predictions(hub.repo(data.repo), found)
    if table.num_rows < 2:
        raise MonitoringError(f"the {what} data has {table.num_rows} prediction(s); a drift test needs at least 2")
    outputs, decisions = {}, {}
    for t in tasks:
        decisions[t.name] = prediction_column(table, t.name, what)
        if t.kind == "regression":
            outputs[t.name] = decisions[t.name]
        else:
            probs = prediction_column(table, f"{t.name}_probs", what)
            outputs[t.name] = probs[:, 1] if t.kind == "binary" else probs
    ids = tuple(str(s) for s in table.column("sample_id").to_pylist())
    labels_table = HubDataset(data, hub.credentials).labels
    labels = aligned_labels(ids, labels_table, sorted({t.label or t.name for t in tasks} | {"age", "gender"}))
    return Side(data, split, found, ids, prediction_column(table, "embedding", what), outputs, decisions, labels)


def _tests(reference: Side, current: Side, tasks: list[TaskSpec], permutations: int, seed: int) -> dict[str, TwoSampleResult]:
    tests = {"embedding": mmd_test(reference.embedding, current.embedding, permutations=permutations, seed=seed)}
    for t in tasks:
        tests[f"prediction:{t.name}"] = prediction_shift(reference.outputs[t.name], current.outputs[t.name], t.kind)
    return tests


def _examples(
    hub: Hub, reference: Side, current: Side, cols: SliceColumns, image_size: int, seed: int
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """The most atypical current faces (with their slices) and a few reference faces, with their images."""
    score = atypicality(reference.embedding, current.embedding, seed=seed)
    top = np.argsort(-score, kind="stable")[:EXAMPLES]
    rng = np.random.default_rng(seed)
    ref_pick = rng.choice(len(reference.sample_ids), min(EXAMPLES, len(reference.sample_ids)), replace=False)
    chosen = [
        {"side": "current", "sample_id": current.sample_ids[i], "atypicality": float(score[i])}
        | {c: str(v[i]) for c, v in cols.current.items()}
        for i in top
    ] + [
        {"side": "reference", "sample_id": reference.sample_ids[i]} | {c: str(v[i]) for c, v in cols.reference.items()}
        for i in ref_pick
    ]
    images: dict[str, np.ndarray] = {}
    for side in (current, reference):
        ids = [e["sample_id"] for e in chosen if e["side"] == ("current" if side is current else "reference")]
        images |= load_images(HubDataset(side.data, hub.credentials, image_size=image_size), ids)
    return chosen, images


def monitor(
    hub: Hub | None,
    model: str,
    *,
    repo: str,
    current: str,
    dataset: str | None = None,
    split: str | None = None,
    reference_split: str = "val",
    alpha: float = DEFAULT_ALPHA,
    ground_truth_check: bool = False,
    tolerance: float = 0.0,
    permutations: int = 500,
    seed: int = 0,
    infer_missing: bool = True,
    infer_options: dict[str, Any] | None = None,
    merge_into: str | None = None,
    out_dir: str | Path | None = None,
    commit: bool = True,
    on_progress: Say | None = None,
) -> MonitorResult:
    """Has the data at ``current`` drifted from ``model``'s training data? With ``ground_truth_check``: did the model get worse?

    ``current``: a ref (branch, tag, commit) holding ``dataset`` (default: the training dataset's
    name) or predictions of it. ``split``: one split of it, default every sample. ``infer_options``:
    :func:`~flotilla.loop.inference.infer`'s batch_size, concurrency, cpus_per_actor, use_gpu,
    allow_resize, address for the predictions it has to make; ``infer_missing=False`` refuses to
    make any. ``out_dir``: where the report files go locally (default ``artifacts/monitoring``);
    ``commit=False`` keeps them local only.
    """
    if not 0 < alpha < 1:
        raise SpecError(f"alpha must be between 0 and 1, got {alpha}", hint="the usual choice is 0.05 (or 0.01 for fewer alarms)")
    if permutations < 20:
        raise SpecError(f"permutations must be at least 20, got {permutations}", hint="500 gives p-values down to 0.002")
    hub = hub or Hub()
    say = on_progress or _say
    location = resolve(hub, model, repo)
    card = read_card(hub.repo(location.repo), location)
    tasks = resolve_tasks(list(card.tasks))
    reference = content_commit(
        hub.repo(card.data.repo), DataRef(card.data.repo, card.data.commit, card.data.dataset, card.data.ref)
    )
    cur = content_commit(hub.repo(repo), resolve_data(hub, repo, current, dataset or card.data.dataset))
    if (cur.repo, cur.dataset, cur.commit) == (reference.repo, reference.dataset, reference.commit) and split in (
        None,
        reference_split,
    ):
        message = (
            f"the current data ({cur.dataset} at {current!r}) is {location.name}'s own training data "
            f"(commit {reference.commit[:12]}): nothing can have drifted, nothing was run"
        )
        say(message)
        return MonitorResult(
            location.name, location.uri, {"commit": reference.commit}, {"commit": cur.commit}, None, message=message
        )
    run = None if not infer_missing else dict(infer_options or {})
    ref_preds = ensure_predictions(hub, location, reference, reference_split, first=(), run=run, say=say, what="reference")
    cur_preds = ensure_predictions(hub, location, cur, split, first=(current,), run=run, say=say, what="current")
    ref_side = _side(hub, reference, reference_split, ref_preds, tasks, "reference")
    cur_side = _side(hub, cur, split, cur_preds, tasks, "current")
    say(f"testing {len(cur_side.sample_ids)} current against {len(ref_side.sample_ids)} reference samples at alpha {alpha:g}")
    cols = slice_columns(tasks, ref_side.decisions, cur_side.decisions, ref_side.labels, cur_side.labels)
    slices = slice_shift(
        ref_side.embedding,
        cur_side.embedding,
        cols.reference,
        cols.current,
        test=lambda a, b: mmd_test(a, b, permutations=200, seed=seed),
    )
    found = verdict(_tests(ref_side, cur_side, tasks, permutations, seed), alpha=alpha, slices=slices)
    shares = tuple(share_shift(cols.reference, cols.current, alpha=alpha)) if cols.current else ()
    checked = None
    if ground_truth_check:
        checked = ground_truth(
            tasks,
            ref_side.decisions,
            ref_side.labels,
            cur_side.decisions,
            cur_side.labels,
            reference_slices=_label_slices(ref_side),
            current_slices=_label_slices(cur_side),
            card_metrics=card.metrics,
            alpha=alpha,
            tolerance=tolerance,
            seed=seed,
        )
    image_size = int((card.config.get("data") or {}).get("image_size") or 0) or None
    examples, images = _examples(hub, ref_side, cur_side, cols, image_size or 0, seed)
    result = MonitorResult(
        location.name,
        location.uri,
        ref_side.describe(),
        cur_side.describe() | {"asked": current},
        found,
        shares,
        dict(cols.source),
        checked,
        tuple(examples),
    )
    return _publish(
        hub,
        result,
        card,
        location,
        ref_side,
        cur_side,
        images,
        repo=repo,
        merge_into=merge_into,
        out_dir=out_dir,
        commit=commit,
        say=say,
    )


def _label_slices(side: Side) -> dict[str, np.ndarray]:
    """Ground truth is sliced by the true labels (a slice the model mispredicts is exactly what to see)."""
    return {"age band": age_band(side.labels["age"]), "gender": gender_name(side.labels["gender"])}


def _publish(
    hub: Hub,
    result: MonitorResult,
    card: ModelCard,
    location: ModelLocation,
    reference: Side,
    current: Side,
    images: dict[str, np.ndarray],
    *,
    repo: str,
    merge_into: str | None,
    out_dir: str | Path | None,
    commit: bool,
    say: Say,
) -> MonitorResult:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    report_dir = f"{MONITORING}{location.run_id}/{location.model}/{current.data.dataset}@{current.data.commit[:12]}/{stamp}/"
    local = Path(out_dir or "artifacts/monitoring") / f"{location.run_id}-{location.model}-{current.data.dataset}-{stamp}"
    files = render_report(result, card, reference, current, images)
    local.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        (local / name).write_bytes(blob)
    say(f"report written to {local / 'report.html'}")
    staged = MonitorResult(**{**result.__dict__, "report_path": report_dir, "local_dir": str(local)})
    if not commit:
        return staged
    record = MonitorRun(
        location.uri,
        reference.data.commit,
        current.data.commit,
        current.data.dataset,
        current.split or "",
        staged.drifted,
        staged.verdict.alpha if staged.verdict else DEFAULT_ALPHA,
        report_dir,
        staged.degraded,
    )
    name = f"{location.run_id}-{location.model}-{current.data.dataset}-{current.data.commit[:8]}-{secrets.token_hex(2)}"
    verdict_word = "DRIFT" if staged.drifted else "no drift"
    exp = hub.repo(repo).transact(
        name,
        current.data.commit,
        prefix="monitor-",
        merge_into=merge_into,
        message=f"Monitoring {location.name} on {current.data.dataset}@{current.data.commit[:12]}: {verdict_word}"
        + (f", degraded {', '.join(staged.degraded)}" if staged.degraded else ""),
        metadata=record.to_metadata(),
        retention=Retention(on_success="keep", on_failure="delete"),
        branch=branch_id(name, prefix="monitor-"),
    )
    with exp:
        final = MonitorResult(**{**staged.__dict__, "branch": exp.branch})
        files["report.json"] = render_report(final, card, reference, current, images, only="report.json")["report.json"]
        for fname, blob in files.items():
            exp.put(report_dir + fname, blob)
    (local / "report.json").write_bytes(files["report.json"])
    say(f"report committed on {exp.branch!r} under {report_dir}")
    return MonitorResult(**{**final.__dict__, "commit": exp.commit_id or "", "merge_commit": exp.merge_commit})
