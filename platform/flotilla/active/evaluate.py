"""Both models on one fixed, labelled evaluation set: the numbers a promotion decision compares.

In-process (the set is small, and both models must see exactly the same images): each model's
predictions over every sample of the evaluation dataset at one pinned commit, scored as the
ground-truth check scores them (:func:`flotilla.loop.groundtruth.scores`: MAE for regression,
accuracy for classes), ``"<task>/<metric>"`` keys plus ``"<task>/n"``.
"""

from __future__ import annotations

import numpy as np

from flotilla.data.loader import HubDataset
from flotilla.data.pinning import DataRef
from flotilla.errors import ActiveLearningError
from flotilla.hub.client import Hub
from flotilla.loop.groundtruth import scores
from flotilla.loop.predictor import load_model
from flotilla.loop.slices import aligned_labels
from flotilla.registry import ModelLocation


def evaluate(hub: Hub, location: ModelLocation, data: DataRef, *, image_size: int) -> dict[str, float]:
    """``location``'s metrics on every labelled sample of ``data``."""
    import torch

    model = load_model(location, hub.credentials)
    ds = HubDataset(data, hub.credentials, image_size=image_size)
    ids: list[str] = []
    decisions: dict[str, list[np.ndarray]] = {t.name: [] for t in model.tasks}
    with torch.no_grad():
        for i in range(len(ds.manifest.shards)):
            shard_ids, images = ds.shard_samples(i)
            for s in range(0, len(images), 256):
                preds, _ = model.predict_with_embedding(np.stack(images[s : s + 256]))
                for t in model.tasks:
                    p = preds[t.name].float().numpy()
                    decisions[t.name].append(
                        p if t.kind == "regression" else (p >= 0.5) if t.kind == "binary" else p.argmax(axis=1)
                    )
            ids += shard_ids
    labels = aligned_labels(ids, ds.labels, [t.label or t.name for t in model.tasks])
    out: dict[str, float] = {}
    for t in model.tasks:
        metric, score, ok = scores(t, np.concatenate(decisions[t.name]).astype(np.float64), labels[t.label or t.name])
        if not ok.any():
            raise ActiveLearningError(
                f"the evaluation set {data.dataset!r} has no {t.label or t.name} labels: it cannot judge task {t.name!r}",
                hint="evaluate on a labelled dataset that covers every task of the family",
            )
        out[f"{t.name}/{metric}"] = float(score[ok].mean())
        out[f"{t.name}/n"] = float(ok.sum())
    return out
