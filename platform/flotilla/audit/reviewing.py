"""An audit's review loop: flagged samples to Label Studio, reviewed decisions back to the data as one gated commit.

::

    send_review(hub, repo, "20261206-ab12cd")      flagged rows (worst first) → review branch → Label Studio project
      ... reviewers decide in the browser, or annotate_review (the scripted reviewer) ...
    receive_review(hub, repo, "20261206-ab12cd")   decisions → relabel + remove deltas → gate → one merge into ``into``

**Where the review branch is cut.** From the audit branch: it holds the audited data and its
findings, so the images and "current" labels the reviewers see are exactly what the audit judged,
whatever ``into`` did since. The branch is a record and is never merged.

**Where the change is cut.** From ``into``'s head when the review is received, like any label fix
(:func:`flotilla.data.relabel`): decisions are checked against the labels as they are *now*
(a sample removed meanwhile is named, not resurrected), staged as a relabel delta and a remove delta
(each with the audit id and the reviewers), committed once with a :class:`~flotilla.lineage.DataReview`
record, judged by the gate with the thresholds the dataset was admitted with, and merged — the merge
commit on ``into`` carries the audit id too. A gate refusal, a Label Studio that does not answer or
an invalid decision leaves ``into`` untouched and the review at ``sent``, to be received again.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import pyarrow as pa
import pyarrow.compute as pc

from flotilla.active.rounds import parquet_bytes, read_table
from flotilla.audit.reviewconfig import Changes, label_config, parse_review, require_valid, task_payload, to_changes
from flotilla.audit.reviewrows import FlaggedRow, ReviewTask, check_issues, flagged_rows, review_tasks, to_row
from flotilla.audit.reviewstate import ReviewState, image_path, read_review, resolve_audit, review_branch, safe_name
from flotilla.data.findings import FINDINGS, AuditSummary, read_findings
from flotilla.data.gate import require_clean
from flotilla.data.ingest import validate_and_merge
from flotilla.data.labelfix import LabelEdit, admitted_thresholds, plan_label_fix, stage_label_change
from flotilla.data.loader import HubDataset
from flotilla.data.pinning import DataRef
from flotilla.data.removal import Removal, plan_removal, stage_removal
from flotilla.data.report import Thresholds, ValidationReport
from flotilla.data.store import read_labels, read_manifest
from flotilla.errors import AuditError, LabelStudioError
from flotilla.hub.client import Hub
from flotilla.hub.experiment import SCRATCH, Retention
from flotilla.hub.repo import Repo
from flotilla.labelstudio import LabelStudioClient
from flotilla.lineage import DataReview

Say = Callable[[str], None]


def project_title(summary: AuditSummary) -> str:
    return f"flotilla review {summary.dataset} {summary.audit_id}"


def _quiet(_: str) -> None:
    return None


def _write_images(hub: Hub, repo: Repo, summary: AuditSummary, branch: str, ids: set[str]) -> dict[str, str]:
    """The flagged samples' images, as stored (no re-encoding), one object each on the review branch."""
    data = HubDataset(DataRef(repo.name, summary.data_commit, summary.dataset), hub.credentials)
    paths: dict[str, str] = {}
    for shard in data.manifest.shards:
        table = data.read_shard(shard)
        for sid, image, fmt in zip(*(table.column(c).to_pylist() for c in ("sample_id", "image", "format")), strict=True):
            if sid in ids and sid not in paths:
                paths[sid] = image_path(summary.dataset, summary.audit_id, sid, str(fmt or "png").lower())
                repo.put(branch, paths[sid], image)
    missing = sorted(ids - paths.keys())
    if missing:
        raise AuditError(
            f"{len(missing)} flagged sample(s) have no image in {summary.dataset!r} at {summary.data_commit[:12]}: "
            + ", ".join(missing[:10]),
            hint="the findings do not belong to this data; run the audit again",
        )
    return paths


def _select(hub: Hub, repo: Repo, branch: str, summary: AuditSummary, *, into: str, issues: tuple[str, ...] | None,
            limit: int | None, say: Say) -> ReviewState:  # fmt: skip
    findings = read_findings(repo.get(branch, summary.path + FINDINGS))
    rows = flagged_rows(findings, summary.tasks, issues=issues, limit=limit)
    if not rows:
        what = f" for {', '.join(issues)}" if issues else ""
        raise AuditError(f"audit {summary.audit_id} flagged no sample{what}: nothing to review")
    state = ReviewState(
        summary.audit_id, summary.dataset, repo.name, branch, summary.data_commit, into,
        review_branch(summary.dataset, summary.audit_id), tuple(summary.tasks), issues, limit,
        sent=tuple(r.sample_id for r in rows),
    )  # fmt: skip
    order = pa.array(list(state.sent), pa.string())
    chosen = findings.filter(pc.is_in(findings.column("sample_id"), order))
    index = {sid: i for i, sid in enumerate(state.sent)}
    chosen = chosen.take(pa.array(sorted(range(chosen.num_rows), key=lambda i: index[chosen.column("sample_id")[i].as_py()])))
    keep = Retention(on_success="keep", on_failure="delete")
    with repo.transact(f"{summary.dataset}-{summary.audit_id}", branch, branch=state.branch, retention=keep) as exp:
        _write_images(hub, repo, summary, exp.branch, set(state.sent))
        exp.put(state.dir + "rows.parquet", parquet_bytes(chosen))
        exp.put(state.dir + "review.json", state.to_json())
        record = DataReview(summary.dataset, summary.audit_id, "select", summary.data_commit, detail={"rows": len(rows)})
        exp.commit(
            f"Review of audit {summary.audit_id}: {len(rows)} flagged sample(s) of {summary.dataset}", record.to_metadata()
        )
    say(f"review of audit {summary.audit_id}: {len(rows)} flagged sample(s) on branch {state.branch}")
    return state


def sent_rows(repo: Repo, state: ReviewState) -> list[FlaggedRow]:
    """The rows a review sent, worst first, as the reviewers saw them."""
    return [to_row(r, state.tasks) for r in read_table(repo, state.branch, state.dir + "rows.parquet").to_pylist()]


def send_review(
    hub: Hub | None,
    repo: str,
    audit: str,
    *,
    client: LabelStudioClient,
    issues: Sequence[str] | None = None,
    limit: int | None = None,
    into: str = "main",
    say: Say | None = None,
) -> ReviewState:
    """Send ``audit``'s flagged samples (only ``issues`` when given, worst first, at most ``limit``) to Label Studio.

    Sending again reuses the review (its branch, its project) and imports nothing twice.
    """
    say = say or _quiet
    hub = hub or Hub()
    r = hub.repo(repo)
    branch, summary = resolve_audit(r, audit)
    client.whoami()  # Label Studio down: said before any branch is made
    state = read_review(r, summary)
    if state is None:
        state = _select(hub, r, branch, summary, into=into, issues=check_issues(issues), limit=limit, say=say)
    elif state.step == "received":
        raise AuditError(f"the review of audit {summary.audit_id} was received already (merge {state.merge_commit[:12]})")
    tasks = _review_tasks(r, state)
    project = client.ensure_project(project_title(summary), label_config(tasks), sampling="Uncertainty sampling",
                                    model_version=f"audit-{summary.audit_id}")  # fmt: skip
    if state.step == "sent" and state.project_id == project.id and client.tasks(project.id):
        say(f"the review of audit {summary.audit_id} is in Label Studio already (project {project.id})")
        return state
    prefix = f"{state.branch}/{state.dir}images/"
    if not client.s3_storages(project.id):
        creds = hub.credentials
        client.create_s3_storage(
            project.id, title=f"lakeFS {repo}/{state.branch}", endpoint=creds.endpoint, bucket=repo, prefix=prefix,
            access_key_id=creds.access_key_id, secret_access_key=creds.secret_access_key,
        )  # fmt: skip
    images = {o.path.rsplit("/", 1)[1].rsplit(".", 1)[0]: o.path for o in r.list(state.branch, state.dir + "images/")}
    rows = sent_rows(r, state)
    payload = [
        task_payload(
            row,
            tasks,
            f"s3://{repo}/{state.branch}/{images[safe_name(row.sample_id)]}",
            model_version=f"audit-{summary.audit_id}",
        )
        for row in rows
    ]
    client.import_tasks(project.id, payload)
    sent = state.advance("sent", project_id=project.id)
    r.put(state.branch, state.dir + "review.json", sent.to_json())
    record = DataReview(
        summary.dataset, summary.audit_id, "send", summary.data_commit, detail={"project": project.id, "tasks": len(payload)}
    )
    r.commit(
        state.branch, f"Review of audit {summary.audit_id}: {len(payload)} task(s) sent to Label Studio", record.to_metadata()
    )
    say(f"review of audit {summary.audit_id}: {len(payload)} task(s) in Label Studio: {client.url}/projects/{project.id}")
    return sent


@dataclass(frozen=True)
class ReviewResult:
    """What a received review changed on ``into`` (``merge_commit`` None: every decision was "keep")."""

    state: ReviewState
    relabelled: dict[str, int]  # column → samples
    removed: dict[str, int]  # reason → samples
    kept: int
    unreviewed: int
    merge_commit: str | None
    report: ValidationReport | None = None

    def summary(self) -> str:
        rel = ", ".join(f"{c} {n}" for c, n in sorted(self.relabelled.items())) or "none"
        rem = ", ".join(f"{why} {n}" for why, n in sorted(self.removed.items())) or "none"
        head = f"relabelled: {rel}; removed: {rem}; kept {self.kept}; unreviewed {self.unreviewed}"
        if self.merge_commit is None:
            return f"{head}; nothing to change, {self.state.into!r} untouched"
        return f"{head}; merged into {self.state.into!r} as {self.merge_commit[:12]}"


def plan_review_changes(labels: pa.Table, changes: Changes, dataset: str) -> tuple[LabelEdit | None, Removal | None]:
    """The checked relabel and removal a review's decisions make of ``labels`` (None: no such change)."""
    removal = plan_removal(labels, changes.removals, dataset) if changes.removals else None
    relabels = {s: v for s, v in changes.relabels.items() if s not in changes.removals}
    edit = plan_label_fix(labels, relabels, dataset) if relabels else None
    return (edit if edit and edit.samples else None), removal


def receive_review(
    hub: Hub | None,
    repo: str,
    audit: str,
    *,
    client: LabelStudioClient,
    thresholds: Thresholds | None = None,
    say: Say | None = None,
) -> ReviewResult:
    """Read the review's decisions and merge them into its ``into`` as one validated change linked to the audit."""
    say = say or _quiet
    hub = hub or Hub()
    r = hub.repo(repo)
    _, summary = resolve_audit(r, audit)
    state = read_review(r, summary)
    if state is None or state.step != "sent" or state.project_id is None:
        step = "not started" if state is None else state.step
        raise AuditError(
            f"the review of audit {summary.audit_id} is {step!r}: only a review sent to Label Studio can be received",
            hint="send it first (flotilla data review <audit> --send)" if step != "received" else "audit the data again",
        )
    tasks = _review_tasks(r, state)
    rows = {row.sample_id: row for row in sent_rows(r, state)}
    parsed = require_valid(parse_review(tasks, rows, client.export(state.project_id)))
    unreviewed = tuple(s for s in state.sent if s not in parsed.decisions)
    if not parsed.decisions:
        raise AuditError(
            f"no task of the review of audit {summary.audit_id} has a decision yet ({len(unreviewed)} unreviewed)",
            hint=f"review them in Label Studio ({client.url}/projects/{state.project_id}), then receive again",
        )
    changes = to_changes(parsed.decisions)
    require_clean(r, state.into, f"apply the review of audit {summary.audit_id} to {state.into!r}")
    base = r.resolve(state.into)
    edit, removal = plan_review_changes(read_labels(r, base, summary.dataset), changes, summary.dataset)
    relabelled = dict(edit.changed) if edit else {}
    removed = removal.per_reason() if removal else {}
    detail = {"kept": len(changes.kept), "unreviewed": len(unreviewed), "reviewers": list(changes.reviewers)}
    record = DataReview(summary.dataset, summary.audit_id, "change", base, relabelled, removed, detail)
    merged, report, change = None, None, ""
    if edit or removal:
        source = {"audit": summary.audit_id, "reviewers": ", ".join(changes.reviewers)}
        why = f"review of audit {summary.audit_id}"
        name = f"{summary.dataset}-{uuid.uuid4().hex[:12]}"
        with r.transact(name, base, prefix="review-fix-", retention=SCRATCH) as fix:
            if edit:
                stage_label_change(r, fix.branch, summary.dataset, edit, reason=why, source=source)
            if removal:
                stage_removal(r, fix.branch, summary.dataset, removal, reason=why, source=source)
            n = (edit.samples if edit else 0) + (removal.samples if removal else 0)
            change = fix.commit(
                f"Review of audit {summary.audit_id}: {n} sample(s) of {summary.dataset} changed", record.to_metadata()
            ).id
            report, merged = validate_and_merge(
                hub, repo, fix.branch, summary.dataset, into=state.into, merge=True,
                thresholds=thresholds or admitted_thresholds(r, base, summary.dataset),
                metadata=replace(record, step="merge").to_metadata(),
            )  # fmt: skip
    done = state.advance(
        "received",
        received={"decisions": len(parsed.decisions), "kept": len(changes.kept), "relabelled": relabelled, "removed": removed,
                  "reviewers": list(changes.reviewers)},
        unreviewed=unreviewed, change_commit=change, merge_commit=merged or "",
    )  # fmt: skip
    r.put(state.branch, state.dir + "review.json", done.to_json())
    r.commit(
        state.branch,
        f"Review of audit {summary.audit_id} received: {len(parsed.decisions)} decision(s)",
        DataReview(
            summary.dataset, summary.audit_id, "receive", base, relabelled, removed, {**detail, "merge": merged}
        ).to_metadata(),
    )
    result = ReviewResult(done, relabelled, removed, len(changes.kept), len(unreviewed), merged, report)
    say(result.summary())
    return result


def review_status(hub: Hub | None, repo: str, audit: str, *, client: LabelStudioClient | None = None) -> dict[str, object]:
    """Where the review of ``audit`` stands (and, with ``client``, how many of its tasks have a decision)."""
    hub = hub or Hub()
    r = hub.repo(repo)
    branch, summary = resolve_audit(r, audit)
    state = read_review(r, summary)
    out: dict[str, object] = {"audit": summary.audit_id, "dataset": summary.dataset, "audit_branch": branch,
                              "flagged": sum(summary.issues.values()), "step": state.step if state else "not sent"}  # fmt: skip
    if state is None:
        return out
    out |= {"branch": state.branch, "into": state.into, "sent": len(state.sent), "project": state.project_id,
            "received": state.received, "merge_commit": state.merge_commit}  # fmt: skip
    if client is not None and state.project_id is not None and state.step == "sent":
        try:
            tasks = client.tasks(state.project_id)
        except LabelStudioError as exc:  # the status of the hub side still stands
            out["reviewed"] = f"unknown ({exc.message})"
        else:
            out["reviewed"] = sum(1 for t in tasks if t.total_annotations + t.cancelled_annotations > 0)
    return out


def _review_tasks(r: Repo, state: ReviewState) -> tuple[ReviewTask, ...]:
    """The review's controls from the audited commit's declared label schema (so a UTKFace ethnicity gets its names)."""
    return review_tasks(state.tasks, read_manifest(r, state.data_commit, state.dataset).label_schema)
