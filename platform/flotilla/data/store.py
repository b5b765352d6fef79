"""Writing a dataset into a hub branch and reading it back at a commit (base and deltas folded).

Writing streams: samples are grouped into shards of ``SHARD_ROWS``, each built (encoded, hashed and
inspected by the gate) by one worker (:mod:`flotilla.data.shardwork`) and uploaded as soon as it is
built, in shard order, so memory stays bounded by the few shards in flight.
Shards a previous version of the dataset had beyond the new count are deleted,
so a branch never holds a stale mix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from flotilla.data import deltas, layout
from flotilla.data.imagecheck import ShardFacts
from flotilla.data.layout import Manifest, Sample, ShardInfo
from flotilla.data.schema import FACE_SCHEMA, LabelSchema
from flotilla.data.shardwork import SyntheticPlan, build_shards, shard_tasks
from flotilla.errors import NotFoundError
from flotilla.hub.repo import Repo
from flotilla.version import __version__


@dataclass
class WriteResult:
    """What was written: the manifest, the labels table as stored (decoded from the bytes uploaded) and,
    per shard in order, what the gate inspected in its bytes (:func:`flotilla.data.validate.validate` takes them)."""

    manifest: Manifest
    labels: pa.Table
    shard_facts: list[ShardFacts] = field(default_factory=list)


def write_dataset(
    repo: Repo,
    branch: str,
    name: str,
    samples: Iterable[Sample] | SyntheticPlan,
    provenance: dict[str, Any],
    *,
    shard_rows: int = layout.SHARD_ROWS,
    on_shard: Callable[[int], None] | None = None,
    labelled: bool = True,
    schema: LabelSchema = FACE_SCHEMA,
    workers: int | None = 1,
) -> WriteResult:
    """Upload shards, labels and manifest for ``name`` on ``branch`` (uncommitted); ``labelled`` and the label
    ``schema`` (the columns the samples' labels fill) go in the manifest.

    ``workers``: processes building shards (None: one per core; 1: all in this process). The bytes
    written are the same whatever their number; ``on_shard(rows)`` is called per shard, in shard order.
    """
    label_rows: list[Sample] = []
    shards: list[ShardInfo] = []
    facts: list[ShardFacts] = []
    formats: dict[str, int] = {}
    with closing(build_shards(shard_tasks(samples, shard_rows), workers)) as built:
        for shard in built:
            path = layout.shard_path(name, shard.index)
            repo.put(branch, path, shard.data)
            shards.append(ShardInfo(path=path, rows=len(shard.rows), bytes=len(shard.data), sha256=shard.sha256))
            facts.append(shard.facts)
            for s in shard.rows:
                formats[s.format] = formats.get(s.format, 0) + 1
            label_rows.extend(shard.rows)
            if on_shard:
                on_shard(len(shard.rows))
    stale = {o.path for o in repo.list(branch, f"{layout.dataset_prefix(name)}images/")} - {s.path for s in shards}
    # a new version replaces the dataset whole: the deltas and claims of the old one go with it
    stale |= {o.path for p in (deltas.deltas_prefix(name), deltas.claims_prefix(name)) for o in repo.list(branch, p)}
    if stale:
        repo.delete(branch, sorted(stale))
    encoded = layout.encode_labels(layout.labels_table(label_rows, schema), schema)
    repo.put(branch, layout.labels_path(name), encoded)
    labels = layout.decode_table(encoded)
    manifest = Manifest(
        name=name,
        counts=_counts(labels),
        label_counts={c: labels.num_rows - labels.column(c).null_count for c in schema.names},
        shards=shards,
        image={"formats": formats},
        provenance={**provenance, "flotilla_version": __version__},
        labelled=labelled,
        labels=layout.labels_entry(schema),
    )
    repo.put(branch, layout.manifest_path(name), manifest.to_json())
    return WriteResult(manifest, labels, facts)


def _counts(labels: pa.Table) -> dict[str, int]:
    splits = labels.column("split").to_pylist()
    return {"samples": labels.num_rows, **{s: splits.count(s) for s in layout.SPLITS}}


def read_manifest(repo: Repo, ref: str, name: str) -> Manifest:
    """The dataset's manifest as readers see it: the base's, with appended shards and counts of every delta folded in."""
    return read_dataset(repo, ref, name)[0]


def read_labels(repo: Repo, ref: str, name: str) -> pa.Table:
    """The labels as readers see them: the base table with every delta applied (:mod:`flotilla.data.deltas`)."""
    return read_dataset(repo, ref, name)[1]


def read_dataset(repo: Repo, ref: str, name: str) -> tuple[Manifest, pa.Table]:
    base = read_base_manifest(repo, ref, name)
    changes = deltas.read_deltas(name, lambda p: [o.path for o in repo.list(ref, p)], lambda p: repo.get(ref, p))
    if not changes:
        return base, layout.decode_table(repo.get(ref, layout.labels_path(name)))
    return deltas.fold(base, layout.decode_table(repo.get(ref, layout.labels_path(name))), changes)


def read_base_manifest(repo: Repo, ref: str, name: str) -> Manifest:
    """``manifest.json`` as the ingest wrote it (no deltas): what a writer extends."""
    try:
        return Manifest.from_json(repo.get(ref, layout.manifest_path(name)))
    except NotFoundError:
        present = sorted({o.path.split("/")[1] for o in repo.list(ref, "datasets/") if o.path.count("/") >= 2})
        raise NotFoundError(
            f"no dataset {name!r} at {ref!r} in repository {repo.name!r}",
            hint=f"datasets there: {', '.join(present) or '(none)'}; "
            "create one with 'flotilla data generate' or 'flotilla data import'",
        ) from None


def list_datasets(repo: Repo, ref: str) -> list[str]:
    return sorted(
        {
            o.path.split("/")[1]
            for o in repo.list(ref, "datasets/")
            if o.path.endswith("/manifest.json") and o.path.count("/") == 2
        }
    )
