"""A full cache disk does not fail training: the loader reads uncached, with the same batches and one warning.

Issue 22 filled the cache's disk during a training: ``ENOSPC`` in the cache's write failed the
run after three attempts. Here the node cache lives on a real, nearly full tmpfs (root mounts it,
as on the dev machine and in CI's containers; elsewhere the test is skipped, and
``tests/unit/test_cache_disk_pressure.py`` still fakes the failure).
"""

from __future__ import annotations

import subprocess
import warnings

import numpy as np
import pytest

from flotilla.data.api import generate
from flotilla.data.cache import CacheUnwritable
from flotilla.data.loader import HubDataset
from flotilla.data.pinning import resolve_data
from flotilla.data.validate import Thresholds

pytestmark = pytest.mark.integration


@pytest.fixture
def full_disk(tmp_path):
    where = tmp_path / "small-disk"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()[:80]})")
    (where / "someone-else").write_bytes(b"x" * (250 * 1024))  # another program filled it
    yield where
    subprocess.run(["umount", "-l", str(where)], check=True)


def epochs(ds: HubDataset) -> list[dict[str, np.ndarray]]:
    return [b for e in range(2) for b in ds.iter_batches("train", 64, seed=3, epoch=e)]


def test_a_loader_whose_cache_disk_is_full_gives_the_same_batches_with_one_warning(hub, repo, tmp_path, full_disk):
    generate(hub, repo.name, "faces", 480, seed=1, thresholds=Thresholds(min_group_count=3))
    ref = resolve_data(hub, repo.name, "main", "faces")
    expected = epochs(HubDataset(ref, hub.credentials, cache_dir=tmp_path / "roomy", image_size=32))

    ds = HubDataset(ref, hub.credentials, cache_dir=full_disk / "data", image_size=32)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        got = epochs(ds)
    assert len(got) == len(expected) > 2
    for a, b in zip(got, expected, strict=True):
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    said = [str(w.message) for w in seen if issubclass(w.category, CacheUnwritable)]
    assert len(said) == 1, said
    assert str(full_disk / "data") in said[0] and "FLOTILLA_CACHE" in said[0] and "checkpoint" not in said[0]
    assert ds.cache.unwritable and ds.decoded_cache.stats.builds <= 1  # PNGs decoded per epoch, not held in memory
