"""Active learning's pure parts: the labelling config, annotations back, the promotion rule, round names and state."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from flotilla.active import decide, label_config, parse_annotations
from flotilla.active.labelconfig import prediction_items, require_valid
from flotilla.active.rounds import RoundState, check_name, round_branch
from flotilla.active.truth import scripted_labels
from flotilla.errors import ActiveLearningError, SpecError
from flotilla.models import REFERENCE_TASKS

TASKS = list(REFERENCE_TASKS.values())


def test_the_label_config_has_one_control_per_task_from_the_schema():
    root = ET.fromstring(label_config(TASKS))
    assert root.find("Image").get("name") == "image"
    age = root.find("Number")
    assert age.get("name") == "age" and age.get("min") == "0" and age.get("max") == "120"
    choices = {c.get("name"): [x.get("value") for x in c.findall("Choice")] for c in root.findall("Choices")}
    assert choices == {
        "gender": ["female", "male"],
        "emotion": ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"],
    }


def _task(tid, sid, result, cancelled=False, updated="2026-12-06T10:00:00"):
    return {
        "id": tid,
        "data": {"sample_id": sid},
        "annotations": [{"id": tid, "result": result, "was_cancelled": cancelled, "updated_at": updated}],
    }


def test_annotations_map_back_and_skipped_or_empty_tasks_are_not_invented():
    good = prediction_items(TASKS, {"age": 34.04, "gender": 1, "emotion": 3})
    exported = [
        _task(1, "s1", good),
        _task(2, "s2", good, cancelled=True),
        {"id": 3, "data": {"sample_id": "s3"}, "annotations": []},
    ]
    exported[0]["annotations"].append(
        {"id": 9, "result": prediction_items(TASKS, {"age": 40, "gender": 0, "emotion": 0}), "updated_at": "2026-12-07"}
    )
    parsed = require_valid(parse_annotations(TASKS, exported))
    assert parsed.labels == {"s1": {"age": 40.0, "gender": 0, "emotion": 0}}  # the newest annotation wins


def test_bad_annotation_values_are_all_named():
    bad = [
        {"from_name": "age", "to_name": "image", "type": "number", "value": {"number": 300}},
        {"from_name": "emotion", "to_name": "image", "type": "choices", "value": {"choices": ["bored"]}},
    ]
    parsed = parse_annotations(TASKS, [_task(7, "s7", bad)])
    assert len(parsed.problems) == 2 and "task 7 (sample s7): age 300" in parsed.problems[0]
    with pytest.raises(SpecError, match="2 annotation value"):
        require_valid(parsed)


def test_promotion_needs_better_objective_and_no_task_worse_beyond_tolerance():
    old = {"age/mae": 10.0, "gender/accuracy": 0.80, "emotion/accuracy": 0.30}
    keys = sorted(old)
    better = decide(old, {"age/mae": 9.0, "gender/accuracy": 0.81, "emotion/accuracy": 0.31}, keys)
    assert better.promote and better.objective > 0
    one_worse = decide(old, {"age/mae": 8.0, "gender/accuracy": 0.70, "emotion/accuracy": 0.40}, keys)
    assert not one_worse.promote and any("gender/accuracy is worse" in r for r in one_worse.reasons)
    same = decide(old, dict(old), keys)
    assert not same.promote and "no better on the objective" in same.reasons[0]
    assert decide(old, {**old, "age/mae": 10.5}, keys, {"age/mae": 1.0}).promote is False  # within tolerance, but not better
    with pytest.raises(ActiveLearningError, match="missing"):
        decide(old, {"age/mae": 1.0}, keys)


def test_round_names_states_and_the_scripted_bad_annotator():
    assert round_branch("faces-al", 3) == "al-faces-al-round-3"
    for bad in ("", "Faces", "a b", "x" * 41, "../x"):
        with pytest.raises(ActiveLearningError):
            check_name(bad)
    state = RoundState("n", 1, "r", "u", "fam", "pool", "c", "faces", "random", 5, {"seed": 0}, unlabelled=("a",))
    assert RoundState.from_json(state.to_json()) == state and state.advance("sent", project_id=4).project_id == 4
    truth = {f"s{i}": {"age": float(i), "gender": i % 2, "emotion": i % 7} for i in range(6)}
    honest = scripted_labels(TASKS, truth)
    wrong = scripted_labels(TASKS, truth, corrupt=True)
    assert honest["s3"][0]["value"]["number"] == 3.0
    assert sum(wrong[s][0]["value"]["number"] != truth[s]["age"] for s in truth) >= 4
