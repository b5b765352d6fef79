"""A worker on the second node of a real two-node Ray cluster reads the dataset through the hub."""

import os
import shutil
import tempfile

import pytest
import ray
from ray.cluster_utils import Cluster

from flotilla.data.api import generate
from flotilla.data.loader import HubDataset
from flotilla.data.pinning import resolve_data
from flotilla.data.validate import Thresholds

pytestmark = pytest.mark.integration


@pytest.fixture
def two_nodes(monkeypatch):
    tmp = tempfile.mkdtemp(prefix="fl-ray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    monkeypatch.setenv("RAY_TMPDIR", tmp)  # keep Ray's session files (and its address file) out of /tmp/ray
    node = {"num_cpus": 1}
    os.makedirs(f"{tmp}/ray")
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False, "temp_dir": f"{tmp}/ray"})
    cluster.add_node(**node, resources={"second_node": 1})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    yield cluster
    ray.shutdown()
    cluster.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


@ray.remote(num_cpus=1, resources={"second_node": 1})
def read_on_second_node(ds: HubDataset, cache_dir: str):
    ds.cache_dir = cache_dir  # this node's own cache; nothing of the driver's disk is used
    n = sum(len(b["age"]) for b in ds.iter_batches("train", 64, shuffle=False))
    return ray.get_runtime_context().get_node_id(), n, ds.cache.stats.misses, ds.cache.stats.bytes_fetched


@pytest.mark.timeout(240)
def test_second_node_worker_reads_through_the_hub(hub, repo, two_nodes, tmp_path):
    generate(hub, repo.name, "faces", 300, seed=3, thresholds=Thresholds(min_group_count=2))
    ref = resolve_data(hub, repo.name, "main", "faces")
    ds = HubDataset(ref, hub.credentials)
    node, n, misses, fetched = ray.get(read_on_second_node.remote(ds, str(tmp_path / "node2-cache")))
    assert node != ray.get_runtime_context().get_node_id()
    assert n == ds.manifest.counts["train"] and misses >= 1 and fetched > 0
    # and as a Ray Data dataset: read tasks run wherever Ray schedules them
    assert ds.to_ray("val").count() == ds.manifest.counts["val"]
