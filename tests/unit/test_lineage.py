"""The lineage records: each kind of commit round-trips through lakeFS's string metadata, and the
card keeps the JSON shape readers outside flotilla parse."""

import json

import pytest

from flotilla.lineage import (
    ActiveRound,
    AuditRun,
    CheckpointCommit,
    DataLineage,
    DataReview,
    FailureCommit,
    FamilyPromotion,
    GateInstall,
    InferenceCommit,
    IngestCommit,
    Key,
    Kind,
    LabelFix,
    ModelCard,
    ModelCommit,
    MonitorRun,
    ParentModel,
    PromotionCommit,
    read_commit,
)


def _as_lakefs_stores_it(md: dict) -> dict[str, str]:
    """lakeFS keeps metadata as str → str; flotilla's Repo turns non-strings into JSON, None into "null" (Repo._metadata)."""
    return {str(k): str(v) if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str) for k, v in md.items()}


@pytest.mark.parametrize(
    "record",
    [
        IngestCommit("faces", 120, True, "c0ffee", {"source": "synthetic", "seed": "3"}),
        IngestCommit("faces", 7, False, "c0ffee"),
        GateInstall(),
        CheckpointCommit("family", 4),
        CheckpointCommit("family", None),
        CheckpointCommit("age", 7, {"val/age/mae": 4.25}, 5),
        FailureCommit("age", "worker died"),
        ModelCommit("run-1", "family", "abc123", "deadbeef", None, {"age/mae": 4.5}),
        ModelCommit("run-2", "age", "abc123", "deadbeef", "lakefs://faces/abc/models/run-1/family/model.pt", {"age/mae": 3.0}),
        PromotionCommit("sw-1", "t0001", "abc123", {"optim.lr": 0.01}, {"gender/accuracy": 0.9}),
        FamilyPromotion("run-3", ("age", "gender")),
        LabelFix("faces", 37, {"gender": 37, "age": 2}, "c0ffee", "annotator 4 swapped genders"),
        LabelFix("faces", 1, {"emotion": 1}, "c0ffee"),
        InferenceCommit("lakefs://faces/abc/models/run-1/family/model.pt", "abc123", "f00d", "incoming", "", 500),
        InferenceCommit("lakefs://faces/abc/models/run-1/age/model.pt", "abc123", "f00d", "incoming", "test", 7),
        MonitorRun("lakefs://faces/abc/models/r/family/model.pt", "abc123", "f00d", "incoming", "", True, 0.05, "monitoring/x/"),
        ActiveRound("al", 2, "decide", "lakefs://f/a/models/r/family/model.pt", "c0", {"promote": False, "why": ["age"]}),
        MonitorRun("lakefs://f/a/models/r/family/model.pt", "abc", "f0", "in", "val", False, 0.01, "m/", ("age", "emotion")),
        DataReview("faces", "20261206-ab12", "change", "c0", {"emotion": 3}, {"duplicate": 1}, {"reviewers": ["user 1"]}),
        DataReview("faces", "20261206-ab12", "send", "c1", detail={"project": 4, "tasks": 12}),
        AuditRun("20261206T235001-a1b2", "faces", "c0", "lakefs://f/a/m.pt", "abc", "probe", "", 300, {"label:emotion": 12}),
        AuditRun("x", "faces", "c0", "lakefs://f/a/models/r/family/model.pt", "abc", "model", "test", 7),
    ],
)
def test_every_commit_record_reads_back_as_written(record):
    assert read_commit(_as_lakefs_stores_it(record.to_metadata())) == record


def test_sample_counts_are_not_metrics_and_other_commits_are_none():
    md = ModelCommit("r", "m", "c", "g", None, {"age/mae": 1.0, "age/n": 50}).to_metadata()
    assert "metric.age/mae" in md and "metric.age/n" not in md and md[Key.KIND] == Kind.MODEL == "model"
    assert read_commit({"some": "user commit"}) is None and read_commit({Key.KIND: "not-ours"}) is None


def test_the_model_card_keeps_its_json_shape():
    card = ModelCard(
        run_id="r",
        model="family",
        created="2026-12-06T00:00:00Z",
        tasks=({"name": "age", "kind": "regression"},),
        metrics={"age/mae": 4.0},
        best_epoch=2,
        epochs_run=3,
        data=DataLineage("faces", "abc", "faces", "main"),
        branch="exp-r",
        code={"git_sha": "g", "dirty": False, "flotilla_version": "0.1.0"},
        config={"name": "fam"},
        parent=ParentModel("faces", "def", "models/p/family/model.pt"),
    )
    d = json.loads(json.dumps(card.to_dict()))
    assert d["data"] == {"repo": "faces", "commit": "abc", "dataset": "faces", "ref": "main"}
    assert d["parent"]["uri"] == "lakefs://faces/def/models/p/family/model.pt" and d["code"]["git_sha"] == "g"
    assert ModelCard.from_dict(d) == card


def test_job_labels_round_trip():
    from flotilla.lineage import JobLabels

    labels = JobLabels("train", "fam", "0.1.0", {"data_commit": "abc", "data_repo": "faces"})
    assert JobLabels.from_metadata(labels.to_metadata()) == labels
    assert labels.to_metadata()["job_name"] == "train: fam"  # Ray's dashboard shows it in the Jobs table's Name column


def test_no_module_but_lineage_spells_a_metadata_key():
    """One writer, one reader: a key spelled by hand elsewhere is a reader that misses a renamed key."""
    import ast
    from pathlib import Path

    import flotilla

    keys = {k.value for k in Key if k.value.startswith("flotilla.")}
    root = Path(flotilla.__file__).parent
    found = []
    for path in root.rglob("*.py"):
        if path.name == "lineage.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in keys:
                found.append(f"{path.relative_to(root)}:{node.lineno} {node.value}")
    assert not found, found
