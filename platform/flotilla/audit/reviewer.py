"""The scripted reviewer: decisions from known truth, submitted through Label Studio's API as a person's would be.

Tests and the demo cannot wait for a person, but the review must still go through the real server.
Given the true labels (and which samples should go, with the reason), for each task it:

- removes a sample the truth says should go (not a face, a duplicate), with that reason;
- accepts the suggestion when every suggested label is the true one;
- keeps the labels when every current label is the true one;
- otherwise sets the labels that are wrong to their true values.

A sample the truth does not know is kept. For a synthetic dataset the truth is the generator's
oracle (:func:`flotilla.active.truth.synthetic_truth`) and duplicates are known from the findings
(:func:`duplicate_removals`: of two copies, the later id goes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flotilla.active.truth import SYNTHETIC_ID, synthetic_truth
from flotilla.audit.reviewconfig import Action, decision_items
from flotilla.audit.reviewing import sent_rows
from flotilla.audit.reviewrows import FlaggedRow, ReviewTask, review_tasks
from flotilla.audit.reviewstate import read_review, resolve_audit
from flotilla.data.store import read_manifest
from flotilla.errors import AuditError
from flotilla.hub.client import Hub
from flotilla.labelstudio import LabelStudioClient

AGE_TOLERANCE = 5.0  # years: a suggested age this close to the truth is accepted


def decide(
    row: FlaggedRow, tasks: Sequence[ReviewTask], truth: Mapping[str, float] | None, removal: str | None = None
) -> tuple[Action, str, dict[ReviewTask, float]]:
    """The scripted decision for one row: (action, reason, values to set)."""
    if removal:
        return "remove", removal, {}
    if truth is None:
        return "keep", "", {}
    known = [t for t in tasks if t.column in truth]
    suggested = [t for t in known if row.suggested.get(t.column) is not None]
    if suggested and all(t.same(row.suggested[t.column], truth[t.column], AGE_TOLERANCE) for t in suggested):
        wrong_elsewhere = [t for t in known if t not in suggested and not t.same(row.given.get(t.column), truth[t.column])]
        if not wrong_elsewhere:
            return "accept", "", {}
    wrong = {t: truth[t.column] for t in known if not t.same(row.given.get(t.column), truth[t.column], AGE_TOLERANCE)}
    return ("set", "", wrong) if wrong else ("keep", "", {})


def scripted_review(
    rows: Sequence[FlaggedRow],
    tasks: Sequence[ReviewTask],
    truth: Mapping[str, Mapping[str, float]],
    removals: Mapping[str, str] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Per sample id, the result items the scripted reviewer submits."""
    out = {}
    for row in rows:
        action, reason, values = decide(row, tasks, truth.get(row.sample_id), (removals or {}).get(row.sample_id))
        out[row.sample_id] = decision_items(action, reason=reason, values=values)
    return out


def duplicate_removals(rows: Sequence[FlaggedRow]) -> dict[str, str]:
    """Of each flagged duplicate pair, the copy with the later id goes (``"duplicate"``); the first stays."""
    return {r.sample_id: "duplicate" for r in rows if r.duplicate_of and r.sample_id > r.duplicate_of}


def annotate_review(
    hub: Hub,
    repo: str,
    audit: str,
    *,
    client: LabelStudioClient,
    truth: Mapping[str, Mapping[str, float]] | None = None,
    removals: Mapping[str, str] | None = None,
) -> int:
    """Review every task of ``audit``'s review through Label Studio's API; the number reviewed.

    Without ``truth``, the dataset must be synthetic: its generator's oracle gives the truth of the
    samples with synthetic ids, and duplicates are removed by :func:`duplicate_removals`.
    """
    r = hub.repo(repo)
    _, summary = resolve_audit(r, audit)
    state = read_review(r, summary)
    if state is None or state.project_id is None:
        raise AuditError(f"the review of audit {summary.audit_id} is not in Label Studio yet", hint="send it first")
    rows = sent_rows(r, state)
    if truth is None:
        ids = [row.sample_id for row in rows if SYNTHETIC_ID.match(row.sample_id)]
        truth = synthetic_truth(read_manifest(r, state.data_commit, state.dataset), ids)
        removals = {**duplicate_removals(rows), **(removals or {})}
    schema = read_manifest(r, state.data_commit, state.dataset).label_schema
    results = scripted_review(rows, review_tasks(state.tasks, schema), truth, removals)
    done = 0
    for task in sorted(client.tasks(state.project_id), key=lambda t: t.id):
        sid = str(task.data.get("sample_id"))
        if sid in results:
            client.annotate(task.id, results[sid])
            done += 1
    return done
