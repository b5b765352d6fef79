"""What the report reads from the hub besides the labels: images by id, the gate's verdict, the latest
audit's worst rows and the commits that changed the dataset (read from their typed lineage records)."""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flotilla.data import findings, layout
from flotilla.data.ingest import validation_path
from flotilla.data.layout import Manifest
from flotilla.data.report import ValidationReport
from flotilla.errors import NotFoundError
from flotilla.lineage import DataReview, IngestCommit, Key, LabelFix, read_commit

if TYPE_CHECKING:
    from flotilla.hub.repo import CommitInfo, Repo


def load_images(repo: Repo, ref: str, manifest: Manifest, ids: Iterable[str]) -> dict[str, bytes]:
    """The encoded images of ``ids`` (those that exist), reading shards only until every id is found."""
    import pyarrow as pa
    import pyarrow.compute as pc

    wanted = set(ids)
    out: dict[str, bytes] = {}
    for shard in manifest.shards:
        if not wanted - out.keys():
            break
        table = layout.decode_table(repo.get(ref, shard.path)).select(["sample_id", "image"])
        hit = table.filter(pc.is_in(table.column("sample_id"), pa.array(sorted(wanted - out.keys()), pa.string())))
        out.update(zip(hit.column("sample_id").to_pylist(), hit.column("image").to_pylist(), strict=True))
    return out


def read_validation(repo: Repo, ref: str, dataset: str) -> ValidationReport | None:
    """The gate's report recorded with the dataset at ``ref`` (``validation.json``); None when there is none."""
    try:
        return ValidationReport.from_json(repo.get(ref, validation_path(dataset)))
    except NotFoundError:
        return None


@dataclass(frozen=True)
class AuditView:
    """The latest audit of a dataset and its worst flagged rows (lowest ``worst_score`` first)."""

    branch: str
    summary: findings.AuditSummary
    rows: list[dict[str, Any]] = field(default_factory=list)
    flagged: int = 0


def latest_audit_rows(repo: Repo, dataset: str, worst: int) -> AuditView | None:
    found = findings.latest_audit(repo, dataset)
    if found is None:
        return None
    branch, summary = found
    try:
        table = findings.read_findings(repo.get(branch, summary.path + findings.FINDINGS))
    except NotFoundError:
        return AuditView(branch, summary)
    rows = [r for r in table.to_pylist() if r.get("issues")]
    rows.sort(key=lambda r: (_score(r.get("worst_score")), r["sample_id"]))
    return AuditView(branch, summary, rows[:worst], len(rows))


def _score(v: float | None) -> float:
    return 1.0 if v is None or math.isnan(v) else float(v)


@dataclass(frozen=True)
class Change:
    """A commit that changed the dataset, as its lineage record says (kind ``edit`` when it has none)."""

    commit: str
    when: str
    message: str
    kind: str
    detail: str


def history(repo: Repo, ref: str, dataset: str, limit: int = 20) -> list[Change]:
    """The newest ``limit`` commits in ``ref``'s history that changed ``datasets/<dataset>/``, newest first.

    lakeFS leaves merge commits out of a path-filtered log, so these are the commits the merges brought in:
    the ingest and append commits, the label changes, and the gate's receipts.
    """
    return [_change(c) for c in repo.log(ref, limit, prefix=layout.dataset_prefix(dataset))]


def _change(c: CommitInfo) -> Change:
    record = read_commit(c.metadata)
    when = datetime.datetime.fromtimestamp(c.creation_date, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(record, IngestCommit):
        prov = dict(record.provenance)
        kind = "append" if "append" in prov else "ingest"
        source = ", ".join(f"{k}={v}" for k, v in sorted(prov.items()) if k in ("source", "path", "seed", "n", "append"))
        detail = _samples(record.samples) + (f"; {source}" if source else "")
    elif isinstance(record, LabelFix):
        kind = "label change"
        changed = ", ".join(f"{k}: {v}" for k, v in sorted(record.labels_changed.items()))
        detail = f"{_samples(record.samples)} ({changed})" + (f"; {record.reason}" if record.reason else "")
    elif isinstance(record, DataReview) and record.step == "change":
        kind = "review"
        parts = [f"{k}: {v}" for k, v in sorted(record.labels_changed.items())]
        parts += [f"removed as {k}: {v}" for k, v in sorted(record.removed.items())]
        detail = f"audit {record.audit_id}" + (f" ({', '.join(parts)})" if parts else "")
    elif c.metadata.get(Key.VALIDATION) == "passed":
        kind, detail = "validation", "the gate's receipt"
    else:
        kind, detail = str(c.metadata.get(Key.KIND) or "edit"), ""
    return Change(c.id, when, c.message, kind, detail)


def _samples(n: int) -> str:
    return f"{n} sample" + ("" if n == 1 else "s")
