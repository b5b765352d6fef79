"""Near-duplicates by image content: an 8 × 8 colour thumbnail per image, and each one's nearest other.

A near-duplicate is a property of the images, not of a model: a re-encoded or lightly retouched copy
of a photo. The model's embedding is the wrong ruler for it — a model trained to tell ages, genders
and emotions apart maps *different* faces of one age, gender and emotion close together (the weaker
the model, the closer), so cleanlab's embedding-based check, which compares each pair with the
typical neighbour distance, misses copies that sit no closer than a crowd of look-alikes
(``bench/audit.py`` measured recall 0.43–0.57 with a small model). An 8 × 8 area-averaged RGB
thumbnail (192 numbers) is what perceptual hashes are made of: blind to JPEG noise and small
retouches, far apart for different photos, and cheap (about 2 s per 10,000 images for the search).

The rule is cleanlab's own, on this ruler: a pair is a near-duplicate when its distance is below
``ratio`` (cleanlab's default 0.13) times the median nearest-neighbour distance of the dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SIDE = 8
RATIO = 0.13
BATCH_ROWS = 4096


def thumbnail(image: np.ndarray) -> np.ndarray:
    """One uint8 [H, W, 3] image as its ``SIDE × SIDE`` area-averaged RGB thumbnail in [0, 1], flattened."""
    from PIL import Image

    img = np.asarray(image, dtype=np.uint8)
    h, w = img.shape[:2]
    if h % SIDE == 0 and w % SIDE == 0:
        small = img.reshape(SIDE, h // SIDE, SIDE, w // SIDE, -1).astype(np.float32).mean(axis=(1, 3))
    else:
        small = np.asarray(Image.fromarray(img).resize((SIDE, SIDE), Image.Resampling.BOX), dtype=np.float32)
    out: np.ndarray = (small / 255.0).reshape(-1)
    return out


def fingerprints(images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """[n, 192] float32: each image's thumbnail (see :func:`thumbnail`)."""
    arr = images if isinstance(images, np.ndarray) else None
    if arr is not None and arr.ndim == 4 and arr.shape[1] % SIDE == 0 and arr.shape[2] % SIDE == 0:
        n, h, w = arr.shape[:3]
        small = arr.reshape(n, SIDE, h // SIDE, SIDE, w // SIDE, -1).astype(np.float32).mean(axis=(2, 4))
        out: np.ndarray = (small / 255.0).reshape(n, -1).astype(np.float32)
        return out
    return np.stack([thumbnail(im) for im in images]).astype(np.float32)


@dataclass(frozen=True)
class ContentDuplicates:
    """Per sample: flagged, the nearest other sample (index), and a score in [0, 1] (lower = nearer)."""

    is_duplicate: np.ndarray
    nearest: np.ndarray
    score: np.ndarray


def content_duplicates(prints: np.ndarray, *, ratio: float = RATIO, batch_rows: int = BATCH_ROWS) -> ContentDuplicates:
    """Each fingerprint's nearest other (exact L2 search in batches) and whether it is a near-duplicate.

    The score is the pair's distance over the median nearest-neighbour distance, capped at 1: the
    same scale as the flag's rule, so a flag always has a score below ``ratio``.
    """
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(prints, dtype=np.float32)
    n = len(x)
    if n < 2:
        return ContentDuplicates(np.zeros(n, dtype=bool), np.full(n, -1), np.ones(n))
    index = NearestNeighbors(n_neighbors=2, algorithm="brute").fit(x)
    nearest = np.empty(n, dtype=np.int64)
    dist = np.empty(n, dtype=np.float64)
    for start in range(0, n, batch_rows):
        rows = np.arange(start, min(start + batch_rows, n))
        d, i = index.kneighbors(x[rows])
        other = np.where(i[:, 0] == rows, 1, 0)  # an exact duplicate may tie with the sample itself
        nearest[rows] = i[np.arange(len(rows)), other]
        dist[rows] = d[np.arange(len(rows)), other]
    typical = float(np.median(dist))
    if typical <= 0:  # more than half the images have an identical twin: any positive distance is "far"
        typical = float(dist[dist > 0].min()) if (dist > 0).any() else 1.0
    score = np.minimum(dist / typical, 1.0)
    return ContentDuplicates(score < ratio, nearest, score)
