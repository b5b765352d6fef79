"""The review loop's pure parts: which flagged rows go, the Label Studio config and tasks, decisions back to changes."""

import xml.etree.ElementTree as ET

import pyarrow as pa
import pytest

from flotilla.audit import flagged_rows, scripted_review
from flotilla.audit.reviewconfig import decision_items, label_config, parse_review, task_payload, to_changes
from flotilla.audit.reviewing import plan_review_changes
from flotilla.audit.reviewrows import review_tasks
from flotilla.data import layout
from flotilla.data.findings import FINDINGS_COLUMNS, task_columns
from flotilla.data.removal import plan_removal
from flotilla.errors import AuditError, SpecError

TASKS = ("age", "gender", "emotion")
HAPPY, SAD = layout.EMOTIONS.index("happy"), layout.EMOTIONS.index("sad")


def findings(rows: list[dict]) -> pa.Table:
    """A findings table exactly as :mod:`flotilla.data.findings` lays it out, from a few fields per row."""
    cols: dict[str, list] = {c: [] for c in FINDINGS_COLUMNS}
    for t in TASKS:
        cols.update({c: [] for c in task_columns(t)})
    for r in rows:
        issues = r.get("issues", [])
        cols["sample_id"].append(r["id"])
        cols["split"].append("train")
        cols["outlier"].append("outlier" in issues)
        cols["outlier_score"].append(0.05 if "outlier" in issues else 0.9)
        cols["near_duplicate"].append("near_duplicate" in issues)
        cols["near_duplicate_score"].append(0.01 if "near_duplicate" in issues else 0.9)
        cols["near_duplicate_of"].append(r.get("dup"))
        cols["exact_duplicate_of"].append(r.get("dup") if "exact_duplicate" in issues else None)
        cols["issues"].append(issues)
        cols["worst_score"].append(r.get("score", 1.0))
        for t in TASKS:
            flag, score, given, suggested = task_columns(t)
            cols[flag].append(f"label:{t}" in issues)
            cols[score].append(r.get("score", 1.0) if f"label:{t}" in issues else 0.9)
            cols[given].append(r.get("given", {}).get(t, {"age": 30.0}.get(t, 0.0)))
            cols[suggested].append(r.get("suggested", {}).get(t, {"age": 30.0}.get(t, 0.0)))
    types = {"outlier_score": pa.float32(), "near_duplicate_score": pa.float32(), "worst_score": pa.float32()}
    types |= {c: pa.float32() for t in TASKS for c in task_columns(t)[1:2]}
    types |= {c: pa.float64() for t in TASKS for c in task_columns(t)[2:]}
    types |= {"issues": pa.list_(pa.string()), "near_duplicate_of": pa.string(), "exact_duplicate_of": pa.string()}
    return pa.table({c: pa.array(v, types.get(c)) for c, v in cols.items()})


ROWS = [
    {"id": "s-flip", "issues": ["label:emotion"], "score": 0.02, "given": {"emotion": HAPPY}, "suggested": {"emotion": SAD}},
    {"id": "s-fine", "issues": ["label:emotion"], "score": 0.2, "given": {"emotion": HAPPY}, "suggested": {"emotion": SAD}},
    {"id": "s-dup", "issues": ["exact_duplicate", "near_duplicate"], "score": 0.0, "dup": "s-orig"},
    {"id": "s-odd", "issues": ["outlier"], "score": 0.05},
    {"id": "s-ok"},
]


def test_flagged_rows_worst_first_filtered_by_issue_and_limited():
    table = findings(ROWS)
    assert [r.sample_id for r in flagged_rows(table, TASKS)] == ["s-dup", "s-flip", "s-odd", "s-fine"]
    assert [r.sample_id for r in flagged_rows(table, TASKS, issues=["label"])] == ["s-flip", "s-fine"]
    assert [r.sample_id for r in flagged_rows(table, TASKS, issues=["exact_duplicate", "outlier"], limit=1)] == ["s-dup"]
    flip = flagged_rows(table, TASKS, issues=["label:emotion"])[0]
    assert flip.label_flags == ("emotion",) and flip.suggested == {"emotion": SAD} and flip.given["emotion"] == HAPPY
    assert flagged_rows(table, TASKS, issues=["outlier"])[0].suggested == {}  # only flagged tasks get a suggestion
    with pytest.raises(AuditError, match="unknown issue"):
        flagged_rows(table, TASKS, issues=["labels"])


def test_label_config_has_the_decision_reasons_and_a_control_per_task():
    root = ET.fromstring(label_config(review_tasks(TASKS)))
    names = {e.get("name"): e for e in root.iter() if e.get("name")}
    assert [c.get("value") for c in names["decision"]] == ["keep", "accept", "set", "remove"]
    assert [c.get("value") for c in names["reason"]] == ["not a face", "duplicate", "other"]
    assert [c.get("value") for c in names["set_emotion"]] == list(layout.EMOTIONS)
    assert names["set_age"].tag == "Number" and names["set_age"].get("max") == "120"
    assert {"flags", "current", "suggestion"} <= names.keys()


def test_a_task_shows_current_and_suggested_labels_and_pre_annotates_the_suggestion():
    tasks = review_tasks(TASKS)
    by = {r.sample_id: r for r in flagged_rows(findings(ROWS), TASKS)}
    flip = task_payload(by["s-flip"], tasks, "s3://r/b/i.png", model_version="audit-x")
    assert "emotion: happy" in flip["data"]["current"] and flip["data"]["suggestion"] == "model suggests: emotion: sad"
    [pred] = flip["predictions"]
    assert pred["score"] == pytest.approx(0.02) and pred["model_version"] == "audit-x"
    assert {i["from_name"]: i["value"] for i in pred["result"]} == {
        "decision": {"choices": ["accept"]},
        "set_emotion": {"choices": ["sad"]},
    }
    dup = task_payload(by["s-dup"], tasks, "u", model_version="audit-x")["predictions"][0]["result"]
    assert [i["value"]["choices"] for i in dup] == [["remove"], ["duplicate"]] and "s-orig" in by["s-dup"].duplicate_of
    assert "predictions" not in task_payload(by["s-odd"], tasks, "u", model_version="audit-x")


def _export(results: dict, *, extra: list | None = None) -> list[dict]:
    return [
        {"id": i, "data": {"sample_id": sid}, "annotations": [{"id": 10 + i, "result": res, "completed_by": 1}]}
        for i, (sid, res) in enumerate(results.items())
    ] + (extra or [])


def test_decisions_come_back_as_relabels_removals_and_keeps():
    tasks = review_tasks(TASKS)
    rows = {r.sample_id: r for r in flagged_rows(findings(ROWS), TASKS)}
    emotion = next(t for t in tasks if t.column == "emotion")
    age = next(t for t in tasks if t.column == "age")
    exported = _export(
        {
            "s-flip": decision_items("accept"),
            "s-fine": decision_items("keep"),
            "s-dup": decision_items("remove", reason="duplicate"),
            "s-odd": decision_items("set", values={emotion: 0, age: 61.0}),
        },
        extra=[
            {"id": 99, "data": {"sample_id": "not-sent"}, "annotations": [{"id": 1, "result": decision_items("keep")}]},
            {"id": 98, "data": {"sample_id": "s-ok"}, "annotations": []},
        ],
    )
    parsed = parse_review(tasks, rows, exported)
    assert parsed.problems == ()
    changes = to_changes(parsed.decisions)
    assert changes.relabels == {"s-flip": {"emotion": SAD}, "s-odd": {"emotion": 0.0, "age": 61.0}}
    assert changes.removals == {"s-dup": "duplicate"} and changes.kept == ("s-fine",) and changes.reviewers == ("user 1",)


def test_every_bad_decision_is_named_and_a_skipped_or_older_annotation_does_not_count():
    tasks = review_tasks(TASKS)
    rows = {r.sample_id: r for r in flagged_rows(findings(ROWS), TASKS)}
    exported = _export(
        {
            "s-dup": decision_items("remove"),  # no reason
            "s-odd": decision_items("accept"),  # nothing was suggested
            "s-fine": decision_items("set"),  # no value
            "s-flip": [{"from_name": "set_age", "value": {"number": 300}}, *decision_items("set")],
        }
    )
    problems = parse_review(tasks, rows, exported).problems
    assert len(problems) == 4 and any("needs a reason" in p for p in problems) and any("300" in p for p in problems)
    newest = [
        {"id": 1, "created_at": "2026-01-01", "result": decision_items("remove", reason="other")},
        {"id": 2, "created_at": "2026-01-02", "result": decision_items("keep")},
        {"id": 3, "created_at": "2026-01-03", "result": decision_items("accept"), "was_cancelled": True},
    ]
    parsed = parse_review(tasks, rows, [{"id": 5, "data": {"sample_id": "s-flip"}, "annotations": newest}])
    assert parsed.decisions["s-flip"].action == "keep"


def test_the_scripted_reviewer_accepts_right_suggestions_keeps_right_labels_removes_what_it_is_told():
    tasks = review_tasks(TASKS)
    rows = flagged_rows(findings(ROWS), TASKS)
    truth = {
        "s-flip": {"age": 30.0, "gender": 0.0, "emotion": float(SAD)},  # the suggestion is right
        "s-fine": {"age": 30.0, "gender": 0.0, "emotion": float(HAPPY)},  # the label was right
        "s-odd": {"age": 70.0, "gender": 0.0, "emotion": 0.0},  # neither: set
    }
    results = scripted_review(rows, tasks, truth, {"s-dup": "duplicate"})
    parsed = parse_review(tasks, {r.sample_id: r for r in rows}, _export(results))
    changes = to_changes(parsed.decisions)
    assert {s: d.action for s, d in parsed.decisions.items()} == {
        "s-dup": "remove",
        "s-flip": "accept",
        "s-odd": "set",
        "s-fine": "keep",
    }
    assert changes.relabels == {"s-flip": {"emotion": SAD}, "s-odd": {"age": 70.0}} and changes.removals == {"s-dup": "duplicate"}


def _labels(ids):
    return pa.table(
        {"sample_id": ids, "split": ["train"] * len(ids), "age": [30.0] * len(ids), "gender": [0] * len(ids),
         "emotion": [HAPPY] * len(ids)},
        schema=layout.LABEL_SCHEMA,
    )  # fmt: skip


def test_a_removal_is_checked_and_wins_over_a_relabel_of_the_same_sample():
    labels = _labels(["a", "b", "c"])
    with pytest.raises(SpecError) as err:
        plan_removal(labels, {"zz": "duplicate", "a": " "}, "d")
    assert any("'zz'" in p for p in err.value.problems) and any("needs a reason" in p for p in err.value.problems)
    changes = to_changes(
        parse_review(
            review_tasks(TASKS),
            {r.sample_id: r for r in flagged_rows(findings([{"id": i, "issues": ["outlier"]} for i in "abc"]), TASKS)},
            _export({"a": decision_items("remove", reason="not a face"), "b": decision_items("set", values={
                review_tasks(("emotion",))[0]: SAD}), "c": decision_items("keep")}),
        ).decisions
    )  # fmt: skip
    edit, removal = plan_review_changes(labels, changes, "d")
    assert (
        removal is not None
        and removal.rows.column("sample_id").to_pylist() == ["a"]
        and removal.per_reason() == {"not a face": 1}
    )
    assert edit is not None and edit.touched == {"b"} and edit.changed == {"emotion": 1}
    assert plan_review_changes(labels, to_changes({}), "d") == (None, None)


def test_the_review_command_takes_one_action_at_a_time():
    from typer.testing import CliRunner

    from flotilla.cli.commands import app

    two = CliRunner().invoke(app, ["data", "review", "a1", "--send", "--receive"])
    assert two.exit_code == 1 and "one of --send" in two.output
    assert "--annotate" in CliRunner().invoke(app, ["data", "review", "--help"]).output
