"""A data audit's findings as data: where they live, what their table holds, how to find them again.

The audit (:mod:`flotilla.audit`) writes; the data report, the review loop and anyone else read.
The format lives here, in the data layer, so that a reader needs no model code:

::

    audits/<dataset>/<audit_id>/findings.parquet   one row per audited sample (FINDINGS_COLUMNS + per task)
    audits/<dataset>/<audit_id>/summary.json       AuditSummary: what was audited with what, counts per issue

committed on a branch ``audit-<dataset>-<audit_id>`` cut from the audited commit, so that the
findings sit beside the very data they describe (the branch *is* the data version plus its audit).

Findings table columns (scores are cleanlab's: in [0, 1], **lower = more likely a problem**):

- ``sample_id`` (string), ``split`` (string);
- per task ``<t>`` audited for label issues (``<t>`` is the task's **label column** in the dataset, so a
  reviewer's fix lands on that column): ``label_issue_<t>`` (bool), ``label_score_<t>`` (float32),
  ``given_<t>`` (float64: the label in the data, null when unlabelled), ``suggested_<t>`` (float64: the
  out-of-sample prediction — a class index for classification, a value for regression);
- ``outlier`` (bool), ``outlier_score`` (float32);
- ``near_duplicate`` (bool), ``near_duplicate_score`` (float32), ``near_duplicate_of`` (string, the
  closest other sample, null when none is near), ``exact_duplicate_of`` (string: same image bytes);
- ``issues`` (list<string>): the flags set on this row, e.g. ``["label:emotion", "outlier"]``;
- ``worst_score`` (float32): the lowest score among the flags set (1.0 when none), to rank rows.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from flotilla.errors import NotFoundError
from flotilla.names import check_dataset_name

if TYPE_CHECKING:
    import pyarrow as pa

    from flotilla.hub.repo import Repo

AUDITS = "audits/"
AUDIT_PREFIX = "audit-"
FINDINGS = "findings.parquet"
SUMMARY = "summary.json"
FINDINGS_COLUMNS = (
    "sample_id",
    "split",
    "outlier",
    "outlier_score",
    "near_duplicate",
    "near_duplicate_score",
    "near_duplicate_of",
    "exact_duplicate_of",
    "issues",
    "worst_score",
)


def task_columns(task: str) -> tuple[str, str, str, str]:
    """The four per-task columns of the findings table, in order."""
    return (f"label_issue_{task}", f"label_score_{task}", f"given_{task}", f"suggested_{task}")


def audit_dir(dataset: str, audit_id: str) -> str:
    return f"{AUDITS}{check_dataset_name(dataset)}/{audit_id}/"


def audit_branch(dataset: str, audit_id: str) -> str:
    return f"{AUDIT_PREFIX}{dataset}-{audit_id}"


@dataclass(frozen=True)
class AuditSummary:
    """``summary.json``: what was audited, with which model and method, and what was found.

    ``issues`` counts flagged samples per issue type (``label:<task>``, ``outlier``,
    ``near_duplicate``, ``exact_duplicate``); ``dataset_issues`` holds the checks that judge the whole
    dataset rather than rows (``non_iid``, ``class_imbalance:<task>``, ``underperforming_group:<task>``)
    as ``{"score": float, "flagged": int, ...}``.
    """

    audit_id: str
    repo: str
    dataset: str
    data_commit: str
    model_uri: str
    model_data_commit: str
    method: str
    tasks: tuple[str, ...]
    rows: int
    issues: dict[str, int]
    dataset_issues: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0
    created: float = 0.0

    @property
    def path(self) -> str:
        return audit_dir(self.dataset, self.audit_id)

    @property
    def branch(self) -> str:
        return audit_branch(self.dataset, self.audit_id)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> AuditSummary:
        d = json.loads(raw)
        d["tasks"] = tuple(d["tasks"])
        return cls(**d)


def read_findings(data: bytes) -> pa.Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pq.read_table(pa.BufferReader(data))


def find_audits(repo: Repo, dataset: str) -> list[tuple[str, AuditSummary]]:
    """Every audit of ``dataset`` in ``repo`` as ``(branch, summary)``, newest first.

    Looked for on the ``audit-<dataset>-*`` branches, where ``flotilla data audit`` commits them.
    """
    prefix = f"{AUDIT_PREFIX}{check_dataset_name(dataset)}-"
    found: list[tuple[str, AuditSummary]] = []
    for branch in repo.branches():
        if not branch.startswith(prefix):
            continue
        audit_id = branch[len(prefix) :]
        try:
            raw = repo.get(branch, audit_dir(dataset, audit_id) + SUMMARY)
        except NotFoundError:
            continue
        found.append((branch, AuditSummary.from_json(raw)))
    return sorted(found, key=lambda bs: bs[1].created, reverse=True)


def latest_audit(repo: Repo, dataset: str) -> tuple[str, AuditSummary] | None:
    audits = find_audits(repo, dataset)
    return audits[0] if audits else None
