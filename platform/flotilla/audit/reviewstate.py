"""An audit's review as hub state: its own branch beside the audit, one directory, one commit per step.

::

    branch  review-<dataset>-<audit_id>                 cut from the audit branch (the audited data + its findings)
    reviews/<dataset>/<audit_id>/review.json            the review's state (:class:`ReviewState`)
    reviews/<dataset>/<audit_id>/rows.parquet           the findings rows sent, worst first
    reviews/<dataset>/<audit_id>/images/<sample>.<ext>  the flagged images, as stored: what Label Studio shows

The review branch is never merged: what reaches ``into`` is the change the review produced, cut
from ``into``'s head when it is received (:mod:`flotilla.audit.reviewing`). Each step commits with
a :class:`~flotilla.lineage.DataReview` record.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from flotilla.data.findings import AUDIT_PREFIX, AUDITS, SUMMARY, AuditSummary, audit_branch
from flotilla.errors import AuditError, NotFoundError
from flotilla.hub.repo import Repo
from flotilla.names import check_branch_id

REVIEWS = "reviews/"
REVIEW_PREFIX = "review-"
STEPS = ("selected", "sent", "received")


def review_branch(dataset: str, audit_id: str) -> str:
    return check_branch_id(f"{REVIEW_PREFIX}{dataset}-{audit_id}")


def review_dir(dataset: str, audit_id: str) -> str:
    return f"{REVIEWS}{dataset}/{audit_id}/"


def safe_name(sample_id: str) -> str:
    """A sample id as an object name (ids come from users' files)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", sample_id)


def image_path(dataset: str, audit_id: str, sample_id: str, fmt: str) -> str:
    return f"{review_dir(dataset, audit_id)}images/{safe_name(sample_id)}.{fmt or 'png'}"


@dataclass(frozen=True)
class ReviewState:
    """What a review is and how far it got (``review.json``)."""

    audit_id: str
    dataset: str
    repo: str
    audit_branch: str
    data_commit: str  # the audited data: what the reviewers see
    into: str
    branch: str
    tasks: tuple[str, ...]
    issues: tuple[str, ...] | None = None
    limit: int | None = None
    step: str = "selected"
    project_id: int | None = None
    sent: tuple[str, ...] = ()
    received: dict[str, Any] = field(default_factory=dict)  # counts per decision, reviewers
    unreviewed: tuple[str, ...] = ()
    change_commit: str = ""
    merge_commit: str = ""

    @property
    def dir(self) -> str:
        return review_dir(self.dataset, self.audit_id)

    def advance(self, step: str, **changes: Any) -> ReviewState:
        if step not in STEPS:
            raise AuditError(f"unknown review step {step!r}")
        return replace(self, step=step, **changes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, raw: bytes | str) -> ReviewState:
        d = json.loads(raw)
        for k in ("tasks", "sent", "unreviewed"):
            d[k] = tuple(d.get(k) or ())
        d["issues"] = None if d.get("issues") is None else tuple(d["issues"])
        return cls(**d)


def resolve_audit(repo: Repo, audit: str) -> tuple[str, AuditSummary]:
    """An audit named by its branch (``audit-<dataset>-<id>``) or its id: ``(branch, summary)``; a clear error otherwise."""
    branches = [b for b in repo.branches() if b.startswith(AUDIT_PREFIX)]
    candidates = [b for b in branches if b == audit] or [b for b in branches if b.endswith(f"-{audit}")]
    found = []
    for b in candidates:
        for o in repo.list(b, AUDITS):
            parts = o.path[len(AUDITS) :].split("/")
            if len(parts) == 3 and parts[2] == SUMMARY and audit_branch(parts[0], parts[1]) == b:
                found.append((b, AuditSummary.from_json(repo.get(b, o.path))))
    if not found:
        shown = ", ".join(branches[:10]) or "(none)"
        raise NotFoundError(
            f"no audit {audit!r} in repository {repo.name!r}",
            hint=f"audits there: {shown}; run one with 'flotilla data audit'",
        )
    if len(found) > 1:
        raise AuditError(f"{audit!r} names {len(found)} audits: {', '.join(b for b, _ in found)}", hint="pass the branch")
    return found[0]


def read_review(repo: Repo, summary: AuditSummary) -> ReviewState | None:
    """The review of ``summary``'s audit, or None when it has none yet."""
    branch = review_branch(summary.dataset, summary.audit_id)
    if not repo.branch_exists(branch):
        return None
    try:
        return ReviewState.from_json(repo.get(branch, review_dir(summary.dataset, summary.audit_id) + "review.json"))
    except NotFoundError:
        return None
