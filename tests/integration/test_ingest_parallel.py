"""Parallel ingest in the real hub: the same data whatever the workers, and the gate's report at ingest (from
the workers' shard facts) the very one ``validate_ref`` computes from the hub afterwards."""

import pytest

from flotilla.data import layout
from flotilla.data.api import generate, synthetic_samples
from flotilla.data.ingest import ingest, validate_ref
from flotilla.data.store import read_labels, read_manifest
from flotilla.data.validate import Thresholds
from flotilla.errors import DataValidationError

pytestmark = pytest.mark.integration

SMALL = Thresholds(min_group_count=3)
N = layout.SHARD_ROWS + 60  # two shards: the pool starts


def test_two_workers_write_what_one_writes_and_the_ingest_report_is_the_hubs(hub, repo):
    progress: list[int] = []
    two = generate(hub, repo.name, "two", N, seed=4, thresholds=SMALL, workers=2, on_progress=progress.append)
    one = generate(hub, repo.name, "one", N, seed=4, thresholds=SMALL, workers=1)
    assert progress == [layout.SHARD_ROWS, 60]  # per shard, in order
    m2, m1 = read_manifest(repo, "main", "two"), read_manifest(repo, "main", "one")
    assert [s.sha256 for s in m2.shards] == [s.sha256 for s in m1.shards] and len(m2.shards) == 2
    assert [repo.get("main", s.path) for s in m2.shards] == [repo.get("main", s.path) for s in m1.shards]
    assert read_labels(repo, "main", "two").equals(read_labels(repo, "main", "one"))
    assert two.report.to_json() == validate_ref(repo, two.commit, "two", SMALL).to_json()
    assert one.report.to_json() == validate_ref(repo, one.commit, "one", SMALL).to_json()


def test_a_failed_ingest_reports_what_the_hub_validation_of_its_branch_reports(hub, repo):
    samples = list(synthetic_samples(120, seed=2))
    samples[0].image = b"\x89PNG\r\n\x1a\nthis is not a png"
    samples[1].image = b"neither is this"
    samples[2].age = 150.0
    samples[3] = layout.Sample("dup", samples[4].image, "png", samples[4].age, 1 - samples[4].gender, samples[4].emotion)
    with pytest.raises(DataValidationError) as info:
        ingest(hub, repo.name, "bad", samples, provenance={"source": "test"}, thresholds=SMALL, workers=2)
    report = info.value.report
    branch = next(b for b in repo.branches() if b.startswith("ingest-bad-"))
    assert report.to_json() == validate_ref(repo, branch, "bad", SMALL).to_json()
    checks = {i.check for i in report.issues}
    assert {"images.decode", "labels.age", "duplicates.conflicting_labels"} <= checks
    assert not repo.list("main", layout.dataset_prefix("bad"))  # main has none of it
