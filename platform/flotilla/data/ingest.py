"""Ingest: every dataset lands on its own branch, is validated, committed, then merged.

::

    branch ingest-<name>-<time> from main's current commit
      → write shards, labels, manifest            (streamed, with progress)
      → validate what the branch holds            (the gate)
      → write validation.json (+ fingerprints), commit with provenance
      → passed: merge into main, delete the branch
        failed: main untouched, branch kept for fixing, DataValidationError

The validation report records the lakeFS checksums of the labels table and the
manifest it validated; the repository's pre-merge hook (:mod:`flotilla.data.gate`)
refuses to merge a dataset whose report is missing, failed, or stale, so no
client can bypass the gate by merging directly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flotilla.data import layout
from flotilla.data.gate import install_gate
from flotilla.data.layout import Manifest, Sample
from flotilla.data.store import read_labels, read_manifest, write_dataset
from flotilla.data.validate import Thresholds, ValidationReport, validate
from flotilla.errors import DataValidationError
from flotilla.hub.client import Hub
from flotilla.hub.repo import Repo
from flotilla.names import branch_id


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


def validate_ref(repo: Repo, ref: str, name: str, thresholds: Thresholds | None = None) -> ValidationReport:
    """Run the gate on what ``ref`` holds for dataset ``name`` (reads labels and every shard)."""
    manifest = read_manifest(repo, ref, name)
    labels = read_labels(repo, ref, name)
    shards = (layout.decode_table(repo.get(ref, s.path)) for s in manifest.shards)
    return validate(labels, shards, thresholds or Thresholds())


def fingerprint(repo: Repo, ref: str, name: str) -> dict[str, str]:
    """lakeFS checksums of what the gate looked at; the pre-merge hook compares them."""
    return {
        "labels.parquet": repo.stat(ref, layout.labels_path(name)).checksum,
        "manifest.json": repo.stat(ref, layout.manifest_path(name)).checksum,
    }


def record_report(repo: Repo, branch: str, name: str, report: ValidationReport) -> None:
    doc = json.loads(report.to_json())
    doc["fingerprint"] = fingerprint(repo, branch, name)
    repo.put(branch, validation_path(name), json.dumps(doc, indent=2, sort_keys=True))


def save_report_files(report: ValidationReport, out_dir: Path, name: str) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{name}-validation.json", "png": out_dir / f"{name}-labels.png"}
    paths["json"].write_text(report.to_json())
    report.plot(paths["png"])
    return paths


def ingest(
    hub: Hub,
    repo_name: str,
    name: str,
    samples: Iterable[Sample],
    *,
    provenance: dict[str, Any],
    into: str = "main",
    thresholds: Thresholds | None = None,
    report_dir: Path | None = None,
    merge: bool = True,
    on_progress: Callable[[int], None] | None = None,
) -> IngestResult:
    repo = hub.ensure_repo(repo_name)
    install_gate(repo, into)
    base = repo.resolve(into)
    branch = branch_id(f"{name}-{time.strftime('%Y%m%d-%H%M%S')}", prefix="ingest-")
    repo.create_branch(branch, base)
    try:
        written = write_dataset(repo, branch, name, samples, provenance, on_shard=on_progress)
        report = validate_ref(repo, branch, name, thresholds)
        record_report(repo, branch, name, report)
        meta = {
            "flotilla.kind": "ingest",
            "flotilla.dataset": name,
            "flotilla.samples": written.manifest.counts["samples"],
            "flotilla.validation": "passed" if report.passed else "failed",
            "flotilla.base_commit": base,
            **{f"provenance.{k}": v for k, v in provenance.items()},
        }
        commit = repo.commit(branch, f"Ingest {name}: {written.manifest.counts['samples']} samples", meta)
    except BaseException:
        repo.delete_branch(branch, missing_ok=True)  # nothing half-written survives
        raise
    paths = save_report_files(report, report_dir, name) if report_dir else {}
    result = IngestResult(repo_name, name, branch, commit.id, None, report, written.manifest, paths)
    if not report.passed:
        raise DataValidationError(
            f"dataset {name!r} failed validation; {into!r} was not changed. "
            f"The data stays on branch {branch!r} (lakefs://{repo_name}/{branch}) for fixing.\n{report.summary()}",
            hint=f"fix the labels/images on {branch!r}, then 'flotilla data validate --repo {repo_name} --ref {branch} "
            f"--dataset {name} --merge'" + (f"; report: {paths.get('json')}" if paths else ""),
        )
    if merge:
        result.merge_commit = repo.merge(branch, into, f"Merge validated dataset {name}", meta)
        repo.delete_branch(branch)
    return result


def validate_and_merge(
    hub: Hub, repo_name: str, ref: str, name: str, *, into: str = "main", thresholds: Thresholds | None = None, merge: bool = False
) -> tuple[ValidationReport, str | None]:
    """Re-run the gate on ``ref`` (e.g. a fixed ingest branch); with ``merge`` and a pass, record and merge."""
    repo = hub.repo(repo_name)
    report = validate_ref(repo, ref, name, thresholds)
    if not merge:
        return report, None
    if not report.passed:
        raise DataValidationError(f"dataset {name!r} at {ref!r} failed validation; nothing merged.\n{report.summary()}")
    record_report(repo, ref, name, report)
    repo.commit(ref, f"Validation passed for {name}", {"flotilla.validation": "passed"})
    return report, repo.merge(ref, into, f"Merge validated dataset {name}", {"flotilla.dataset": name, "flotilla.validation": "passed"})
