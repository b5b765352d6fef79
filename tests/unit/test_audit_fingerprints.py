"""Near-duplicates by image content: found where the embeddings cannot tell, and no false pairs among distinct images."""

from __future__ import annotations

import numpy as np

from flotilla.audit import find_issues
from flotilla.audit.fingerprints import content_duplicates, fingerprints, thumbnail


def _images(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, 4, 4, 3)).astype(np.float32)  # coarse structure: distinct at 8 x 8
    return np.clip(base.repeat(8, axis=1).repeat(8, axis=2) + rng.normal(0, 20, (n, 32, 32, 3)), 0, 255).astype(np.uint8)


def test_fingerprints_are_the_area_average_thumbnail_whatever_the_size():
    img = _images(1, 0)[0]
    assert fingerprints(img[None]).shape == (1, 192)
    np.testing.assert_allclose(fingerprints(img[None])[0], thumbnail(img), atol=1e-6)
    odd = np.full((30, 30, 3), 200, dtype=np.uint8)  # not a multiple of 8: resized with a box filter
    np.testing.assert_allclose(thumbnail(odd), 200 / 255, atol=1e-6)


def test_noisy_copies_are_found_by_content_and_distinct_images_are_not():
    images = _images(400, 1)
    rng = np.random.default_rng(2)
    copies = np.arange(0, 20)
    sources = np.arange(200, 220)
    images[copies] = np.clip(images[sources] + rng.normal(0, 2, images[sources].shape), 0, 255).astype(np.uint8)
    found = content_duplicates(fingerprints(images))
    pair = np.zeros(400, bool)
    pair[copies] = pair[sources] = True
    assert found.is_duplicate[copies].all() and (found.nearest[copies] == sources).all()
    assert not found.is_duplicate[~pair].any()
    assert (found.score[copies] < 0.13).all() and (found.score[~pair] >= 0.13).all()


def test_find_issues_flags_content_duplicates_the_embeddings_miss():
    n = 300
    images = _images(n, 3)
    images[0] = images[150]  # an exact copy, and a near one
    images[1] = np.clip(images[151].astype(np.float32) + 1, 0, 255).astype(np.uint8)
    rng = np.random.default_rng(4)
    emb = rng.normal(size=(n, 16))  # embeddings that know nothing about the images
    labels = {"g": rng.integers(0, 2, n).astype(float)}
    kw = {"labels": labels, "kinds": {"g": "binary"}, "seed": 0}
    blind = find_issues([f"s{i}" for i in range(n)], emb, **kw).to_pydict()
    seen = find_issues([f"s{i}" for i in range(n)], emb, images=images, **kw).to_pydict()
    assert not blind["near_duplicate"][1]
    assert seen["near_duplicate"][0] and seen["near_duplicate"][1]
    assert seen["near_duplicate_of"][0] == "s150" and seen["near_duplicate_of"][1] == "s151"
    assert "near_duplicate" in seen["issues"][1]
