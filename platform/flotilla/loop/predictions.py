"""Committed predictions as data: where they live, how to find them again, how to read them back.

A monitor compares two sets of predictions of one model — on the data it was trained on and on the
data it sees now — and both cost an inference to make. So that one monitoring run is cheap to
repeat, predictions are found again rather than recomputed:

- **Canonical input commit** (:func:`content_commit`): the newest commit that changed the dataset,
  not whatever commit the ref points at. ``main`` moves with every merge of anything; the dataset
  under it does not, and predictions of unchanged data stay valid. The predictions' directory is
  named after this commit (:func:`predictions_dir`), so "the same data"
  is "the same path".
- **A manifest beside the parts** (``predictions.json``: :class:`PredictionSet`): model URI, the
  model's training commit, the input commit in full, dataset, split, rows, files — predictions
  that describe themselves, read by the monitor and by anyone else.
- **Where they are looked for** (:func:`find_predictions`): the ref the user named, ``main`` (where
  ``--merge-into main`` puts them), then every ``infer-*`` branch (where ``flotilla infer`` leaves them).
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from flotilla.data.layout import dataset_prefix
from flotilla.data.pinning import DataRef
from flotilla.errors import MonitoringError, NotFoundError
from flotilla.hub.repo import Repo
from flotilla.registry import ModelLocation

if TYPE_CHECKING:
    import pyarrow as pa

PREDICTIONS = "predictions/"
MANIFEST = "predictions.json"
INFER_PREFIX = "infer-"


@dataclass(frozen=True)
class PredictionSet:
    """One committed set of predictions: what made them, over what, and where they are (``predictions.json``)."""

    model_uri: str
    model_data_commit: str
    repo: str
    dataset: str
    input_commit: str
    split: str  # "" for every sample
    rows: int
    path: str  # the directory, ending in "/"
    files: tuple[str, ...]
    ref: str = ""  # where they were found (not stored)

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("ref")
        return json.dumps(d, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, raw: bytes | str, ref: str) -> PredictionSet:
        d = json.loads(raw)
        d["files"] = tuple(d["files"])
        return cls(**d, ref=ref)


def content_commit(repo: Repo, data: DataRef) -> DataRef:
    """``data`` pinned to the newest commit that changed its dataset, when that commit holds the very same files.

    lakeFS's prefix log names that commit; a diff of the dataset's prefix between it and ``data``'s
    commit confirms nothing differs (a merge could in principle combine two lines' changes). When
    it does differ, ``data`` is returned as it is: correct, only not shared with other refs.
    """
    prefix = dataset_prefix(data.dataset)
    changed = repo.log(data.commit, limit=1, prefix=prefix)
    if not changed or changed[0].id == data.commit:
        return data
    candidate = changed[0].id
    if repo.diff(candidate, data.commit, prefix=prefix):
        return data
    return DataRef(data.repo, candidate, data.dataset, data.ref)


def predictions_dir(model: ModelLocation, data: DataRef, split: str | None) -> str:
    """``predictions/<run>/<model>/<dataset>@<input commit[:12]>/<split|all>/``: one directory per model, data and split."""
    return f"{PREDICTIONS}{model.run_id}/{model.model}/{data.dataset}@{data.commit[:12]}/{split or 'all'}/"


def manifest_path(model: ModelLocation, data: DataRef, split: str | None) -> str:
    return predictions_dir(model, data, split) + MANIFEST


def find_predictions(
    repo: Repo, model: ModelLocation, data: DataRef, split: str | None, *, first: tuple[str, ...] = ()
) -> PredictionSet | None:
    """Committed predictions of ``model`` over ``data`` (``split``): looked for on ``first``, ``main``, then ``infer-*``."""
    path = manifest_path(model, data, split)
    branches = repo.branches()
    order = [*first, "main", *sorted(b for b in branches if b.startswith(INFER_PREFIX))]
    seen: set[str] = set()
    for ref in order:
        if ref in seen or (ref not in branches and ref not in first):
            continue
        seen.add(ref)
        if repo.exists(ref, path):
            found = PredictionSet.from_json(repo.get(ref, path), ref)
            if found.model_uri == model.uri and found.input_commit == data.commit:
                return found
    return None


def read_predictions(repo: Repo, found: PredictionSet) -> pa.Table:
    """Every part of ``found`` as one table; a clear error when a part is missing or unreadable."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not found.files:
        raise MonitoringError(f"the predictions at {found.ref}:{found.path} list no files", hint="run flotilla infer again")
    tables = []
    for f in found.files:
        try:
            tables.append(pq.read_table(io.BytesIO(repo.get(found.ref, f))))
        except NotFoundError:
            raise MonitoringError(
                f"predictions part {f!r} listed in {found.path}{MANIFEST} is missing at {found.ref!r}",
                hint="run flotilla infer again for this model and data",
            ) from None
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise MonitoringError(f"predictions part {f!r} at {found.ref!r} is not readable Parquet ({exc})") from None
    table = pa.concat_tables(tables)
    if table.num_rows != found.rows:
        raise MonitoringError(
            f"the predictions at {found.ref}:{found.path} hold {table.num_rows} rows, their manifest says {found.rows}",
            hint="run flotilla infer again for this model and data",
        )
    return table


def prediction_column(table: pa.Table, name: str, what: str = "") -> np.ndarray:
    """One column of a predictions table as float64 numpy: [n] for values and classes, [n, k] for probabilities and embeddings."""
    if name not in table.column_names:
        raise MonitoringError(
            f"the {what} predictions have no column {name!r} (they hold {', '.join(table.column_names)})",
            hint="they were made by another model or an older flotilla: run flotilla infer again for this model",
        )
    col = table.column(name).combine_chunks()
    if hasattr(col, "flatten") and hasattr(col.type, "list_size"):
        return np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=np.float64).reshape(len(col), -1)
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)


def describe(found: PredictionSet) -> dict[str, Any]:
    """What a report says about one side's predictions."""
    return {k: v for k, v in asdict(found).items() if k != "files"} | {"parts": len(found.files)}
