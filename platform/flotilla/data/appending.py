"""Appending samples to a dataset: new image shards and a label delta, through the gate, in one validated merge.

::

    append(hub, "faces", "faces", samples)     # e.g. the pool samples an active-learning round got labelled
      → new sample ids checked against the dataset at ``into``   (an id already there: one error naming them)
      → branch append-<dataset>-<id> from that commit             (repo.transact, the one branch lifecycle)
      → images/shard-<delta>-NNNNN.parquet + an append delta       (:mod:`flotilla.data.deltas`; nothing rewritten)
      → the gate re-runs on the whole dataset and the append merges into ``into``

Every existing shard keeps its object and checksum (every commit and node cache that has it still
shares it); an append on another branch at the same time writes other objects and merges beside it.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flotilla.data import deltas, layout
from flotilla.data.gate import require_clean
from flotilla.data.ingest import admitted_thresholds, validate_and_merge
from flotilla.data.layout import Sample, ShardInfo
from flotilla.data.report import Thresholds, ValidationReport
from flotilla.data.store import read_dataset
from flotilla.errors import DataValidationError
from flotilla.hub.client import Hub
from flotilla.hub.experiment import SCRATCH
from flotilla.lineage import IngestCommit


@dataclass(frozen=True)
class AppendResult:
    """An append that reached ``into``: its delta, its new shards, the merge commit."""

    repo: str
    dataset: str
    into: str
    base_commit: str
    commit: str
    merge_commit: str | None
    samples: int
    delta: str
    shards: tuple[str, ...]
    report: ValidationReport | None = None


def shard_path(dataset: str, delta_id: str, index: int) -> str:
    return f"{layout.dataset_prefix(dataset)}images/shard-{delta_id}-{index:05d}.parquet"


def append(
    hub: Hub,
    repo_name: str,
    dataset: str,
    samples: Iterable[Sample],
    *,
    into: str = "main",
    reason: str = "",
    provenance: dict[str, Any] | None = None,
    thresholds: Thresholds | None = None,
) -> AppendResult:
    """Add ``samples`` (new ids, with images and whatever labels they have) to ``dataset`` on ``into``.

    Refused before anything is written: a sample id the dataset already has, or no samples. The gate
    then judges the whole dataset with the append, by the thresholds it was last admitted with; a
    refusal leaves ``into`` unchanged and no branch behind.
    """
    repo = hub.repo(repo_name)
    require_clean(repo, into, f"append to {dataset!r} on {into!r}")
    base = repo.resolve(into)
    manifest, table = read_dataset(repo, base, dataset)  # NotFoundError: no such dataset
    existing, schema = set(table.column("sample_id").to_pylist()), manifest.label_schema
    rows = list(samples)
    if not rows:
        raise DataValidationError(f"nothing to append to {dataset!r}: no samples given", hint="pass at least one Sample")
    seen: set[str] = set()
    clash = []
    for s in rows:
        if s.sample_id in existing or s.sample_id in seen:
            clash.append(s.sample_id)
        seen.add(s.sample_id)
    if clash:
        shown = ", ".join(map(repr, clash[:10])) + (f" and {len(clash) - 10} more" if len(clash) > 10 else "")
        raise DataValidationError(
            f"{len(clash)} sample id(s) to append to {dataset!r} are in it (or twice here): {shown}; nothing was written",
            hint="append only new samples; change existing ones with flotilla.data.relabel",
        )
    labels = layout.labels_table(rows, schema)  # the dataset's declared columns, nothing else
    branch = repo.transact(f"{dataset}-{uuid.uuid4().hex[:12]}", base, prefix="append-", retention=SCRATCH)
    with branch:
        listing = [o.path for o in repo.list(base, deltas.deltas_prefix(dataset))]
        delta_id = uuid.uuid4().hex[:12]
        shards: list[ShardInfo] = []
        for index, chunk in enumerate(layout.chunked(rows)):
            data = layout.encode_shard(chunk)
            path = shard_path(dataset, delta_id, index)
            branch.put(path, data)
            shards.append(ShardInfo(path=path, rows=len(chunk), bytes=len(data), sha256=hashlib.sha256(data).hexdigest()))
        delta = deltas.new_delta("append", labels, listing, dataset, shards=shards, reason=reason, delta_id=delta_id)
        branch.put(delta.labels_path(dataset), layout.encode_labels(labels, schema))
        branch.put(delta.path(dataset), delta.to_json())
        meta = IngestCommit(dataset, len(rows), True, base, {**(provenance or {}), "append": delta_id}).to_metadata()
        commit = branch.commit(f"Append {len(rows)} sample(s) to {dataset}" + (f": {reason}" if reason else ""), meta)
        report, merged = validate_and_merge(
            hub,
            repo_name,
            branch.branch,
            dataset,
            into=into,
            thresholds=thresholds or admitted_thresholds(repo, base, dataset),
            merge=True,
        )
    return AppendResult(
        repo_name, dataset, into, base, commit.id, merged, len(rows), delta_id, tuple(s.path for s in shards), report
    )
