"""Ingest: every dataset lands on its own branch, is validated, committed, then merged.

::

    branch ingest-<name>-<time>-<random> from main's current commit
      → build shards in worker processes           (generate, encode, and the gate's look at every image)
      → upload them as they come, labels, manifest (streamed, with progress per shard)
      → validate: labels + the workers' shard facts (the gate; the same report as from the hub)
      → write validation.json (+ fingerprints), commit with provenance
      → passed: merge into main, delete the branch
        failed: main untouched, branch kept for fixing, DataValidationError

The validation report records the lakeFS checksums of the labels table, the
manifest and every image shard it validated; the repository's pre-merge hook
(:mod:`flotilla.data.gate`) refuses to merge a dataset whose report is missing,
failed, or stale, so a direct merge cannot slip past it with data the gate
never saw. (The hook checks the receipt, not the data: a client that forges a
passing report with matching checksums is out of its reach — see gate.py.)
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from flotilla.data import deltas, layout
from flotilla.data.gate import install_gate, require_clean
from flotilla.data.layout import Manifest, Sample
from flotilla.data.report import failure_hint, failure_message
from flotilla.data.schema import FACE_SCHEMA, LabelSchema
from flotilla.data.shardwork import SyntheticPlan
from flotilla.data.store import read_dataset, read_manifest, write_dataset
from flotilla.data.validate import Thresholds, ValidationReport, validate
from flotilla.errors import (
    ConfigError,
    ConflictError,
    DataValidationError,
    FlotillaError,
    MergeConflictError,
    NotFoundError,
)
from flotilla.hub.client import Hub
from flotilla.hub.experiment import SCRATCH, Retention
from flotilla.hub.repo import Repo
from flotilla.lineage import IngestCommit, ValidatedMerge, ValidationReceipt
from flotilla.settings import DEFAULT_REPO

CREATE_REPO_HINT = (
    "check the name; to create a new repository pass --create-repo (flotilla data generate / import), "
    "create_repo=True (Python) or 'create_repo: true' (an ingest job spec)"
)


@dataclass
class IngestResult:
    repo: str
    dataset: str
    branch: str
    commit: str
    merge_commit: str | None
    report: ValidationReport
    manifest: Manifest
    report_paths: dict[str, Path]

    @property
    def passed(self) -> bool:
        return self.report.passed


def validation_path(name: str) -> str:
    return f"{layout.dataset_prefix(name)}validation.json"


def admitted_thresholds(repo: Repo, ref: str, dataset: str) -> Thresholds:
    """The thresholds the dataset's last validation at ``ref`` used (its ``validation.json``); the defaults without one.

    A failed ingest records its report on its branch too, so re-validating that branch after a fix judges it
    by the thresholds it was imported with (``--min-per-group``, a ``thresholds:`` block...), not the defaults.
    """
    try:
        recorded = json.loads(repo.get(ref, validation_path(dataset))).get("thresholds")
    except (NotFoundError, ValueError):
        return Thresholds()
    return Thresholds.model_validate(recorded) if isinstance(recorded, dict) else Thresholds()


def _shard_tables(repo: Repo, ref: str, name: str, manifest: Manifest) -> Iterable[Any]:
    """Each image shard, checked against the sha256 its manifest recorded at ingest, then decoded.

    Shards are immutable: one replaced in place (the manifest still describing the old one) would
    pass a gate that looked only at labels and manifest, and then fail every training read.
    """
    for s in manifest.shards:
        data = repo.get(ref, s.path)
        if hashlib.sha256(data).hexdigest() != s.sha256:
            raise DataValidationError(
                f"image shard {s.path} of dataset {name!r} at {ref!r} is not the one its manifest recorded at ingest",
                hint="image shards are immutable: land corrected images by ingesting them again "
                "(flotilla data import/generate), not by replacing a shard on a branch",
            )
        try:
            yield layout.decode_table(data)
        except Exception as exc:
            raise DataValidationError(
                f"image shard {s.path} of dataset {name!r} at {ref!r} is not readable: {exc}", hint="ingest the dataset again"
            ) from None


def validate_ref(repo: Repo, ref: str, name: str, thresholds: Thresholds | None = None) -> ValidationReport:
    """Run the gate on what ``ref`` holds for dataset ``name`` (reads labels and every shard)."""
    manifest, labels = read_dataset(repo, ref, name)
    changes = deltas.read_deltas(name, lambda p: [o.path for o in repo.list(ref, p)], lambda p: repo.get(ref, p))
    shards = _without(_shard_tables(repo, ref, name, manifest), deltas.removed_ids(changes))
    return validate(
        labels, shards, thresholds or Thresholds(), name=name, labelled=manifest.labelled, schema=manifest.label_schema
    )


def _without(tables: Iterable[Any], removed: frozenset[str]) -> Iterable[Any]:
    """The shards less the images of removed samples (their shards are immutable; the remove delta says they went)."""
    gone = pa.array(sorted(removed), pa.string())
    for t in tables:
        if removed and "sample_id" in t.column_names:
            t = t.filter(pc.invert(pc.is_in(t.column("sample_id"), gone)))
        yield t


def fingerprint(repo: Repo, ref: str, name: str) -> dict[str, str]:
    """lakeFS checksums of what the gate looked at (labels, manifest, every image shard); the pre-merge
    hook compares each with what the merge brings, so nothing the gate saw can change unseen."""
    prefix = layout.dataset_prefix(name)
    out = {
        "labels.parquet": repo.stat(ref, layout.labels_path(name)).checksum,
        "manifest.json": repo.stat(ref, layout.manifest_path(name)).checksum,
    }
    for s in read_manifest(repo, ref, name).shards:
        out[s.path[len(prefix) :]] = repo.stat(ref, s.path).checksum
    for o in repo.list(ref, deltas.deltas_prefix(name)):  # appends and label changes: the hook also refuses new ones
        out[o.path[len(prefix) :]] = o.checksum
    return out


def record_report(repo: Repo, branch: str, name: str, report: ValidationReport, *, at: str | None = None) -> None:
    """Write the report, with the fingerprint of ``at`` (default: the branch as it is), onto ``branch``."""
    doc = json.loads(report.to_json())
    doc["fingerprint"] = fingerprint(repo, at or branch, name)
    repo.put(branch, validation_path(name), json.dumps(doc, indent=2, sort_keys=True))


def save_report_files(report: ValidationReport, out_dir: Path, name: str) -> dict[str, Path]:
    """Write ``<name>-validation.json`` and the ``<name>-labels.png`` plot into ``out_dir``.

    Any failure (an unwritable or misnamed directory, a full disk, a plotting error) is a
    :class:`ConfigError` naming the directory, never a raw traceback.
    """
    paths = {"json": out_dir / f"{name}-validation.json", "png": out_dir / f"{name}-labels.png"}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        paths["json"].write_text(report.to_json())
        report.plot(paths["png"])
    except Exception as exc:
        raise ConfigError(
            f"cannot write the validation report of dataset {name!r} to {out_dir}: {type(exc).__name__}: {exc}",
            hint="pass a writable report directory (--report-dir, or report_dir=...)",
        ) from exc
    return paths


def _save_before_commit(report: ValidationReport, report_dir: Path, name: str, branch: str) -> dict[str, Path]:
    try:
        return save_report_files(report, report_dir, name)
    except ConfigError as exc:
        raise exc.reword(f"{exc.message}; nothing was ingested (the ingest branch {branch!r} was deleted)") from exc.__cause__


def target_repo(hub: Hub, name: str, *, create: bool = False) -> Repo:
    """The repository an ingest writes into: created only when asked (``create``), or when it is the default one.

    A named repository must exist, so a typo (``--repo facse``) is an error listing the existing ones, not a
    new empty repository. The default repository (``faces``) is created on first use: a user who never named
    one (``flotilla data generate`` on a fresh hub, the quickstart, ``make demo``) asked for no particular
    repository, so there is nothing to mistype.
    """
    if create or name == DEFAULT_REPO:
        return hub.ensure_repo(name)
    return hub.existing_repo(name, hint=CREATE_REPO_HINT)


def ingest(
    hub: Hub,
    repo_name: str,
    name: str,
    samples: Iterable[Sample] | SyntheticPlan,
    *,
    provenance: dict[str, Any],
    into: str = "main",
    thresholds: Thresholds | None = None,
    report_dir: Path | None = None,
    merge: bool = True,
    on_progress: Callable[[int], None] | None = None,
    labelled: bool = True,
    schema: LabelSchema = FACE_SCHEMA,
    workers: int | None = None,
    create_repo: bool = False,
) -> IngestResult:
    """Write ``samples`` (labels per ``schema``, declared in the manifest) on an ingest branch, gate them, merge.

    ``workers`` processes build the shards (None: one per core; 1: in this process), each inspecting its
    shard's images for the gate while it holds the bytes; the gate then judges the labels as stored plus
    those facts, which is what :func:`validate_ref` computes from the branch, without a second download
    and decode. The data written is the same whatever ``workers`` is. ``create_repo``: create ``repo_name``
    if it does not exist (:func:`target_repo`; without it only the default repository is created).
    """
    repo = target_repo(hub, repo_name, create=create_repo)
    if merge:  # lakeFS refuses a merge into a dirty branch: say so before the data is written, not after
        require_clean(repo, into, f"ingest {name!r} into {into!r}")
    install_gate(repo, into)
    base = repo.resolve(into)
    # kept on success: a dataset that fails the gate stays there for fixing; deleted on any error before the commit
    # the second alone is not unique: two imports of one name in the same second collided (CI, stop 28)
    ingest = repo.transact(
        f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}",
        base,
        prefix="ingest-",
        retention=Retention(on_success="keep", on_failure="delete"),
    )
    with ingest:
        branch = ingest.branch
        written = write_dataset(
            repo, branch, name, samples, provenance, on_shard=on_progress, labelled=labelled, schema=schema, workers=workers
        )
        # write_dataset removed any deltas of an older version: labels and shards are all there is to judge
        report = validate(
            written.labels, written.shard_facts, thresholds or Thresholds(), name=name, labelled=labelled, schema=schema
        )
        # the local report first: if it cannot be written, fail while the branch is still ours to
        # delete, rather than after the commit with an orphaned ingest branch nobody was told about
        paths = _save_before_commit(report, report_dir, name, branch) if report_dir else {}
        record_report(repo, branch, name, report)
        meta = IngestCommit(name, written.manifest.counts["samples"], report.passed, base, provenance).to_metadata()
        commit = repo.commit(branch, f"Ingest {name}: {written.manifest.counts['samples']} samples", meta)
    result = IngestResult(repo_name, name, branch, commit.id, None, report, written.manifest, paths)
    if not report.passed:
        raise DataValidationError(
            f"{failure_message(report)}\n{into!r} was not changed; the data stays on branch {branch!r} "
            f"(lakefs://{repo_name}/{branch}) for fixing ('flotilla hub branches --prune' deletes it).",
            hint=failure_hint(
                report,
                f"Fix the labels on {branch!r} (images: ingest corrected ones again), then "
                f"'flotilla data validate --repo {repo_name} --ref {branch} --dataset {name} --merge'"
                + (f"; full report: {paths.get('json')}" if paths else ""),
            ),
            report=report,
        )
    if merge:
        # by commit id: exactly what was validated and committed, even if the branch moved since
        result.merge_commit = repo.merge(commit.id, into, f"Merge validated dataset {name}", meta)
        ingest.delete()
    return result


def validate_and_merge(
    hub: Hub,
    repo_name: str,
    ref: str,
    name: str,
    *,
    into: str = "main",
    thresholds: Thresholds | None = None,
    merge: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> tuple[ValidationReport, str | None]:
    """Re-run the gate on ``ref`` (e.g. a fixed ingest branch); with ``merge`` and a pass, record and merge.

    With ``merge`` the branch's pending changes are committed first and the gate runs on that commit;
    what is merged is that commit plus the report (committed on a temporary branch cut from it), so a
    write to the branch meanwhile, staged or committed, is never merged under a receipt it did not earn.
    ``ref`` itself does not get the report; the merge commit on ``into`` does. ``metadata`` is added
    to that merge commit's (e.g. the audit a reviewed change came from, so main's log links it).
    ``thresholds`` default to the ones ``ref``'s own report was judged by (:func:`admitted_thresholds`).
    """
    repo = hub.repo(repo_name)
    if not merge:
        return validate_ref(repo, ref, name, thresholds or admitted_thresholds(repo, ref, name)), None
    if ref == into:
        raise DataValidationError(
            f"nothing to merge: --ref {ref!r} is the branch it would merge into",
            hint="validate the branch that holds the changes, e.g. "
            f"'flotilla data validate --ref <ingest-branch> --dataset {name} --merge', "
            f"or leave --merge out to check {into!r} itself",
        )
    if not repo.branch_exists(ref):
        raise DataValidationError(
            "--merge needs a branch (its pending changes are committed, then validated); "
            f"{ref!r} is not a branch of {repo_name!r}",
            hint="pass the branch holding the dataset (e.g. its ingest branch), or leave --merge out",
        )
    pending = repo.uncommitted(ref)
    validated = repo.commit(ref, f"Changes to {name} before validation").id if pending else repo.resolve(ref)
    report = validate_ref(repo, validated, name, thresholds or admitted_thresholds(repo, validated, name))
    if not report.passed:
        raise DataValidationError(
            f"{failure_message(report)}\nat {ref!r} (commit {validated[:12]}); nothing was merged into {into!r}.",
            hint=failure_hint(
                report,
                f"Fix them on {ref!r}, then run 'flotilla data validate --repo {repo_name}"
                f" --ref {ref} --dataset {name} --merge' again",
            ),
            report=report,
        )
    # The receipt goes on a temporary branch cut from the validated commit, not on ``ref``: a commit on
    # ``ref`` would also sweep in whatever was written there while the gate ran, and merge it under
    # this receipt. What is merged is exactly the validated commit plus the report.
    with repo.transact(
        f"{name}-{uuid.uuid4().hex[:12]}",
        validated,
        prefix="receipt-",
        retention=SCRATCH,
    ) as receipt_branch:
        record_report(repo, receipt_branch.branch, name, report, at=validated)
        receipt = repo.commit(
            receipt_branch.branch, f"Validation passed for {name}", ValidationReceipt(validated).to_metadata(), allow_empty=True
        )  # empty when the validated commit already held this very receipt
        merged = merge_validated(repo, receipt.id, into, name, metadata, ref=ref)
    return report, merged


def merge_validated(
    repo: Repo, source: str, into: str, name: str, metadata: Mapping[str, Any] | None = None, *, ref: str | None = None
) -> str:
    """Merge a validated change of dataset ``name``; concurrent changes of *other* samples merge beside it.

    Two deltas (:mod:`flotilla.data.deltas`) made at once on two branches add different objects and
    merge cleanly, except for the receipt: both rewrote ``validation.json``. When that is the only
    conflict, the newer receipt stands (``source-wins`` for that one path: every other path was
    conflict-free). A conflict on a sample's claim means both changed that sample: refused, naming it.
    Any other conflict means a change of the same files (e.g. two fixes that each rewrote the labels
    table on a branch) landed on ``into`` first: refused as that (:func:`landed_first`), never with advice
    to force the merge, which would drop the change that landed first. ``ref``: the user's branch the
    change came from (``source`` is the receipt commit on it), named in the messages.
    """
    message, md = f"Merge validated dataset {name}", {**(metadata or {}), **ValidatedMerge(name).to_metadata()}
    try:
        return repo.merge(source, into, message, md)
    except MergeConflictError as exc:
        claims = [p for p in exc.paths if p.startswith(deltas.claims_prefix(name))]
        if claims:
            ids = [str(json.loads(repo.get(source, p)).get("sample_id")) for p in claims[:20]]
            shown = ", ".join(map(repr, ids)) + (f" and {len(claims) - 20} more" if len(claims) > 20 else "")
            raise ConflictError(
                f"{len(claims)} sample(s) of dataset {name!r} were changed on {into!r} after this change was cut from it: "
                f"{shown}; {into!r} was not changed",
                hint=f"read the labels of {into!r} again (flotilla.data.read_labels) and redo the change for those samples",
            ) from None
        if exc.paths != [validation_path(name)]:
            raise landed_first(repo, into, name, [p for p in exc.paths if p != validation_path(name)], ref) from None
    return repo.merge(source, into, message, md, strategy="source-wins")


def landed_first(repo: Repo, into: str, name: str, paths: list[str], ref: str | None) -> ConflictError:
    """The error for a validated change of ``name`` that another change, merged into ``into`` first, overtook.

    Names that change (the newest commit on ``into`` that touched the first conflicting path) and says to
    redo this one on the new ``into``: forcing the merge (``source-wins``) would silently undo the other.
    """
    try:
        last = repo.log(into, 1, prefix=paths[0] if paths else layout.dataset_prefix(name))
    except FlotillaError:  # the error being built matters more than naming the commit
        last = []
    what = f"commit {last[0].id[:12]} ({last[0].message!r})" if last else "another change"
    both = f"; both changed {', '.join(paths[:5])}" + (f" and {len(paths) - 5} more" if len(paths) > 5 else "") if paths else ""
    mine = f"the change on {ref!r}" if ref else "this change"
    return ConflictError(
        f"another change to dataset {name!r} landed on {into!r} first: {what}{both}. "
        f"{mine[0].upper()}{mine[1:]} was cut from {into!r} before it and was not merged; {into!r} was not changed",
        hint=f"redo the change on the new {into!r}: for label fixes call relabel again (flotilla.data.relabel; "
        "it reads the labels as they are now and writes a delta, which merges beside fixes of other samples), "
        f"or cut a new branch from {into!r}, apply the change there and run 'flotilla data validate --repo {repo.name} "
        f"--ref <that branch> --dataset {name} --merge'",
    )
