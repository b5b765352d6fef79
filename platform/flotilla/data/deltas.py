"""Changes to a dataset as new objects, never rewrites: appends and label changes that merge side by side.

A dataset's base (``manifest.json``, ``labels.parquet``, ``images/shard-*``) is written once by an
ingest. Everything after it — samples appended by an active-learning round, labels fixed by a
person — is a **delta**: new objects only, so

- existing image shards are never touched (same checksum, still shared by every commit and every
  node's cache that has them);
- two deltas made on two branches at once add *different* objects, so lakeFS merges both;
- a relabelled sample also gets a **claim**, ``claims/<hash of its id>.json``: two branches that
  change the same sample both write that one path, and lakeFS refuses the second merge — a conflict
  per sample, not per dataset. Claims hold the sample id, so the error can name it.

::

    datasets/<name>/deltas/<seq>-<id>.json        what the delta is: kind, its label rows, its shards
    datasets/<name>/deltas/<seq>-<id>.parquet     its label rows (full rows: sample_id, split, labels)
    datasets/<name>/images/shard-<id>-00000.parquet  an append's new image shards
    datasets/<name>/claims/<sha1(sample_id)>.json   one per relabelled sample: {"sample_id", "delta"}

Readers fold the deltas over the base in ``seq`` order (:func:`fold`): an append adds rows and
shards, a relabel replaces its samples' rows, a **remove** drops its samples' rows (its parquet keeps
the rows as they were, its ``reasons`` say why per sample: "not a face", "duplicate"). A removed
sample's image stays in its shard — shards are immutable — and readers skip images without a label
row (:func:`removed_ids` names them for the gate). A remove claims its samples like a relabel.
``seq`` is one more than the newest delta the writer saw; two concurrent deltas may share it, and
then they touch different samples (their claims did not conflict), so their order does not matter.
A new full ingest of the dataset removes all deltas.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from flotilla.data import layout
from flotilla.data.layout import Manifest, ShardInfo
from flotilla.errors import DataValidationError

Kind = Literal["append", "relabel", "remove"]
ListFn = Callable[[str], Sequence[str]]  # prefix → object paths under it
ReadFn = Callable[[str], bytes]  # path → bytes


def deltas_prefix(name: str) -> str:
    return f"{layout.dataset_prefix(name)}deltas/"


def claims_prefix(name: str) -> str:
    return f"{layout.dataset_prefix(name)}claims/"


def claim_path(name: str, sample_id: str) -> str:
    """Hashed: sample ids come from users' files and may hold characters an object key should not."""
    return f"{claims_prefix(name)}{hashlib.sha1(sample_id.encode()).hexdigest()}.json"


@dataclass(frozen=True)
class Delta:
    """One change to a dataset (``deltas/<seq>-<id>.json``)."""

    id: str
    seq: int
    kind: Kind
    rows: int  # label rows in its parquet
    shards: tuple[ShardInfo, ...] = ()  # an append's new image shards
    created: float = field(default_factory=time.time)
    reason: str = ""
    reasons: dict[str, str] = field(default_factory=dict)  # a remove's: sample id → why it went
    source: dict[str, str] = field(default_factory=dict)  # who and what made it, e.g. {"audit": id, "reviewer": ...}

    @property
    def stem(self) -> str:
        return f"{self.seq:08d}-{self.id}"

    def path(self, name: str) -> str:
        return f"{deltas_prefix(name)}{self.stem}.json"

    def labels_path(self, name: str) -> str:
        return f"{deltas_prefix(name)}{self.stem}.parquet"

    def to_json(self) -> str:
        d = asdict(self)
        return json.dumps(d, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Delta:
        d = json.loads(raw)
        d["shards"] = tuple(ShardInfo(**s) for s in d.get("shards", ()))
        return cls(**d)


def delta_paths(name: str, listing: Sequence[str]) -> list[str]:
    """The delta descriptors among ``listing`` (paths under :func:`deltas_prefix`), oldest first."""
    return sorted(p for p in listing if p.endswith(".json") and p.startswith(deltas_prefix(name)))


def read_deltas(name: str, list_fn: ListFn, read_fn: ReadFn) -> list[tuple[Delta, pa.Table]]:
    """Every delta of ``name`` with its label rows as written (:func:`fold` casts them to the dataset's schema),
    in the order readers apply them."""
    out = []
    for path in delta_paths(name, list_fn(deltas_prefix(name))):
        delta = Delta.from_json(read_fn(path))
        out.append((delta, layout.decode_table(read_fn(delta.labels_path(name)))))
    return sorted(out, key=lambda d: (d[0].seq, d[0].created, d[0].id))


def next_seq(name: str, listing: Sequence[str]) -> int:
    stems = [p.rsplit("/", 1)[1].split("-", 1)[0] for p in delta_paths(name, listing)]
    return max((int(s) for s in stems if s.isdigit()), default=0) + 1


def fold(manifest: Manifest, labels: pa.Table, deltas: Sequence[tuple[Delta, pa.Table]]) -> tuple[Manifest, pa.Table]:
    """The dataset as readers see it: the base with every delta applied (counts recomputed)."""
    if not deltas:
        return manifest, labels
    schema = manifest.label_schema
    table = layout.cast_labels(labels, schema)
    shards = list(manifest.shards)
    for delta, raw in deltas:
        rows = layout.cast_labels(raw, schema)
        if delta.kind == "append":
            table = pa.concat_tables([table, rows])
            shards += list(delta.shards)
        elif delta.kind == "remove":
            gone = pa.array(rows.column("sample_id").to_pylist(), pa.string())
            table = table.filter(pc.invert(pc.is_in(table.column("sample_id"), gone)))
        else:  # each changed row replaces its sample's row in place: readers keep the order they had
            n = table.num_rows
            position = {sid: i for i, sid in enumerate(table.column("sample_id").to_pylist())}
            take = list(range(n))
            for j, sid in enumerate(rows.column("sample_id").to_pylist()):
                if sid in position:
                    take[position[sid]] = n + j
                else:
                    take.append(n + j)
            table = pa.concat_tables([table, rows]).take(pa.array(take, pa.int64()))
    splits = table.column("split").to_pylist()
    counts = {"samples": table.num_rows, **{s: splits.count(s) for s in layout.SPLITS}}
    label_counts = {c: table.num_rows - table.column(c).null_count for c in schema.names}
    return replace(manifest, shards=shards, counts=counts, label_counts=label_counts), table


def removed_ids(deltas: Sequence[tuple[Delta, pa.Table]]) -> frozenset[str]:
    """Samples a remove delta took out (and no later append brought back): their images are to be skipped."""
    gone: set[str] = set()
    for delta, rows in deltas:
        ids = set(rows.column("sample_id").to_pylist())
        if delta.kind == "remove":
            gone |= ids
        elif delta.kind == "append":
            gone -= ids
    return frozenset(gone)


def new_delta(
    kind: Kind,
    rows: pa.Table,
    listing: Sequence[str],
    name: str,
    *,
    shards: Sequence[ShardInfo] = (),
    reason: str = "",
    delta_id: str | None = None,
    reasons: Mapping[str, str] | None = None,
    source: Mapping[str, str] | None = None,
) -> Delta:
    if rows.num_rows == 0:
        raise DataValidationError(f"an empty {kind} of dataset {name!r}: nothing to write", hint="give at least one sample")
    return Delta(
        delta_id or uuid.uuid4().hex[:12],
        next_seq(name, listing),
        kind,
        rows.num_rows,
        tuple(shards),
        reason=reason,
        reasons=dict(reasons or {}),
        source=dict(source or {}),
    )


def claim(name: str, sample_id: str, delta: Delta) -> tuple[str, str]:
    """(path, body) of the claim a relabel or a remove writes for ``sample_id``."""
    return claim_path(name, sample_id), json.dumps({"sample_id": sample_id, "delta": delta.id}, sort_keys=True)
