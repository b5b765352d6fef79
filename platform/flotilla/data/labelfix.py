"""Label fixes: correct some labels of a dataset, through the gate, in one validated merge.

::

    relabel(hub, "faces", "faces", {"syn-1-0000007": {"gender": "female"}, ...})
      → checked against the labels table at main's commit      (unknown ids, columns, values: one SpecError)
      → branch relabel-<dataset>-<id> from that commit          (repo.transact, the one branch lifecycle)
      → labels.parquet (and the manifest's label counts) rewritten, committed as a LabelFix record
      → the gate re-runs and the fix merges into main            (validate_and_merge: receipt + hook)

Images are untouched, so every image shard keeps its checksum (and every node's cache of it); the
fix is a small commit whose metadata says how many labels of which column changed. That merge commit
is what ``flotilla models stale --since <commit>`` takes to list the models trained on the old labels.
The gate judges the fix by the thresholds the dataset was last admitted with (its ``validation.json``).
"""

from __future__ import annotations

import difflib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from flotilla.data import deltas, layout
from flotilla.data.deltas import Delta
from flotilla.data.gate import require_clean
from flotilla.data.ingest import admitted_thresholds, validate_and_merge
from flotilla.data.report import Thresholds, ValidationReport, failure_hint, failure_message
from flotilla.data.schema import FACE_SCHEMA, LabelSchema
from flotilla.data.store import read_dataset
from flotilla.errors import DataValidationError, SpecError
from flotilla.hub.client import Hub
from flotilla.hub.experiment import SCRATCH
from flotilla.hub.repo import Repo
from flotilla.lineage import LabelFix

LabelChanges = Mapping[str, Mapping[str, Any]]  # sample id → {label column: new value (None: unknown)}
_SHOWN = 10


@dataclass(frozen=True)
class LabelEdit:
    """A checked label fix, not yet written: the new table and what differs from the old one."""

    table: pa.Table
    changed: Mapping[str, int]  # column → samples whose value in it changed
    samples: int  # samples with at least one changed label
    touched: frozenset[str] = frozenset()  # their ids


@dataclass(frozen=True)
class RelabelResult:
    """A label fix that reached ``into`` (or, with ``merge_commit`` None, changed nothing: every value was already so)."""

    repo: str
    dataset: str
    into: str
    base_commit: str  # ``into``'s commit the fix was cut from and checked against
    commit: str  # the fix's own commit (its LabelFix metadata); ``base_commit`` when nothing changed
    merge_commit: str | None  # the validated merge into ``into``: pass it to ``stale(since=...)``
    samples: int
    changed: Mapping[str, int] = field(default_factory=dict)
    report: ValidationReport | None = None

    def summary(self) -> str:
        if self.merge_commit is None:
            return f"no label of {self.dataset!r} changed (every value was already the one given); nothing committed"
        per = ", ".join(f"{c} {n}" for c, n in sorted(self.changed.items()))
        into = f"merged into {self.into!r} as {self.merge_commit[:12]}"
        return f"{self.samples} sample(s) of {self.dataset!r} relabelled ({per}); {into}"


def plan_label_fix(labels: pa.Table, changes: LabelChanges, dataset: str = "", schema: LabelSchema = FACE_SCHEMA) -> LabelEdit:
    """Check ``changes`` against ``labels`` and ``schema`` (the dataset's declared label columns: each value
    checked by its column's kind, range and classes) and build the fixed table; one SpecError lists every problem.

    Pure (no hub): the part of :func:`relabel` that decides what changes, testable on its own.
    """
    if not changes:
        raise SpecError(f"no label changes given for dataset {dataset!r}", hint="pass {sample_id: {column: value}}")
    ids = labels.column("sample_id").to_pylist()
    row = {sid: i for i, sid in enumerate(ids)}
    names = schema.names
    columns = {c: labels.column(c).to_pylist() for c in names}
    problems: list[str] = []
    unknown = [sid for sid in changes if sid not in row]
    if unknown:
        shown = ", ".join(map(repr, unknown[:_SHOWN])) + (f" and {len(unknown) - _SHOWN} more" if len(unknown) > _SHOWN else "")
        problems.append(f"{len(unknown)} sample id(s) not in the dataset: {shown}")
    touched: dict[str, set[str]] = {c: set() for c in names}
    for sid, new in changes.items():
        if not isinstance(new, Mapping):
            problems.append(f"sample {sid!r}: expected {{column: value}}, got {type(new).__name__}")
            continue
        for column, value in new.items():
            if column not in columns:
                close = difflib.get_close_matches(str(column), names, n=1)
                problems.append(
                    f"sample {sid!r}: {column!r} is not a label column"
                    + (f" (did you mean {close[0]!r}?)" if close else f" (label columns: {', '.join(names)})")
                )
                continue
            stored, why = schema[column].coerce(value)
            if why:
                problems.append(f"sample {sid!r}: {why}")
            elif sid in row and columns[column][row[sid]] != stored:
                columns[column][row[sid]] = stored
                touched[column].add(sid)
    if problems:
        raise SpecError(
            f"label fix for dataset {dataset!r} is invalid ({len(problems)} problem(s)); nothing was changed:",
            problems,
            hint=f"sample ids are the dataset's own (flotilla.data.read_labels); label columns: {schema.describe()}",
        )
    table = labels
    for column, values in columns.items():
        if touched[column]:
            i = table.schema.get_field_index(column)
            table = table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type))
    return LabelEdit(
        table,
        {c: len(s) for c, s in touched.items() if s},
        len(set().union(*touched.values())),
        frozenset(set().union(*touched.values())),
    )


def stage_label_change(
    repo: Repo, branch: str, dataset: str, edit: LabelEdit, *, reason: str = "", source: Mapping[str, str] | None = None
) -> Delta:
    """Write ``edit`` on ``branch`` as a relabel delta (the changed samples' new rows) plus one claim per sample.

    Nothing existing is rewritten, so a change on another branch that touches other samples merges
    beside this one; a change of the same sample writes the same claim path, and lakeFS refuses
    whichever merges second (:func:`~flotilla.data.ingest.validate_and_merge` names the samples).
    """
    ids = [sid for sid in edit.table.column("sample_id").to_pylist() if sid in edit.touched]
    rows = edit.table.filter(pc.is_in(edit.table.column("sample_id"), pa.array(ids, pa.string())))
    listing = [o.path for o in repo.list(branch, deltas.deltas_prefix(dataset))]
    delta = deltas.new_delta("relabel", rows, listing, dataset, reason=reason, source=source)
    repo.put(branch, delta.labels_path(dataset), layout.encode_labels(rows))  # the folded table's types: the schema's
    for sid in ids:
        repo.put(branch, *deltas.claim(dataset, sid, delta))
    repo.put(branch, delta.path(dataset), delta.to_json())
    return delta


def relabel(
    hub: Hub,
    repo_name: str,
    dataset: str,
    changes: LabelChanges,
    *,
    into: str = "main",
    reason: str = "",
    thresholds: Thresholds | None = None,
) -> RelabelResult:
    """Apply ``{sample_id: {column: value}}`` to ``dataset`` on ``into``: validated, merged, recorded.

    Values, per the dataset's declared label schema: a regression column (``age``) a number in its range;
    a binary or categorical one (``gender``, ``emotion``, ``ethnicity``) a code or its class name
    (``"female"``, ``"happy"``); None makes a label unknown. Anything wrong (an unknown sample id or
    column, a value out of range, a fix the gate refuses) raises before ``into`` changes, and leaves
    no branch behind.
    """
    repo = hub.repo(repo_name)
    require_clean(repo, into, f"fix labels of {dataset!r} on {into!r}")
    base = repo.resolve(into)
    manifest, labels = read_dataset(repo, base, dataset)  # a missing dataset: NotFoundError
    edit = plan_label_fix(labels, changes, dataset, manifest.label_schema)
    if not edit.samples:
        return RelabelResult(repo_name, dataset, into, base, base, None, 0)
    record = LabelFix(dataset, edit.samples, edit.changed, base, reason)
    fix = repo.transact(f"{dataset}-{uuid.uuid4().hex[:12]}", base, prefix="relabel-", retention=SCRATCH)
    with fix:
        stage_label_change(repo, fix.branch, dataset, edit, reason=reason)
        commit = fix.commit(f"Fix {edit.samples} label(s) of {dataset}" + (f": {reason}" if reason else ""), record.to_metadata())
        try:
            report, merged = validate_and_merge(
                hub,
                repo_name,
                fix.branch,
                dataset,
                into=into,
                thresholds=thresholds or admitted_thresholds(repo, base, dataset),
                merge=True,
            )
        except DataValidationError as exc:
            if isinstance(exc.report, ValidationReport):  # its hint names the branch, which is about to go
                exc.reword(
                    f"{failure_message(exc.report)}\nthe label fix was not applied; {into!r} was not changed",
                    hint=failure_hint(exc.report, "correct the values the report names and call relabel again"),
                )
            raise
    return RelabelResult(repo_name, dataset, into, base, commit.id, merged, edit.samples, edit.changed, report)
