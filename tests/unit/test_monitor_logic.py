"""The monitor's pure parts: slice shares, slice columns, the ground-truth bootstrap, atypicality, the predictions manifest."""

from __future__ import annotations

import numpy as np
import pytest

from flotilla.errors import MonitoringError
from flotilla.loop import PredictionSet, share_shift
from flotilla.loop.examples import atypicality
from flotilla.loop.groundtruth import ground_truth
from flotilla.loop.slices import age_band, gender_name, slice_columns
from flotilla.models import REFERENCE_TASKS

TASKS = list(REFERENCE_TASKS.values())


def test_age_bands_and_gender_names_match_the_data_report():
    assert age_band(np.array([0, 9.9, 10, 79.5, 80, 119, np.nan])).tolist() == ["0-9", "0-9", "10-19", "70-79", "80+", "80+", ""]
    assert gender_name(np.array([0, 1, np.nan, 7])).tolist() == ["female", "male", "", ""]


def test_share_shift_names_the_slice_that_grew_and_stays_quiet_on_the_same_mix():
    mix = ["a", "b", "c"], [0.4, 0.4, 0.2]
    rng = np.random.default_rng(0)
    ref = rng.choice(*mix[:1], 1000, p=mix[1])
    alarms = 0
    for _ in range(100):  # the same mix drawn again: Holm keeps any-slice alarms near 5 %
        quiet = share_shift({"x": rng.choice(mix[0], 1000, p=mix[1])}, {"x": rng.choice(mix[0], 1000, p=mix[1])})
        alarms += any(s.adjusted_p <= 0.05 for s in quiet)
    assert alarms <= 10 and {s.value for s in quiet} == {"a", "b", "c"}
    more_c = rng.choice(["a", "b", "c"], 1000, p=[0.3, 0.3, 0.4])
    loud = share_shift({"x": ref}, {"x": more_c})
    assert loud[0].value == "c" and loud[0].adjusted_p < 1e-6 and loud[0].change == pytest.approx(0.2, abs=0.05)
    with pytest.raises(MonitoringError, match="not in the reference"):
        share_shift({"x": ref}, {"y": ref})


def test_slices_use_labels_only_where_both_sides_are_fully_labelled():
    n = 6
    decisions = {"age": np.array([5, 15, 25, 35, 45, 85.0]), "gender": np.array([0, 1, 0, 1, 0, 1]), "emotion": np.zeros(n)}
    labelled = {"age": np.array([1, 11, 21, 31, 41, 81.0]), "gender": np.array([1, 1, 1, 0, 0, 0.0])}
    unlabelled = {"age": np.full(n, np.nan), "gender": np.full(n, np.nan)}
    both = slice_columns(TASKS, decisions, decisions, labelled, labelled)
    assert both.source == {"age band": "labels", "gender": "labels"}
    assert both.current["gender"].tolist() == ["male"] * 3 + ["female"] * 3
    mixed = slice_columns(TASKS, decisions, decisions, labelled, unlabelled)
    assert mixed.source == {"age band (predicted)": "predictions", "gender (predicted)": "predictions"}
    assert mixed.reference["age band (predicted)"].tolist() == ["0-9", "10-19", "20-29", "30-39", "40-49", "80+"]
    no_age = [t for t in TASKS if t.name != "age"]
    assert set(slice_columns(no_age, decisions, decisions, labelled, unlabelled).source) == {"gender (predicted)"}


def _gt(ref_correct: float, cur_correct: float, n_ref: int, n_cur: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    tasks = [REFERENCE_TASKS["gender"]]
    ref_y, cur_y = rng.integers(0, 2, n_ref).astype(float), rng.integers(0, 2, n_cur).astype(float)
    ref_p = np.where(rng.random(n_ref) < ref_correct, ref_y, 1 - ref_y)
    cur_p = np.where(rng.random(n_cur) < cur_correct, cur_y, 1 - cur_y)
    slices_r, slices_c = {"gender": gender_name(ref_y)}, {"gender": gender_name(cur_y)}
    return ground_truth(
        tasks, {"gender": ref_p}, {"gender": ref_y}, {"gender": cur_p}, {"gender": cur_y},
        reference_slices=slices_r, current_slices=slices_c, card_metrics={"gender/accuracy": ref_correct},
    )  # fmt: skip


def test_ground_truth_flags_a_real_drop_and_not_a_small_sample_or_an_equal_one():
    drop = _gt(0.9, 0.7, 500, 500)
    assert drop.degraded == ("gender",) and drop.tasks[0].degradation == pytest.approx(0.2, abs=0.05)
    assert drop.tasks[0].ci_low > 0 and drop.tasks[0].card == 0.9 and drop.tasks[0].metric == "accuracy"
    assert {(c.slice_column, c.slice_value) for c in drop.slices} == {("gender", "female"), ("gender", "male")}
    for n in (400, 15):  # no real change, a big or a small labelled sample: one-sided 5 %, about 5 of 100 flagged
        flagged = sum(bool(_gt(0.85, 0.85, 400, n, seed=s).degraded) for s in range(100))
        assert flagged <= 10, (n, flagged)
    small = _gt(0.9, 0.75, 500, 15).tasks[0]
    assert small.ci_high - small.ci_low > 3 * (drop.tasks[0].ci_high - drop.tasks[0].ci_low)  # few labels, wide interval


def test_ground_truth_without_any_label_is_an_error():
    tasks = [REFERENCE_TASKS["gender"]]
    nan = np.full(10, np.nan)
    with pytest.raises(MonitoringError, match="no labels"):
        ground_truth(tasks, {"gender": np.zeros(10)}, {"gender": np.zeros(10)}, {"gender": np.zeros(10)}, {"gender": nan},
                     reference_slices={}, current_slices={}, card_metrics={})  # fmt: skip


def test_atypicality_is_about_one_in_distribution_and_large_far_away():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(500, 8))
    same, far = rng.normal(size=(100, 8)), rng.normal(loc=4.0, size=(100, 8))
    assert 0.7 < np.median(atypicality(ref, same)) < 1.3
    assert np.median(atypicality(ref, far)) > 2 * np.median(atypicality(ref, same))


def test_the_predictions_manifest_round_trips():
    p = PredictionSet("lakefs://r/c/models/x/family/model.pt", "d" * 64, "r", "ds", "e" * 64, "", 3, "predictions/x/", ("a", "b"))
    back = PredictionSet.from_json(p.to_json(), ref="main")
    assert back.ref == "main" and back == PredictionSet(**{**p.__dict__, "ref": "main"})
    assert "ref" not in p.to_json()
