"""One k-nearest-neighbour graph from the embeddings, built once and shared by every task's checks.

Outliers, near-duplicates, non-iid ordering and weak groups all read "who is near whom"; building
that once and handing cleanlab the sparse graph (``knn_graph=``) saves each check its own
O(n²) search. Embeddings are L2-normalised first, so the distance is a cosine one and the
trunk's feature scale does not matter. The search runs in query batches: the full n × n distance
matrix of 50k samples would take 20 GB, a batch of 2,048 rows takes 400 MB.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from flotilla.errors import SpecError

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix

BATCH_ROWS = 2048


def normalise(embeddings: np.ndarray) -> np.ndarray:
    x = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def knn_graph(embeddings: np.ndarray, k: int = 10, *, batch_rows: int = BATCH_ROWS) -> csr_matrix:
    """The sparse [n, n] graph of each sample's ``k`` nearest *other* samples (``mode="distance"``, rows sorted by distance).

    As scikit-learn's ``NearestNeighbors.kneighbors_graph(mode="distance")`` gives it, but queried
    ``batch_rows`` at a time. A sample is never its own neighbour, even when an exact duplicate
    ties with it at distance 0.
    """
    from scipy.sparse import csr_matrix
    from sklearn.neighbors import NearestNeighbors

    x = normalise(embeddings)
    n = len(x)
    if k < 1 or n <= k:
        raise SpecError(f"a {k}-nearest-neighbour graph needs more than {k} samples and k ≥ 1; got {n}", hint="lower --k")
    index = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(x)
    cols = np.empty((n, k), dtype=np.int64)
    dist = np.empty((n, k), dtype=np.float64)
    for start in range(0, n, batch_rows):
        rows = np.arange(start, min(start + batch_rows, n))
        d, i = index.kneighbors(x[rows])
        is_self = i == rows[:, None]
        keep = ~is_self
        keep[~is_self.any(axis=1), k] = False  # self not among the k + 1: drop the farthest instead
        cols[rows] = i[keep].reshape(len(rows), k)
        dist[rows] = np.maximum(d[keep].reshape(len(rows), k), 0.0)
    return csr_matrix((dist.ravel(), cols.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))


def exact_duplicates(sample_ids: Sequence[str], sha256: Sequence[str]) -> list[str | None]:
    """Per sample, another sample with the very same image bytes (the first one seen), or None."""
    first: dict[str, int] = {}
    second: dict[str, int] = {}
    for i, h in enumerate(sha256):
        if h not in first:
            first[h] = i
        elif h not in second:
            second[h] = i
    out: list[str | None] = []
    for i, h in enumerate(sha256):
        j = first[h] if first[h] != i else second.get(h)
        out.append(None if j is None else sample_ids[j])
    return out
