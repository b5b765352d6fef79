"""Planning a label fix (pure: no hub): what changes, what is counted, and every bad request at once."""

import numpy as np
import pytest

from flotilla.data import layout, plan_label_fix
from flotilla.data.layout import Sample
from flotilla.errors import SpecError


def _labels():
    rows = [
        Sample("a", b"", "png", age=30.0, gender=0, emotion=3),
        Sample("b", b"", "png", age=41.5, gender=1, emotion=None),
        Sample("c", b"", "png", age=None, gender=1, emotion=6),
    ]
    return layout.labels_table(rows)


def test_a_fix_changes_only_what_it_names_and_counts_real_changes_per_column():
    labels = _labels()
    edit = plan_label_fix(
        labels,
        {
            "a": {"gender": "male", "age": 30},  # age is what it was: not a change
            "b": {"gender": 1, "emotion": "happy"},  # gender already 1
            "c": {"age": 7.5, "emotion": None},
        },
        "faces",
    )
    assert dict(edit.changed) == {"gender": 1, "emotion": 2, "age": 1} and edit.samples == 3
    t = edit.table
    assert t.schema == labels.schema and t.column("sample_id").to_pylist() == ["a", "b", "c"]
    assert t.column("gender").to_pylist() == [1, 1, 1]
    assert t.column("emotion").to_pylist() == [3, 3, None]
    assert t.column("age").to_pylist() == [30.0, 41.5, 7.5]
    assert t.column("split").to_pylist() == labels.column("split").to_pylist()
    same = plan_label_fix(labels, {"a": {"gender": np.int64(0), "age": 30.0}})  # numpy values read as numbers
    assert same.samples == 0 and dict(same.changed) == {} and same.table.equals(labels)


def test_every_problem_of_a_bad_fix_is_listed_at_once():
    with pytest.raises(SpecError) as err:
        plan_label_fix(
            _labels(),
            {
                "nope": {"gender": 0},
                "a": {"gendr": 1, "age": 500, "emotion": "bored"},
                "b": {"gender": True, "split": "train"},
                "c": 3,
            },
            "faces",
        )
    msg = err.value.message
    assert "label fix for dataset 'faces' is invalid (7 problem(s)); nothing was changed" in msg
    assert "1 sample id(s) not in the dataset: 'nope'" in msg
    assert "'gendr' is not a label column (did you mean 'gender'?)" in msg
    assert "age 500 is not a number in 0..120" in msg
    assert "emotion 'bored' is not one of 0 angry" in msg
    assert "gender True is a boolean" in msg and "'split' is not a label column" in msg
    assert "sample 'c': expected {column: value}, got int" in msg
    with pytest.raises(SpecError, match="no label changes given"):
        plan_label_fix(_labels(), {}, "faces")
