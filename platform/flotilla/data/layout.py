"""The dataset layout in the hub, chosen for zero-copy branching and streaming.

::

    datasets/<name>/manifest.json                 schema version, counts, splits, shards, provenance
    datasets/<name>/images/shard-00000.parquet    sample_id, image (encoded bytes), format, sha256
    datasets/<name>/labels.parquet                sample_id, split, then the declared label columns (nullable)

* Images are **immutable** and sharded (``SHARD_ROWS`` per file, a few MB), so
  loading streams whole shards and caches them by checksum; a new commit that
  only fixes labels leaves every shard's checksum — and every node's cache — valid.
* Labels live in one small table keyed by ``sample_id``; a label fix rewrites
  only that table (a tiny commit). A **missing label is null**, never 0: UTKFace
  has no emotion, FER2013 has no age or gender.
* The manifest pins shard checksums and sizes so readers verify what they read, and declares the
  label columns (:mod:`flotilla.data.schema`; ``Manifest.label_schema``): age, gender and emotion
  by default, whatever an importer's format has besides.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from flotilla.data.schema import AGE_RANGE as AGE_RANGE  # re-exported: face code reads them from here
from flotilla.data.schema import EMOTIONS as EMOTIONS
from flotilla.data.schema import FACE_SCHEMA as FACE_SCHEMA
from flotilla.data.schema import GENDERS as GENDERS
from flotilla.data.schema import LabelSchema
from flotilla.errors import DataValidationError
from flotilla.names import check_dataset_name

SCHEMA_VERSION = 1
SHARD_ROWS = 2048
SPLITS = ("train", "val", "test")
# the face schema's names, for code about faces (the synthetic generator, the reference tasks); code about
# any dataset reads its manifest's label_schema instead
LABEL_COLUMNS = FACE_SCHEMA.names

IMAGE_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("image", pa.binary(), nullable=False),
        pa.field("format", pa.string(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
    ]
)
LABEL_SCHEMA = FACE_SCHEMA.arrow


def dataset_prefix(name: str) -> str:
    """Every path of a dataset goes through here, so every way in checks the name."""
    return f"datasets/{check_dataset_name(name)}/"


def shard_path(name: str, index: int) -> str:
    return f"{dataset_prefix(name)}images/shard-{index:05d}.parquet"


def labels_path(name: str) -> str:
    return f"{dataset_prefix(name)}labels.parquet"


def manifest_path(name: str) -> str:
    return f"{dataset_prefix(name)}manifest.json"


def split_for(sample_id: str, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> str:
    """Deterministic split from the id's hash: stable across re-imports and label fixes."""
    h = int.from_bytes(hashlib.blake2b(sample_id.encode(), digest_size=8).digest(), "big") / 2**64
    return "train" if h < fractions[0] else "val" if h < fractions[0] + fractions[1] else "test"


@dataclass
class Sample:
    """One image plus whatever labels its source has (None = unknown)."""

    sample_id: str
    image: bytes
    format: str
    age: float | None = None
    gender: int | None = None
    emotion: int | None = None
    split: str | None = None
    source: str = ""  # where it came from (file name, CSV row), for error reports
    labels: dict[str, float | int | None] = field(default_factory=dict)  # declared columns beyond the face three

    def label(self, column: str) -> float | int | None:
        """The value of any label column: the face three are fields, every other declared column is in ``labels``."""
        if column in _FACE_FIELDS:
            value: float | int | None = getattr(self, column)
            return value
        return self.labels.get(column)


_FACE_FIELDS = frozenset(FACE_SCHEMA.names)


@dataclass
class ShardInfo:
    path: str
    rows: int
    bytes: int
    sha256: str


@dataclass
class Manifest:
    name: str
    counts: dict[str, int]
    label_counts: dict[str, int]
    shards: list[ShardInfo]
    image: dict[str, Any]
    provenance: dict[str, Any]
    schema_version: int = SCHEMA_VERSION
    # False: incoming data that has no labels yet, on purpose (the gate then accepts all-null labels)
    labelled: bool = True
    # "columns": the declared label schema (LabelSchema.to_list); a manifest written before schemas has none
    labels: dict[str, Any] = field(default_factory=lambda: labels_entry(FACE_SCHEMA))
    created: float = field(default_factory=time.time)

    @property
    def label_schema(self) -> LabelSchema:
        """The label columns this dataset declares; the face schema for a manifest that predates schemas."""
        columns = self.labels.get("columns")
        return FACE_SCHEMA if columns is None else LabelSchema.from_list(columns)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        d = json.loads(text)
        d["shards"] = [ShardInfo(**s) for s in d["shards"]]
        return cls(**d)


def labels_entry(schema: LabelSchema) -> dict[str, Any]:
    """A manifest's ``labels``: where the table is and which columns it declares."""
    return {"path": "labels.parquet", "columns": schema.to_list()}


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    # no dictionary/compression on encoded images: they are already compressed, and raw pages decode fastest
    pq.write_table(table, buf, compression="none", use_dictionary=["sample_id", "format"], row_group_size=512)
    return buf.getvalue()


def encode_shard(samples: list[Sample]) -> bytes:
    table = pa.table(
        {
            "sample_id": [s.sample_id for s in samples],
            "image": [s.image for s in samples],
            "format": [s.format for s in samples],
            "sha256": [hashlib.sha256(s.image).hexdigest() for s in samples],
        },
        schema=IMAGE_SCHEMA,
    )
    return _parquet_bytes(table)


def labels_table(samples: Iterable[Sample], schema: LabelSchema = FACE_SCHEMA) -> pa.Table:
    """The labels table of ``samples`` with ``schema``'s columns (a value a sample has for another column is an error)."""
    rows = list(samples)
    undeclared = sorted({k for s in rows for k, v in s.labels.items() if k not in schema and v is not None})
    if undeclared:
        raise DataValidationError(
            f"samples have values for label column(s) {', '.join(map(repr, undeclared))} that the dataset does not declare",
            hint=f"declare them in the dataset's label schema (declared: {schema.describe()})",
        )
    coded = [c.name for c in schema if c.kind != "regression"]
    wild = [s for s in rows for c in coded if (v := s.label(c)) is not None and not -(2**15) <= v < 2**15]
    if wild:
        raise DataValidationError(
            f"{len(wild)} sample(s) have a class code that is not even a 16-bit integer, e.g. "
            + ", ".join(f"{s.sample_id} ({s.source or 'unknown source'})" for s in wild[:5]),
            hint="; ".join(schema[c].rule() for c in coded),
        )
    return pa.table(
        {
            "sample_id": [s.sample_id for s in rows],
            "split": [s.split or split_for(s.sample_id) for s in rows],
            **{c: [s.label(c) for s in rows] for c in schema.names},
        },
        schema=schema.arrow,
    )


def cast_labels(table: pa.Table, schema: LabelSchema | None = None) -> pa.Table:
    """``table`` with its stored types: ``schema``'s; without one, the face columns' types and any other column's own."""
    if schema is not None:
        return table.cast(schema.arrow)
    face = LABEL_SCHEMA
    return table.cast(pa.schema([face.field(f.name) if f.name in face.names else f for f in table.schema]))


def encode_labels(table: pa.Table, schema: LabelSchema | None = None) -> bytes:
    buf = io.BytesIO()
    pq.write_table(cast_labels(table, schema), buf, compression="zstd")
    return buf.getvalue()


def decode_table(data: bytes) -> pa.Table:
    return pq.read_table(pa.BufferReader(data))


def chunked(samples: Iterable[Sample], size: int = SHARD_ROWS) -> Iterator[list[Sample]]:
    batch: list[Sample] = []
    for s in samples:
        batch.append(s)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
