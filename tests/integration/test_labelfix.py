"""Label fixes against a real lakeFS: through a branch, the gate and one validated merge, or not at all."""

import pytest

from flotilla.data import generate, read_labels, read_manifest, relabel
from flotilla.data.layout import labels_path
from flotilla.data.report import Thresholds
from flotilla.errors import DataValidationError, SpecError
from flotilla.lineage import LabelFix, read_commit

pytestmark = pytest.mark.integration

SMALL = Thresholds(min_group_count=3)


@pytest.fixture
def faces(hub, repo):
    return generate(hub, repo.name, "faces", 240, seed=2, thresholds=SMALL)


def _no_scratch_branches(repo):
    return not [b for b in repo.branches() if b.startswith(("relabel-", "receipt-"))]


def test_a_label_fix_merges_validated_and_says_what_it_changed(faces, hub, repo):
    before = read_labels(repo, "main", "faces")
    ids = before.column("sample_id").to_pylist()
    genders = before.column("gender").to_pylist()
    changes = {sid: {"gender": 1 - genders[i]} for i, sid in enumerate(ids[:7])}
    changes[ids[0]]["age"] = 33  # one sample with two labels fixed
    changes[ids[8]] = {"emotion": None}  # an emotion made unknown: the manifest's label count follows
    head = repo.resolve("main")
    # the gate runs with the thresholds the dataset was admitted with (SMALL), not the defaults it would fail
    fix = relabel(hub, repo.name, "faces", changes, reason="annotator swapped genders")
    assert repo.resolve("main") == fix.merge_commit and fix.base_commit == head
    assert fix.samples == 8 and dict(fix.changed) == {"gender": 7, "age": 1, "emotion": 1}
    assert "8 sample(s) of 'faces' relabelled (age 1, emotion 1, gender 7)" in fix.summary()
    assert fix.report is not None and fix.report.passed
    after = read_labels(repo, "main", "faces")
    assert after.column("gender").to_pylist()[:7] == [1 - g for g in genders[:7]]
    assert after.column("gender").to_pylist()[7:] == genders[7:]
    assert after.column("emotion").to_pylist()[8] is None
    assert read_manifest(repo, "main", "faces").label_counts["emotion"] == faces.manifest.label_counts["emotion"] - 1
    # merged: the fix commit, then the gate's receipt on it; the fix commit records itself; no image shard changed
    receipt = repo.commit_info(repo.commit_info(fix.merge_commit).parents[1])
    assert receipt.parents == (fix.commit,)
    assert read_commit(repo.commit_info(fix.commit).metadata) == LabelFix(
        "faces", 8, {"gender": 7, "age": 1, "emotion": 1}, head, "annotator swapped genders"
    )
    changed = {c.path for c in repo.diff(head, "main", "datasets/faces/")}
    # a delta, not a rewrite: labels.parquet and every shard untouched, one claim per relabelled sample
    assert not {p for p in changed if "/images/" in p} and labels_path("faces") not in changed
    assert len([p for p in changed if "/deltas/" in p]) == 2 and len([p for p in changed if "/claims/" in p]) == 8
    assert _no_scratch_branches(repo)
    again = relabel(hub, repo.name, "faces", {ids[0]: {"age": 33.0}})  # already so: nothing to commit
    assert again.merge_commit is None and again.samples == 0 and repo.resolve("main") == fix.merge_commit


def test_a_bad_fix_or_one_the_gate_refuses_changes_nothing(faces, hub, repo):
    head = repo.resolve("main")
    sid = read_labels(repo, "main", "faces").column("sample_id").to_pylist()[0]
    with pytest.raises(SpecError, match=r"sample id\(s\) not in the dataset: 'syn-9-nope'"):
        relabel(hub, repo.name, "faces", {"syn-9-nope": {"gender": 0}, sid: {"gender": 1}})
    with pytest.raises(SpecError, match="gender 2 is not one of 0 female, 1 male"):
        relabel(hub, repo.name, "faces", {sid: {"gender": 2}})
    with pytest.raises(DataValidationError) as err:  # every label unknown: the gate refuses the row
        relabel(hub, repo.name, "faces", {sid: {"age": None, "gender": None, "emotion": None}})
    assert (
        "failed validation" in err.value.message and "the label fix was not applied; 'main' was not changed" in err.value.message
    )
    assert "call relabel again" in err.value.hint and "relabel-" not in err.value.hint
    assert repo.resolve("main") == head and _no_scratch_branches(repo)
