"""Lineage: the commit-metadata keys and the model card, as typed records (one writer, one reader).

Everything flotilla commits says what it is and where it came from in lakeFS commit metadata (a
flat ``str → str`` map), and every model carries a card (``card.json``). Those keys used to be
string literals spread over seven files, so a reader could silently miss a key a writer renamed.
Here each kind of commit is a frozen record with ``to_metadata()`` (the one writer) and
:func:`read_commit` (the one reader), and the card is :class:`ModelCard`.

This module imports nothing of flotilla's but the standard library: the hub (experiment stamps),
data (ingests, receipts, the gate), training (checkpoints, models), sweeps (promotions) and jobs
all write through it, so it sits below all of them. It is one module (a little over the ~400-line
guide) because it is the one place to look: every key, every record and the card, side by side.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, ClassVar


class Key(StrEnum):
    """The commit-metadata keys flotilla writes (lakeFS stores them as strings)."""

    KIND = "flotilla.kind"
    EXPERIMENT = "flotilla.experiment"
    BASE_COMMIT = "flotilla.base_commit"
    DATASET = "flotilla.dataset"
    SAMPLES = "flotilla.samples"
    VALIDATION = "flotilla.validation"
    VALIDATED_COMMIT = "flotilla.validated_commit"
    RUN_ID = "flotilla.run_id"
    MODEL = "flotilla.model"
    MODELS = "flotilla.models"
    DATA_COMMIT = "flotilla.data_commit"
    GIT_SHA = "flotilla.git_sha"
    PARENT = "flotilla.parent"
    SWEEP_ID = "flotilla.sweep_id"
    TRIAL_ID = "flotilla.trial_id"
    SPEC = "flotilla.spec"
    VERSION = "flotilla.version"
    EPOCH = "epoch"
    RESUMED_FROM_EPOCH = "resumed_from_epoch"
    FAILURE = "failure"
    PARAMS = "params"
    FAMILY = "flotilla.family"
    ALIAS = "flotilla.alias"
    PREVIOUS_RUN_ID = "flotilla.previous_run_id"
    ACTION = "flotilla.action"
    LABELS_CHANGED = "flotilla.labels_changed"
    REASON = "flotilla.reason"
    MODEL_URI = "flotilla.model_uri"
    MODEL_DATA_COMMIT = "flotilla.model_data_commit"
    INPUT_COMMIT = "flotilla.input_commit"
    SPLIT = "flotilla.split"
    ROWS = "flotilla.rows"
    REFERENCE_COMMIT = "flotilla.reference_commit"
    DRIFTED = "flotilla.drifted"
    DEGRADED = "flotilla.degraded"
    ALPHA = "flotilla.alpha"
    REPORT = "flotilla.report"
    ROUND = "flotilla.round"
    STEP = "flotilla.step"
    DETAIL = "flotilla.detail"
    AUDIT_ID = "flotilla.audit_id"
    REMOVED = "flotilla.removed"
    METHOD = "flotilla.method"
    ISSUES = "flotilla.issues"


METRIC_PREFIX = "metric."
PROVENANCE_PREFIX = "provenance."


class Kind(StrEnum):
    """What a commit is (``flotilla.kind``)."""

    INGEST = "ingest"
    GATE = "gate"
    CHECKPOINT = "checkpoint"
    FAILURE = "failure"
    MODEL = "model"
    PROMOTION = "promotion"
    FAMILY_PROMOTION = "family-promotion"
    ALIAS = "alias"
    LABEL_FIX = "label-fix"
    INFERENCE = "inference"
    MONITOR = "monitor"
    ACTIVE = "active-learning"
    DATA_REVIEW = "data-review"
    AUDIT = "audit"


def _metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metric.<task>/<name>`` entries; the sample counts (``*/n``) are not metrics."""
    return {f"{METRIC_PREFIX}{k}": v for k, v in metrics.items() if not k.endswith("/n")}


def _read_metrics(md: Mapping[str, str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in md.items():
        if k.startswith(METRIC_PREFIX):
            try:
                out[k[len(METRIC_PREFIX) :]] = float(v)
            except ValueError:
                continue
    return out


@dataclass(frozen=True)
class CommitRecord:
    """Base of the typed commit records: ``to_metadata`` writes, :func:`read_commit` reads."""

    kind: ClassVar[Kind | None] = None

    def to_metadata(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_metadata(cls, md: Mapping[str, str]) -> CommitRecord:
        raise NotImplementedError


@dataclass(frozen=True)
class ExperimentStamp(CommitRecord):
    """Added to every commit and merge an experiment branch makes: which experiment, from which commit."""

    experiment: str
    base_commit: str | None

    def to_metadata(self) -> dict[str, Any]:
        return {Key.EXPERIMENT: self.experiment, Key.BASE_COMMIT: self.base_commit}

    @classmethod
    def from_metadata(cls, md: Mapping[str, str]) -> ExperimentStamp:
        return cls(md.get(Key.EXPERIMENT, ""), md.get(Key.BASE_COMMIT))


@dataclass(frozen=True)
class IngestCommit(CommitRecord):
    """A dataset written on its ingest branch, with the gate's verdict and where the data came from."""

    kind: ClassVar[Kind] = Kind.INGEST
    dataset: str
    samples: int
    passed: bool
    base_commit: str
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, Any]:
        return {
            Key.KIND: self.kind,
            Key.DATASET: self.dataset,
            Key.SAMPLES: self.samples,
            Key.VALIDATION: "passed" if self.passed else "failed",
            Key.BASE_COMMIT: self.base_commit,
            **{f"{PROVENANCE_PREFIX}{k}": v for k, v in self.provenance.items()},
        }

    @classmethod
    def from_metadata(cls, md: Mapping[str, str]) -> IngestCommit:
        return cls(
            md.get(Key.DATASET, ""),
            int(md.get(Key.SAMPLES, 0) or 0),
            md.get(Key.VALIDATION) == "passed",
            md.get(Key.BASE_COMMIT, ""),
            {k[len(PROVENANCE_PREFIX) :]: v for k, v in md.items() if k.startswith(PROVENANCE_PREFIX)},
        )


@dataclass(frozen=True)
class LabelFix(CommitRecord):
    """Labels of a dataset corrected in place (:func:`flotilla.data.relabel`): how many samples, per column.

    Written on the fix's own commit (the gate's receipt, then the validated merge into main, follow it), so the
    lineage of a data commit can say "label fix: 37 gender labels" and ``flotilla models stale --since``
    has a commit to start from.
    """

    kind: ClassVar[Kind] = Kind.LABEL_FIX
    dataset: str
    samples: int  # samples with at least one label changed
    labels_changed: Mapping[str, int]  # column → samples whose value in it changed
    base_commit: str
    reason: str = ""

    def to_metadata(self) -> dict[str, Any]:
        return {
            Key.KIND: self.kind,
            Key.DATASET: self.dataset,
            Key.SAMPLES: self.samples,
            Key.LABELS_CHANGED: dict(self.labels_changed),
            Key.BASE_COMMIT: self.base_commit,
            **({Key.REASON: self.reason} if self.reason else {}),
        }

    @classmethod
    def from_metadata(cls, md: Mapping[str, str]) -> LabelFix:
        try:
            changed = json.loads(md.get(Key.LABELS_CHANGED) or "{}")
        except ValueError:
            changed = {}
        return cls(
            md.get(Key.DATASET, ""),
            int(md.get(Key.SAMPLES, 0) or 0),
            {str(k): int(v) for k, v in changed.items()} if isinstance(changed, dict) else {},
            md.get(Key.BASE_COMMIT, ""),
            md.get(Key.REASON, ""),
        )


@dataclass(frozen=True)
class ValidationReceipt(CommitRecord):
    """The gate's receipt for a commit validated after the fact (``data validate --merge``)."""

    validated_commit: str

    def to_metadata(self) -> dict[str, Any]:
        return {Key.VALIDATION: "passed", Key.VALIDATED_COMMIT: self.validated_commit}


@dataclass(frozen=True)
class ValidatedMerge(CommitRecord):
    """The merge of a validated dataset into its target."""

    dataset: str

    def to_metadata(self) -> dict[str, Any]:
        return {Key.DATASET: self.dataset, Key.VALIDATION: "passed"}


@dataclass(frozen=True)
class GateInstall(CommitRecord):
    """The commit (and merge) that installs the pre-merge validation hook."""

    kind: ClassVar[Kind] = Kind.GATE

    def to_metadata(self) -> dict[str, Any]:
        return {Key.KIND: self.kind}

    @classmethod
    def from_metadata(cls, md: Mapping[str, str]) -> GateInstall:
        return cls()


@dataclass(frozen=True)
class CheckpointCommit(CommitRecord):
    """A Ray Train checkpoint committed on the run's branch."""

    kind: ClassVar[Kind] = Kind.CHECKPOINT
    model: str
    epoch: int | None = None
    val_metrics: Mapping[str, float] = field(default_factory=dict)  # ``val/<task>/<metric>``, rounded to 6 places
    resumed_from_epoch: int | None = None  # set when Ray Train restarted the run from an earlier checkpoint

    def to_metadata(self) -> dict[str, Any]:
        return {
            Key.KIND: self.kind,
            Key.MODEL: self.model,
            Key.EPOCH: self.epoch,
            **{k: round(v, 6) for k, v in self.val_metrics.items() if k.startswith("val/") and not k.endswith("/n")},
            **({Key.RESUMED_FROM_EPOCH: self.resumed_from_epoch} if self.resumed_from_epoch is not None else {}),
        }

    @classmethod
    def from_metadata(cls, md: Mapping[str, str]) -> CheckpointCommit:
        epoch, resumed = md.get(Key.EPOCH), md.get(Key.RESUMED_FROM_EPOCH)
        return cls(
            md.get(Key.MODEL, ""),
            int(epoch) if epoch not in (None, "", "None", "null") else None,
            {k: float(v) for k, v in md.items() if k.startswith("val/")},
            int(resumed) if resumed not in (None, "", "None", "null") else None,
        )


@dataclass(frozen=True)
class FailureCommit(CommitRecord):
    """A training failure (or restart) recorded on the run's branch."""

    kind: ClassVar[Kind] = Kind.FAILURE
    model: str
    failure: str

    def to_metadata(self) -> dict[str, Any]:
        return {Key.KIND: self.kind, Key.MODEL: self.model, Key.FAILURE: self.failure}

    @classmethod
    def from_metadata(cls, md: Mapping[str, str]) -> FailureCommit:
        return cls(md.get(Key.MODEL, ""), md.get(Key.FAILURE, ""))


@dataclass(frozen=True)
class ModelCommit(CommitRecord):
    """A published model: its run, the data commit it read, the code, its parent and its best metrics."""

    kind: ClassVar[Kind] = Kind.MODEL
    run_id: str
    model: str
    data_commit: str
    git_sha: str
    parent: str | None = None  # the parent model's lakefs:// URI (transfer learning)
    metrics: Mapping[str, float] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, Any]:
        return {
            Key.KIND: self.kind,
            Key.RUN_ID: self.run_id,
            Key.MODEL: self.model,
            Key.DATA_COMMIT: self.data_commit,
            Key.GIT_SHA: self.git_sha,
            **({Key.PARENT: self.parent} if self.parent else {}),
            **_metrics(self.metrics),
        }

    @classmethod
    def from_metadata(cls, md: Mapping[str, str]) -> ModelCommit:
        return cls(
            md.get(Key.RUN_ID, ""),
            md.get(Key.MODEL, ""),
            md.get(Key.DATA_COMMIT, ""),
            md.get(Key.GIT_SHA, ""),
            md.get(Key.PARENT) or None,
            _read_metrics(md),
        )


@dataclass(frozen=True)
class PromotionCommit(CommitRecord):
    """A sweep's winner merged into its target."""

    kind: ClassVar[Kind] = Kind.PROMOTION
    sweep_id: str
    trial_id: str
    data_commit: str
    params: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, Any]:
        return {
            Key.KIND: self.kind,
            Key.SWEEP_ID: self.sweep_id,
            Key.TRIAL_ID: self.trial_id,
            Key.DATA_COMMIT: self.data_commit,
            Key.PARAMS: dict(self.params),
            **_metrics(self.metrics),
        }

    @classmethod
    def from_metadata(cls, md: Mapping[str, str]) -> PromotionCommit:
        raw = md.get(Key.PARAMS) or "{}"
        try:
            params = json.loads(raw)
        except ValueError:  # written by str() of a dict before this module: not JSON, kept as text
            params = {"raw": raw}
        return cls(
            md.get(Key.SWEEP_ID, ""),
            md.get(Key.TRIAL_ID, ""),
            md.get(Key.DATA_COMMIT, ""),
            params if isinstance(params, dict) else {"raw": raw},
            _read_metrics(md),
        )


@dataclass(frozen=True)
class FamilyPromotion(CommitRecord):
    """The one merge that lands every model of a ``strategy: separate`` run together."""

    kind: ClassVar[Kind] = Kind.FAMILY_PROMOTION
    run_id: str
    models: tuple[str, ...]

    def to_metadata(self) -> dict[str, Any]:
        return {Key.KIND: self.kind, Key.RUN_ID: self.run_id, Key.MODELS: ",".join(self.models)}

    @classmethod
    def from_metadata(cls, md: Mapping[str, str]) -> FamilyPromotion:
        return cls(md.get(Key.RUN_ID, ""), tuple(m for m in md.get(Key.MODELS, "").split(",") if m))


@dataclass(frozen=True)
class AliasMove(CommitRecord):
    """An alias of a family (``production``, ``staging``...) moved to a run's models, or rolled back."""

    kind: ClassVar[Kind] = Kind.ALIAS
    family: str
    alias: str
    run_id: str
    previous_run_id: str | None = None
    action: str = "promote"  # or "rollback"

    def to_metadata(self) -> dict[str, Any]:
        return {
            Key.KIND: self.kind,
            Key.FAMILY: self.family,
            Key.ALIAS: self.alias,
            Key.RUN_ID: self.run_id,
            Key.ACTION: self.action,
            **({Key.PREVIOUS_RUN_ID: self.previous_run_id} if self.previous_run_id else {}),
        }

    @classmethod
    def from_metadata(cls, md: Mapping[str, str]) -> AliasMove:
        return cls(
            md.get(Key.FAMILY, ""),
            md.get(Key.ALIAS, ""),
            md.get(Key.RUN_ID, ""),
            md.get(Key.PREVIOUS_RUN_ID) or None,
            md.get(Key.ACTION, "promote"),
        )


# Ray's own job-metadata key (ray.dashboard.modules.job.common.JOB_NAME_METADATA_KEY): the dashboard's
# Jobs table shows it in its Name column.
RAY_JOB_NAME = "job_name"


@dataclass(frozen=True)
class JobLabels(CommitRecord):
    """What a submitted Ray job carries in its metadata: its kind, spec and the data it pinned (and, for
    Ray's dashboard, a name: ``<kind>: <spec>``)."""

    job_kind: str
    spec: str
    version: str
    pinned: Mapping[str, str] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, Any]:
        return {
            Key.KIND: self.job_kind,
            Key.SPEC: self.spec,
            Key.VERSION: self.version,
            **{f"flotilla.{k}": v for k, v in self.pinned.items()},
            RAY_JOB_NAME: f"{self.job_kind}: {self.spec}",
        }

    @classmethod
    def from_metadata(cls, md: Mapping[str, str]) -> JobLabels:
        fixed = {Key.KIND, Key.SPEC, Key.VERSION}
        pinned = {k[len("flotilla.") :]: v for k, v in md.items() if k.startswith("flotilla.") and k not in fixed}
        return cls(md.get(Key.KIND, ""), md.get(Key.SPEC, ""), md.get(Key.VERSION, ""), pinned)


@dataclass(frozen=True)
class InferenceCommit(CommitRecord):
    """Predictions of one model over one dataset at one commit (:func:`flotilla.loop.infer`).

    The model's own training commit rides along so that a drift check can compare the predictions'
    input with the data the model learned from without reading the card again.
    """

    kind: ClassVar[Kind] = Kind.INFERENCE
    model_uri: str
    model_data_commit: str
    input_commit: str
    dataset: str
    split: str  # "" for every sample of the dataset
    rows: int

    def to_metadata(self) -> dict[str, Any]:
        return {
            Key.KIND: self.kind,
            Key.MODEL_URI: self.model_uri,
            Key.MODEL_DATA_COMMIT: self.model_data_commit,
            Key.INPUT_COMMIT: self.input_commit,
            Key.DATASET: self.dataset,
            Key.SPLIT: self.split,
            Key.ROWS: self.rows,
        }

    @classmethod
    def from_metadata(cls, md: Mapping[str, str]) -> InferenceCommit:
        return cls(
            md.get(Key.MODEL_URI, ""),
            md.get(Key.MODEL_DATA_COMMIT, ""),
            md.get(Key.INPUT_COMMIT, ""),
            md.get(Key.DATASET, ""),
            md.get(Key.SPLIT, ""),
            int(md.get(Key.ROWS, 0) or 0),
        )


@dataclass(frozen=True)
class MonitorRun(CommitRecord):
    """A drift report (:func:`flotilla.loop.monitor`): which model, judged on which data against which reference.

    ``reference_commit`` is the model's training data (its dataset's content commit) and
    ``input_commit`` the data judged; ``drifted`` and ``degraded`` (the tasks the ground-truth check
    flagged, comma-separated) make a log of monitoring commits readable without opening a report.
    """

    kind: ClassVar[Kind] = Kind.MONITOR
    model_uri: str
    reference_commit: str
    input_commit: str
    dataset: str
    split: str  # "" for every sample
    drifted: bool
    alpha: float
    report: str  # the report's directory in the repository
    degraded: tuple[str, ...] = ()

    def to_metadata(self) -> dict[str, Any]:
        return {
            Key.KIND: self.kind,
            Key.MODEL_URI: self.model_uri,
            Key.REFERENCE_COMMIT: self.reference_commit,
            Key.INPUT_COMMIT: self.input_commit,
            Key.DATASET: self.dataset,
            Key.SPLIT: self.split,
            Key.DRIFTED: "true" if self.drifted else "false",
            Key.ALPHA: self.alpha,
            Key.REPORT: self.report,
            Key.DEGRADED: ",".join(self.degraded),
        }

    @classmethod
    def from_metadata(cls, md: Mapping[str, str]) -> MonitorRun:
        return cls(
            md.get(Key.MODEL_URI, ""),
            md.get(Key.REFERENCE_COMMIT, ""),
            md.get(Key.INPUT_COMMIT, ""),
            md.get(Key.DATASET, ""),
            md.get(Key.SPLIT, ""),
            md.get(Key.DRIFTED, "") == "true",
            float(md.get(Key.ALPHA, 0) or 0),
            md.get(Key.REPORT, ""),
            tuple(d for d in md.get(Key.DEGRADED, "").split(",") if d),
        )


@dataclass(frozen=True)
class ActiveRound(CommitRecord):
    """One step of an active-learning round (:mod:`flotilla.active`): select, send, receive, retrain or decide.

    ``detail`` is the step's own summary as JSON (the selection's strategy and budget, the labels
    received, both models' metrics and the decision), so ``lakectl log`` of a round branch reads as
    the round's story without opening a file.
    """

    kind: ClassVar[Kind] = Kind.ACTIVE
    name: str
    round: int
    step: str
    model_uri: str
    data_commit: str  # the pool's (select, send, receive) or the retraining data's (retrain, decide)
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, Any]:
        return {
            Key.KIND: self.kind,
            Key.EXPERIMENT: self.name,
            Key.ROUND: self.round,
            Key.STEP: self.step,
            Key.MODEL_URI: self.model_uri,
            Key.DATA_COMMIT: self.data_commit,
            Key.DETAIL: json.dumps(dict(self.detail), sort_keys=True, default=str),
        }

    @classmethod
    def from_metadata(cls, md: Mapping[str, str]) -> ActiveRound:
        try:
            detail = json.loads(md.get(Key.DETAIL, "{}") or "{}")
        except ValueError:
            detail = {}
        return cls(
            md.get(Key.EXPERIMENT, ""),
            int(md.get(Key.ROUND, 0) or 0),
            md.get(Key.STEP, ""),
            md.get(Key.MODEL_URI, ""),
            md.get(Key.DATA_COMMIT, ""),
            detail if isinstance(detail, dict) else {},
        )


@dataclass(frozen=True)
class DataReview(CommitRecord):
    """A step of an audit's review (:mod:`flotilla.audit.reviewing`): send, receive, or the change it made.

    The change commit (step ``change``) and the validated merge of it (``merge``) carry the audit id,
    so main's log says which audit a label fix or a removal came from; ``labels_changed`` counts
    relabelled samples per column, ``removed`` removed samples per reason; ``detail`` holds the rest
    (reviewers, tasks sent, unreviewed) as JSON.
    """

    kind: ClassVar[Kind] = Kind.DATA_REVIEW
    dataset: str
    audit_id: str
    step: str
    base_commit: str
    labels_changed: Mapping[str, int] = field(default_factory=dict)
    removed: Mapping[str, int] = field(default_factory=dict)
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, Any]:
        return {
            Key.KIND: self.kind,
            Key.DATASET: self.dataset,
            Key.AUDIT_ID: self.audit_id,
            Key.STEP: self.step,
            Key.BASE_COMMIT: self.base_commit,
            Key.LABELS_CHANGED: json.dumps(dict(self.labels_changed), sort_keys=True),
            Key.REMOVED: json.dumps(dict(self.removed), sort_keys=True),
            Key.DETAIL: json.dumps(dict(self.detail), sort_keys=True, default=str),
        }

    @classmethod
    def from_metadata(cls, md: Mapping[str, str]) -> DataReview:
        def mapping(key: Key) -> dict[str, Any]:
            try:
                found = json.loads(md.get(key) or "{}")
            except ValueError:
                return {}
            return found if isinstance(found, dict) else {}

        return cls(
            md.get(Key.DATASET, ""),
            md.get(Key.AUDIT_ID, ""),
            md.get(Key.STEP, ""),
            md.get(Key.BASE_COMMIT, ""),
            mapping(Key.LABELS_CHANGED),
            mapping(Key.REMOVED),
            mapping(Key.DETAIL),
        )


@dataclass(frozen=True)
class AuditRun(CommitRecord):
    """A data audit (:func:`flotilla.audit.audit_dataset`): which data, judged by which model, how, and what it found.

    ``data_commit`` is the audited dataset's content commit (the audit branch is cut from it),
    ``model_data_commit`` the model's training commit, ``method`` how the out-of-sample predictions
    were made (``probe`` or ``model``); ``issues`` (flagged samples per issue type, JSON) makes a
    log of audit commits readable without opening ``summary.json``.
    """

    kind: ClassVar[Kind] = Kind.AUDIT
    audit_id: str
    dataset: str
    data_commit: str
    model_uri: str
    model_data_commit: str
    method: str
    split: str  # "" for every sample
    rows: int
    issues: Mapping[str, int] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, Any]:
        return {
            Key.KIND: self.kind,
            Key.AUDIT_ID: self.audit_id,
            Key.DATASET: self.dataset,
            Key.DATA_COMMIT: self.data_commit,
            Key.MODEL_URI: self.model_uri,
            Key.MODEL_DATA_COMMIT: self.model_data_commit,
            Key.METHOD: self.method,
            Key.SPLIT: self.split,
            Key.ROWS: self.rows,
            Key.ISSUES: json.dumps(dict(self.issues), sort_keys=True),
        }

    @classmethod
    def from_metadata(cls, md: Mapping[str, str]) -> AuditRun:
        try:
            issues = json.loads(md.get(Key.ISSUES, "{}") or "{}")
        except ValueError:
            issues = {}
        return cls(
            md.get(Key.AUDIT_ID, ""),
            md.get(Key.DATASET, ""),
            md.get(Key.DATA_COMMIT, ""),
            md.get(Key.MODEL_URI, ""),
            md.get(Key.MODEL_DATA_COMMIT, ""),
            md.get(Key.METHOD, ""),
            md.get(Key.SPLIT, ""),
            int(md.get(Key.ROWS, 0) or 0),
            {str(k): int(v) for k, v in issues.items()} if isinstance(issues, dict) else {},
        )


_BY_KIND: dict[str, type[CommitRecord]] = {
    Kind.INGEST: IngestCommit,
    Kind.GATE: GateInstall,
    Kind.CHECKPOINT: CheckpointCommit,
    Kind.FAILURE: FailureCommit,
    Kind.MODEL: ModelCommit,
    Kind.PROMOTION: PromotionCommit,
    Kind.FAMILY_PROMOTION: FamilyPromotion,
    Kind.ALIAS: AliasMove,
    Kind.LABEL_FIX: LabelFix,
    Kind.INFERENCE: InferenceCommit,
    Kind.MONITOR: MonitorRun,
    Kind.ACTIVE: ActiveRound,
    Kind.DATA_REVIEW: DataReview,
    Kind.AUDIT: AuditRun,
}


def read_commit(metadata: Mapping[str, str]) -> CommitRecord | None:
    """The typed record of a commit flotilla made, from its metadata; None for any other commit."""
    cls = _BY_KIND.get(metadata.get(Key.KIND, ""))
    return cls.from_metadata(metadata) if cls else None


# ---- the model card --------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataLineage:
    """The data a model read: a dataset at an immutable commit (and the ref the user named)."""

    repo: str
    commit: str
    dataset: str
    ref: str = ""


@dataclass(frozen=True)
class ParentModel:
    """The model a transfer-learned model started from."""

    repo: str
    commit: str
    path: str

    @property
    def uri(self) -> str:
        return f"lakefs://{self.repo}/{self.commit}/{self.path}"


@dataclass(frozen=True)
class ModelCard:
    """``card.json``: what a model is, what it read and what made it (written once, beside the weights).

    The JSON keeps the shape cards have always had (readers outside flotilla parse it), with the
    parent's ``uri`` spelled out. ``environment`` (interpreter, library versions, device, workers,
    backend: see :mod:`flotilla.training.environment`) is empty in cards written before it existed.
    """

    run_id: str
    model: str
    created: str
    tasks: tuple[Mapping[str, Any], ...]
    metrics: Mapping[str, float]
    best_epoch: int
    epochs_run: int
    data: DataLineage
    branch: str
    code: Mapping[str, Any]
    config: Mapping[str, Any]
    parent: ParentModel | None = None
    environment: Mapping[str, Any] = field(default_factory=dict)
    tracking: Mapping[str, Any] = field(default_factory=dict)
    """``{"wandb": {"id", "project", "group", "name", "mode", "dir", "url"}}``: the W&B run that logged the
    model's training (empty when W&B did not track it, and in cards written before this existed)."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tasks"] = [dict(t) for t in self.tasks]
        d["parent"] = None if self.parent is None else {**asdict(self.parent), "uri": self.parent.uri}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelCard:
        parent = d.get("parent")
        return cls(
            run_id=d["run_id"],
            model=d["model"],
            created=d.get("created", ""),
            tasks=tuple(d.get("tasks", ())),
            metrics=dict(d.get("metrics", {})),
            best_epoch=int(d.get("best_epoch", 0)),
            epochs_run=int(d.get("epochs_run", 0)),
            data=DataLineage(**d["data"]),
            branch=d.get("branch", ""),
            code=dict(d.get("code", {})),
            config=dict(d.get("config", {})),
            parent=None if not parent else ParentModel(parent["repo"], parent["commit"], parent["path"]),
            environment=dict(d.get("environment") or {}),
            tracking=dict(d.get("tracking") or {}),
        )
