"""Example images for a drift report: the current faces least like anything the model was trained on.

A p-value says *that* the data moved; a page of the most atypical incoming faces usually says
*how* (dark, masked, noisy, old) faster than any statistic. Atypicality is the mean distance from a
current sample's embedding to its ``k`` nearest reference embeddings, divided by the same quantity
within the reference (leave-one-out), so 1 means "as typical as a training face" whatever the
embedding's scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flotilla.data.loader import HubDataset

K = 5
MAX_REFERENCE = 2000
"""Reference rows the distances are taken to (seeded subsample above this): the cost is O(current x this)."""


def _knn_mean(queries: np.ndarray, points: np.ndarray, k: int, *, skip_self: bool = False, chunk: int = 512) -> np.ndarray:
    out = np.empty(len(queries))
    pp = np.einsum("ij,ij->i", points, points)
    for s in range(0, len(queries), chunk):
        q = queries[s : s + chunk]
        d2 = np.maximum(np.einsum("ij,ij->i", q, q)[:, None] + pp[None, :] - 2 * q @ points.T, 0.0)
        kk = min(k + int(skip_self), d2.shape[1])
        nearest = np.sqrt(np.partition(d2, kk - 1, axis=1)[:, :kk])
        nearest.sort(axis=1)
        out[s : s + chunk] = nearest[:, int(skip_self) :].mean(axis=1)
    return out


def atypicality(reference: np.ndarray, current: np.ndarray, *, k: int = K, seed: int = 0) -> np.ndarray:
    """Per current sample: its k-NN distance to the reference over the reference's own typical k-NN distance."""
    ref = np.asarray(reference, dtype=np.float64)
    if len(ref) > MAX_REFERENCE:
        ref = ref[np.random.default_rng(seed).choice(len(ref), MAX_REFERENCE, replace=False)]
    k = max(1, min(k, len(ref) - 1))
    typical = float(np.median(_knn_mean(ref, ref, k, skip_self=True)))
    return _knn_mean(np.asarray(current, dtype=np.float64), ref, k) / max(typical, 1e-12)


def load_images(data: HubDataset, sample_ids: Sequence[str], *, max_shards: int = 16) -> dict[str, np.ndarray]:
    """The images of ``sample_ids`` (HxWx3 uint8), reading shards in order until all are found or ``max_shards`` are read.

    The predictions do not say which shard a sample is in; a report shows a handful of faces, so the
    bounded scan is the cheap way, and a face not found in time is simply not shown.
    """
    wanted, found = set(sample_ids), {}
    for i in range(min(len(data.manifest.shards), max_shards)):
        ids, images = data.shard_samples(i)
        for sid, image in zip(ids, images, strict=True):
            if sid in wanted:
                found[sid] = image
        if len(found) == len(wanted):
            break
    return found
