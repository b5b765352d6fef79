"""The drift tests: exact reference values, false alarms near alpha on seeded null repeats, power on a real shift."""

import math

import numpy as np
import pytest

from flotilla.errors import MonitoringError
from flotilla.loop import (
    chi2_test,
    holm,
    ks_test,
    mmd_test,
    prediction_shift,
    slice_shift,
    verdict,
)

REPEATS = 60
ALPHA = 0.05
# Under the null, false alarms in 60 repeats are Binomial(60, 0.05): P(count > 8) ≈ 0.3 %, so at most 8
# (13 %) is a bound a calibrated test passes with fixed seeds, and a test that alarms on everything fails.
MAX_FALSE_ALARMS = 8


def test_chi2_test_on_a_hand_computed_table():
    r = chi2_test([10, 20, 0], [20, 10, 0])  # expected 15 in every cell; the empty category is dropped
    assert r.statistic == pytest.approx(4 * 25 / 15)
    assert r.p_value == pytest.approx(math.erfc(math.sqrt(r.statistic / 2)))
    assert (r.n_ref, r.n_cur, r.method) == (30, 30, "chi2")


def test_ks_statistic_on_a_hand_computed_case():
    r = ks_test([1.0, 2.0, 3.0, 4.0], [3.5, 5.0, 6.0, 7.0, 8.0])
    assert r.statistic == pytest.approx(0.8)  # widest gap at 4.0: F_ref = 1, F_cur = 1/5
    assert 0 < r.p_value < 0.1


def _false_alarms(test, draw) -> int:
    return sum(test(*draw(np.random.default_rng(seed)), seed) <= ALPHA for seed in range(REPEATS))


def test_mmd_false_alarm_rate_stays_near_alpha_and_a_mean_shift_is_found():
    def draw(rng, shift=0.0):
        return rng.normal(size=(150, 8)), rng.normal(size=(120, 8)) + shift

    mmd = lambda x, y, seed: mmd_test(x, y, permutations=100, seed=seed).p_value
    alarms = _false_alarms(mmd, draw)
    assert alarms <= MAX_FALSE_ALARMS, f"{alarms} false alarms in {REPEATS}"
    found = sum(mmd(*draw(np.random.default_rng(s), 0.4), s) <= ALPHA for s in range(20))
    assert found >= 19


def test_ks_and_chi2_false_alarm_rates_stay_near_alpha():
    ks = lambda x, y, seed: ks_test(x, y).p_value
    assert _false_alarms(ks, lambda rng: (rng.normal(size=300), rng.normal(size=200))) <= MAX_FALSE_ALARMS
    probs = np.array([0.5, 0.3, 0.15, 0.05])

    def classes(rng):
        return rng.choice(4, size=400, p=probs), rng.choice(4, size=250, p=probs)

    chi = lambda x, y, seed: prediction_shift(x, y, "multiclass").p_value
    assert _false_alarms(chi, classes) <= MAX_FALSE_ALARMS


def test_prediction_shift_per_kind():
    rng = np.random.default_rng(0)
    ages = rng.normal(40, 10, size=500)
    assert prediction_shift(ages, ages[:300] + 5, "regression").p_value < 1e-4
    male = rng.uniform(size=500)
    assert prediction_shift(male, male**3, "binary").p_value < 1e-4  # fewer decisions above 0.5
    logits = rng.normal(size=(500, 7))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    same = prediction_shift(probs[:250], probs[250:], "multiclass")
    assert same.method == "chi2" and same.p_value > ALPHA
    skewed = probs[250:] * np.array([5, 1, 1, 1, 1, 1, 1])
    assert prediction_shift(probs[:250], skewed, "multiclass").p_value < 1e-4
    with pytest.raises(MonitoringError, match="unknown task kind"):
        prediction_shift(ages, ages, "ranking")  # type: ignore[arg-type]


def test_holm_adjusts_step_down_and_stays_monotone():
    assert holm([0.01, 0.04, 0.03, 0.2]).tolist() == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert holm([0.5, 0.6]).tolist() == pytest.approx([1.0, 1.0])
    assert len(holm([])) == 0


def test_slice_shift_names_the_shifted_slice_and_corrects_over_slices():
    rng = np.random.default_rng(1)
    bands = np.array(["young", "middle", "old"])
    ref_band, cur_band = bands[rng.integers(0, 3, 900)], bands[rng.integers(0, 3, 900)]
    ref_gender, cur_gender = rng.integers(0, 2, 900), rng.integers(0, 2, 900)
    ref = rng.normal(size=900) + (ref_band == "old") * 3.0  # "old" differs from the rest in both windows
    cur = rng.normal(size=900) + (cur_band == "old") * 3.0 + (cur_band == "middle") * 0.6
    tiny = np.where(np.arange(900) < 10, "rare", "common")
    out = slice_shift(
        ref,
        cur,
        {"band": ref_band, "gender": ref_gender, "tiny": tiny},
        {"band": cur_band, "gender": cur_gender, "tiny": tiny},
        test=lambda x, y: ks_test(x, y),
    )
    assert (out[0].column, out[0].value) == ("band", "middle") and out[0].adjusted_p < ALPHA
    assert "rare" not in {s.value for s in out}  # 10 samples: under the minimum slice size
    assert all(s.adjusted_p >= s.result.p_value for s in out)
    flagged = {(s.column, s.value) for s in out if s.adjusted_p <= ALPHA}
    assert ("band", "young") not in flagged and ("band", "old") not in flagged  # unchanged slices stay quiet
    with pytest.raises(MonitoringError, match="not in the reference"):
        slice_shift(ref, cur, {}, {"band": cur_band}, test=lambda x, y: ks_test(x, y))


def test_verdict_combines_under_holm_and_serialises():
    rng = np.random.default_rng(2)
    x = rng.normal(size=400)
    calm = verdict({"a": ks_test(x[:200], x[200:]), "b": ks_test(x[:100], x[100:])})
    assert not calm.drifted and all(not t.rejected for t in calm.tests)
    # 0.03 alone would reject at 0.05; among two tests Holm needs ≤ 0.025 from the smallest
    borderline = verdict({"a": _result(0.03), "b": _result(0.5)})
    assert not borderline.drifted and borderline.tests[0].adjusted_p == pytest.approx(0.06)
    alarm = verdict({"a": _result(0.001), "b": _result(0.5)}, alpha=0.01)
    d = alarm.to_dict()
    assert alarm.drifted and d["drifted"] is True and d["alpha"] == 0.01 and d["tests"][0]["rejected"] is True
    with pytest.raises(MonitoringError, match="alpha"):
        verdict({"a": _result(0.5)}, alpha=1.5)


def _result(p):
    from flotilla.loop import TwoSampleResult

    return TwoSampleResult("ks", 0.0, p, 100, 100)


def test_bad_input_is_a_clear_error():
    with pytest.raises(MonitoringError, match="at least 2"):
        mmd_test(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(MonitoringError, match="features"):
        mmd_test(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(MonitoringError, match="NaN"):
        ks_test([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(MonitoringError, match="empty"):
        chi2_test([0, 0], [1, 2])


def test_mmd_subsamples_large_inputs_to_the_cap():
    rng = np.random.default_rng(3)
    r = mmd_test(rng.normal(size=(700, 4)), rng.normal(size=(90, 4)), max_samples=300, permutations=20)
    assert (r.n_ref, r.n_cur) == (300, 90)
    assert 1 / 21 <= r.p_value <= 1
