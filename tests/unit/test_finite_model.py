"""A NaN model is never published (issue 22, item 3), and what flotilla writes is always valid JSON."""

from __future__ import annotations

import io
import json

import pytest
import torch

from flotilla.errors import DivergedError
from flotilla.training.artifacts import dumps
from flotilla.training.finite import json_safe, nonfinite_metrics, nonfinite_weights, refuse_nonfinite


def _weights(poison: bool) -> bytes:
    state = {"backbone.w": torch.ones(3, 3), "head.b": torch.zeros(3), "bn.num_batches_tracked": torch.tensor(4)}
    if poison:
        state["head.b"][1] = float("nan")
    buf = io.BytesIO()
    torch.save({"config": {}, "state": state}, buf)
    return buf.getvalue()


def test_a_nan_metric_or_weight_is_refused_by_name_and_says_nothing_was_published():
    ok = {"val/age/mae": 3.2, "train/loss": 0.4}
    refuse_nonfinite("model 'fam'", "exp-x", 2, ok, _weights(False), 0.003)  # finite: no error
    with pytest.raises(DivergedError, match=r"val/age/mae = nan\).*nothing was published") as info:
        refuse_nonfinite("model 'fam'", "exp-x", 2, {**ok, "val/age/mae": float("nan")}, _weights(False), 0.5)
    assert "optim.lr (it was 0.5)" in str(info.value) and "exp-x" in str(info.value)
    with pytest.raises(DivergedError, match=r"1 weight tensor\(s\) \(e.g. head.b\)"):
        refuse_nonfinite("model 'fam'", "exp-x", 2, ok, _weights(True), 0.003)


def test_the_checks_see_infinities_and_leave_integers_alone():
    assert nonfinite_metrics({"a": float("inf"), "b": -float("inf"), "c": 1.0, "d": 3, "e": "x"}) == ["a", "b"]
    assert nonfinite_weights(_weights(True)) == ["head.b"] and nonfinite_weights(_weights(False)) == []


def test_what_flotilla_writes_is_valid_json_even_around_a_nan_epoch():
    history = [{"epoch": 0, "val/age/mae": 3.0}, {"epoch": 1, "val/age/mae": float("nan"), "train/loss": float("inf")}]
    text = dumps(history)
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)[1] == {"epoch": 1, "val/age/mae": None, "train/loss": None}
    assert json_safe((1.0, float("nan"))) == [1.0, None]
