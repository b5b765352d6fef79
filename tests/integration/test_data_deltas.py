"""Appends and label changes as deltas on a real lakeFS: side by side they merge, on the same sample they conflict.

Two label changes to different samples, made on two branches at once, both merge (each writes new objects only;
the receipts' one shared path resolves to the newer); the same sample changed two ways is refused, naming it, with
main unchanged. An append adds shards without touching any existing one, and readers — the hub API and the
training loader through the S3 gateway — see base and deltas folded. The pre-merge hook refuses a delta written
after validation.
"""

from __future__ import annotations

import pytest

from flotilla.data import (
    HubDataset,
    append,
    generate,
    read_labels,
    read_manifest,
    resolve_data,
    stage_label_change,
    synthetic_samples,
)
from flotilla.data.ingest import validate_and_merge
from flotilla.data.labelfix import plan_label_fix
from flotilla.data.report import Thresholds
from flotilla.errors import ConflictError, DataValidationError

pytestmark = pytest.mark.integration

SMALL = Thresholds(min_group_count=3)


@pytest.fixture
def faces(hub, repo):
    return generate(hub, repo.name, "faces", 240, seed=2, thresholds=SMALL)


def _change(hub, repo, branch: str, changes: dict) -> None:
    repo.create_branch(branch, "main")
    edit = plan_label_fix(read_labels(repo, branch, "faces"), changes, "faces")
    stage_label_change(repo, branch, "faces", edit)
    repo.commit(branch, f"label change on {branch}")


def _merge(hub, repo, branch: str):
    return validate_and_merge(hub, repo.name, branch, "faces", thresholds=SMALL, merge=True)


def test_changes_to_different_samples_on_two_branches_both_merge(faces, hub, repo):
    ids = read_labels(repo, "main", "faces").column("sample_id").to_pylist()
    _change(hub, repo, "fix-a", {ids[0]: {"age": 11}, ids[1]: {"gender": "male"}})
    _change(hub, repo, "fix-b", {ids[2]: {"age": 22}, ids[3]: {"emotion": "happy"}})  # cut before fix-a merges
    _merge(hub, repo, "fix-a")
    _, merged = _merge(hub, repo, "fix-b")
    assert repo.resolve("main") == merged
    after = read_labels(repo, "main", "faces").to_pydict()
    assert after["sample_id"] == ids  # the order readers had is kept
    assert after["age"][0] == 11 and after["gender"][1] == 1 and after["age"][2] == 22 and after["emotion"][3] == 3
    assert read_manifest(repo, "main", "faces").counts["samples"] == 240


def test_the_same_sample_changed_two_ways_is_a_conflict_naming_it(faces, hub, repo):
    sid = read_labels(repo, "main", "faces").column("sample_id").to_pylist()[5]
    _change(hub, repo, "fix-x", {sid: {"age": 40}})
    _change(hub, repo, "fix-y", {sid: {"age": 60}})
    _merge(hub, repo, "fix-x")
    head = repo.resolve("main")
    with pytest.raises(ConflictError, match=f"1 sample.* of dataset 'faces' were changed on 'main'.*{sid}"):
        _merge(hub, repo, "fix-y")
    assert repo.resolve("main") == head and read_labels(repo, "main", "faces").column("age").to_pylist()[5] == 40


def test_an_append_adds_shards_and_leaves_every_existing_one_as_it_was(faces, hub, repo):
    before = {s.path: repo.stat("main", s.path).checksum for s in read_manifest(repo, "main", "faces").shards}
    result = append(hub, repo.name, "faces", synthetic_samples(30, seed=77), reason="round 1 labels")
    assert result.samples == 30 and result.merge_commit == repo.resolve("main") and len(result.shards) == 1
    manifest = read_manifest(repo, "main", "faces")
    assert manifest.counts["samples"] == 270 and len(manifest.shards) == len(before) + 1
    assert {p: repo.stat("main", p).checksum for p in before} == before  # same objects: zero-copy, caches stay valid
    data = HubDataset(resolve_data(hub, repo.name, "main", "faces"), hub.credentials)
    seen = [sid for i in range(len(data.manifest.shards)) for sid in data.shard_samples(i)[0]]
    assert len(seen) == 270 and sum(s.startswith("syn-77-") for s in seen) == 30 and data.labels.num_rows == 270
    head = repo.resolve("main")
    with pytest.raises(DataValidationError, match=r"already|in it"):
        append(hub, repo.name, "faces", synthetic_samples(3, seed=77))
    with pytest.raises(DataValidationError, match="no samples"):
        append(hub, repo.name, "faces", [])
    assert repo.resolve("main") == head and not [b for b in repo.branches() if b.startswith(("append-", "receipt-"))]


def test_the_hook_refuses_a_delta_written_after_validation(faces, hub, repo):
    sid = read_labels(repo, "main", "faces").column("sample_id").to_pylist()[0]
    _change(hub, repo, "sneaky", {sid: {"age": 99}})
    head = repo.resolve("main")
    with pytest.raises(DataValidationError, match="added after validation"):
        repo.merge("sneaky", "main")
    assert repo.resolve("main") == head
