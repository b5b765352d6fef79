"""reproduce's pure decisions: what counts as other code, which spec re-runs a card, and how metrics compare."""

from __future__ import annotations

import math

import pytest

from flotilla.errors import LineageError
from flotilla.lineage import DataLineage, ModelCard, ParentModel
from flotilla.specs import FamilySpec, parse_spec
from flotilla.training import MetricCheck, ModelResult
from flotilla.training.artifacts import CodeVersion
from flotilla.training.reproduction import DEFAULT_TOLERANCE, code_drift, compare, reproduction_spec, tolerance_for

SHA = "a" * 40


def _card(config: dict, *, model: str = "family", parent: ParentModel | None = None, **over) -> ModelCard:
    spec = parse_spec(FamilySpec, config)
    fields = {
        "run_id": "r1",
        "model": model,
        "created": "2026-01-01T00:00:00Z",
        "tasks": (),
        "metrics": {"age/mae": 9.0, "age/n": 100.0, "gender/accuracy": 0.8},
        "best_epoch": 1,
        "epochs_run": 3,
        "data": DataLineage("faces", "c" * 64, "faces", "main"),
        "branch": "exp-r1",
        "code": {"git_sha": SHA, "dirty": False},
        "config": spec.model_dump(mode="json"),
        "parent": parent,
    }
    return ModelCard(**{**fields, **over})


def _now(sha: str, dirty: bool | None = False, diff_sha256: str | None = None) -> CodeVersion:
    return CodeVersion("0.1", sha, dirty, b"diff" if diff_sha256 else None, diff_sha256)


def test_the_same_commit_and_tree_is_no_drift_and_anything_else_is_named() -> None:
    assert code_drift({"git_sha": SHA, "dirty": False}, _now(SHA)) == []
    assert code_drift({"git_sha": SHA, "dirty": True}, _now(SHA, True)) == []  # no hashes: the sha decides
    (other,) = code_drift({"git_sha": SHA, "dirty": False}, _now("b" * 40))
    assert "aaaaaaaaaaaa trained it" in other and "bbbbbbbbbbbb is checked out" in other
    (dirty,) = code_drift({"git_sha": SHA, "dirty": False}, _now(SHA, True, "2" * 64))
    assert "uncommitted changes" in dirty
    diffs = code_drift({"git_sha": SHA, "dirty": True, "diff_sha256": "1" * 64}, _now(SHA, True, "2" * 64))
    assert len(diffs) == 1 and "diff sha256 111111111111 then, 222222222222 now" in diffs[0]
    assert code_drift({"git_sha": SHA, "dirty": True, "diff_sha256": "1" * 64}, _now(SHA, True, "1" * 64)) == []
    # a hash on one side only (a card from before hashes were recorded) is not a difference by itself
    assert code_drift({"git_sha": SHA, "dirty": True}, _now(SHA, True, "2" * 64)) == []
    for then, now in ((SHA, "unknown"), ("unknown", "unknown"), (None, SHA)):
        (unknown,) = code_drift({"git_sha": then}, _now(now, None))
        assert "cannot be compared" in unknown


def test_a_card_re_runs_on_its_data_commit_its_parents_commit_and_is_never_merged() -> None:
    config = {
        "name": "fam",
        "data": {"repo": "faces", "dataset": "faces", "ref": "main"},
        "transfer": {"source": "fam@production", "load_heads": True},
        "merge_into": "main",
        "alias": "production",
        "seed": 7,
    }
    parent = ParentModel("faces", "p" * 64, "models/r0/family/model.pt")
    spec = reproduction_spec(_card(config, parent=parent))
    assert spec.data.ref == "c" * 64 and spec.data.dataset == "faces" and spec.seed == 7
    assert spec.merge_into is None and spec.alias is None
    assert spec.transfer is not None and spec.transfer.source == parent.uri and spec.transfer.load_heads
    with pytest.raises(LineageError, match="records no parent model"):
        reproduction_spec(_card(config))


def test_a_separate_familys_card_re_runs_only_its_own_task() -> None:
    config = {"name": "fam", "strategy": "separate", "tasks": ["age", "gender", {"name": "emotion", "weight": 3.0}]}
    spec = reproduction_spec(_card(config, model="gender"))
    assert spec.strategy == "separate" and spec.tasks == ["gender"]
    assert reproduction_spec(_card(config, model="emotion")).tasks == [{"name": "emotion", "weight": 3.0}]
    with pytest.raises(LineageError, match="has no task 'height'"):
        reproduction_spec(_card(config, model="height"))


def test_tolerances_come_from_the_caller_then_the_table_by_full_key_then_by_metric_name() -> None:
    assert tolerance_for("age/mae") == DEFAULT_TOLERANCE["age/mae"]
    assert tolerance_for("mood/accuracy") == DEFAULT_TOLERANCE["accuracy"]
    assert tolerance_for("age/n") == 0.0
    assert tolerance_for("age/mae", {"mae": 2.0}) == 2.0 and tolerance_for("age/mae", {"age/mae": 3.0, "mae": 2.0}) == 3.0
    assert tolerance_for("age/something_new") > 0


def test_metrics_are_compared_at_the_cards_best_epoch() -> None:
    card = _card({"name": "fam"})
    history = [
        {"val/age/mae": 20.0, "val/age/n": 100.0, "val/gender/accuracy": 0.5},
        {"val/age/mae": 9.2, "val/age/n": 100.0},  # the card's best epoch; gender/accuracy missing
        {"val/age/mae": 30.0, "val/age/n": 100.0, "val/gender/accuracy": 0.8},
    ]
    result = ModelResult("family", ["age", "gender"], "exp-x", "c1", "lakefs://x", {"age/mae": 30.0}, history, 1.0)
    checks = {c.metric: c for c in compare(card, result)}
    assert checks["age/mae"].reproduced == 9.2 and checks["age/mae"].ok  # 0.2 < 0.5, and not the last epoch's 30
    assert math.isclose(checks["age/mae"].difference or 0, 0.2)
    assert checks["age/n"].ok and checks["age/n"].difference == 0
    assert checks["gender/accuracy"].reproduced is None and not checks["gender/accuracy"].ok
    assert not compare(card, result, {"age/mae": 0.1})[0].ok
    short = ModelResult("family", ["age"], "exp-x", "c1", "lakefs://x", {}, history[:1], 1.0)  # stopped before the best epoch
    assert not any(c.ok for c in compare(card, short))


def test_a_metric_that_is_not_a_number_is_never_within_tolerance() -> None:
    assert not MetricCheck("age/mae", 9.0, math.nan, 1.0).ok
    assert not MetricCheck("age/mae", 9.0, math.inf, 1.0).ok
    assert MetricCheck("age/mae", 9.0, 9.0, 0.0).ok
