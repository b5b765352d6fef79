"""What runs inside Ray Data for batch inference: the shard reader and the per-actor predictor.

Both are plain, picklable pieces so that the Ray Data path and an in-process loop
(``bench/inference.py``) run the very same code: :func:`read_shards` turns shard indices into
images (read by commit through the hub, via the node's cache, exactly as training reads them) and
:class:`Predictor` loads a model once per actor and turns image batches into prediction tables.

Output columns (:func:`output_schema`), one row per sample:

- ``sample_id``;
- per regression task ``<task>``: the value in original units (float32);
- per binary or multiclass task ``<task>``: the predicted class index (int16) and
  ``<task>_probs``: the class probabilities (fixed-size list of float32, summing to 1; a binary
  task's two are ``[P(0), P(1)]``);
- ``embedding``: the shared trunk's features (fixed-size list of float32, the backbone's width).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from flotilla.data.loader import HubDataset
from flotilla.errors import SpecError
from flotilla.models.family import MultiTaskModel
from flotilla.models.tasks import TaskSpec
from flotilla.training.artifacts import read_model_bytes

if TYPE_CHECKING:
    from flotilla.hub.credentials import HubCredentials
    from flotilla.registry.address import ModelLocation

EMBEDDING = "embedding"


def load_model(location: ModelLocation, credentials: HubCredentials) -> MultiTaskModel:
    """The model at ``location`` rebuilt from the config its ``model.pt`` carries, in eval mode on CPU."""
    import torch

    blob = read_model_bytes(location.repo, location.commit, location.path, credentials)
    try:
        saved = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        model = MultiTaskModel.from_config(saved["config"])
        model.load_state_dict(saved["state"])
    except Exception as exc:  # not a flotilla checkpoint: never weights_only=False for a file from the hub
        raise SpecError(
            f"{location.uri} is not a flotilla model checkpoint ({type(exc).__name__})",
            hint="name a model.pt that flotilla published: a run id, <family>@<alias> or lakefs://<repo>/<ref>/models/<run>/<model>/model.pt",
        ) from None
    return model.eval()


def output_schema(tasks: Sequence[TaskSpec], embedding_width: int) -> pa.Schema:
    """The predictions table's schema (see the module docstring)."""
    fields = [pa.field("sample_id", pa.string(), nullable=False)]
    for t in tasks:
        if t.kind == "regression":
            fields.append(pa.field(t.name, pa.float32()))
        else:
            fields.append(pa.field(t.name, pa.int16()))
            fields.append(pa.field(f"{t.name}_probs", pa.list_(pa.float32(), t.out_dim if t.kind != "binary" else 2)))
    fields.append(pa.field(EMBEDDING, pa.list_(pa.float32(), embedding_width)))
    return pa.schema(fields)


def _fixed_list(values: np.ndarray) -> pa.FixedSizeListArray:
    values = np.ascontiguousarray(values, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def predictions_table(
    sample_ids: Sequence[str], tasks: Sequence[TaskSpec], preds: Mapping[str, np.ndarray], embedding: np.ndarray
) -> pa.Table:
    """One batch's predictions (numpy, as :meth:`MultiTaskModel.predict_with_embedding` gives them) as a table."""
    columns: list[pa.Array] = [pa.array(list(sample_ids), pa.string())]
    for t in tasks:
        y = np.asarray(preds[t.name], dtype=np.float32)
        if t.kind == "regression":
            columns.append(pa.array(y.reshape(-1)))
            continue
        probs = np.stack([1.0 - y, y], axis=1) if t.kind == "binary" else y
        columns.append(pa.array(probs.argmax(axis=1).astype(np.int16)))
        columns.append(_fixed_list(probs))
    columns.append(_fixed_list(embedding))
    return pa.Table.from_arrays(columns, schema=output_schema(tasks, embedding.shape[1]))


def read_shards(batch: dict[str, np.ndarray], *, data: HubDataset, split: str | None) -> dict[str, np.ndarray]:
    """Shard indices → their samples (``sample_id``, ``image`` uint8 [B,H,W,3]), by commit through the hub.

    A Ray Data ``map_batches`` function: each read task runs on whichever node Ray picks and reads
    through that node's cache; ``split`` None keeps every sample. ``data.image_size`` must be set:
    every block, an empty one included, then has one image shape.
    """
    size = data.image_size or 0
    ids: list[str] = []
    images: list[np.ndarray] = []
    for i in batch["shard"].tolist():
        shard_ids, shard_images = data.shard_samples(int(i), split)
        ids += shard_ids
        images += shard_images
    if not images:
        return {"sample_id": np.array([], dtype=object), "image": np.zeros((0, size, size, 3), dtype=np.uint8)}
    return {"sample_id": np.array(ids, dtype=object), "image": np.stack(images)}


class Predictor:
    """A Ray Data callable class: one model per actor, loaded once, then one call per batch.

    ``credentials`` is an object-store reference (as training hands its workers), so the hub's
    secret never sits in anything Ray displays.
    """

    def __init__(self, location: ModelLocation, credentials: Any, use_gpu: bool = False, threads: int = 1) -> None:
        import ray
        import torch

        torch.set_num_threads(max(1, threads))
        creds = ray.get(credentials) if isinstance(credentials, ray.ObjectRef) else credentials
        self.model = load_model(location, creds)
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.model.to(self.device)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        return self.predict(batch["sample_id"].tolist(), batch["image"])

    def predict(self, sample_ids: Sequence[str], images: np.ndarray) -> pa.Table:
        if not images.flags.writeable:  # Ray Data's zero-copy batches are read-only; torch wants to own writable memory
            images = images.copy()
        preds, features = self.model.predict_with_embedding(images)
        return predictions_table(
            sample_ids,
            self.model.tasks,
            {k: v.float().cpu().numpy() for k, v in preds.items()},
            features.float().cpu().numpy(),
        )
