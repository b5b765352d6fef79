"""A separate-strategy family's sweep trial: one result per epoch for all its models, each model's
checkpoint chosen by its own terms of the objective, and what the trial reserves and the spec allows."""

from __future__ import annotations

import threading

import pytest

from flotilla.errors import SpecError
from flotilla.specs import FamilySpec, parse_spec
from flotilla.training.inprocess import runs_in_process
from flotilla.tune import SweepSpec
from flotilla.tune.separate import EpochGather, merge_epoch, model_rank
from flotilla.tune.spec import Objective
from flotilla.tune.trial import TrialContext, combined_score, trial_resources

WEIGHTS = {"val/age/mae": -0.02, "val/gender/accuracy": 1.0}
FAMILY = {
    "name": "f",
    "data": {"repo": "rep", "dataset": "d"},
    "strategy": "separate",
    "tasks": ["age", "gender"],
    "epochs": 3,
    "scaling": {"workers": 1, "cpus_per_worker": 0.5},
}


def _epoch(task: str, epoch: int, value: float) -> dict:
    metric = {"age": "mae", "gender": "accuracy"}[task]
    return {
        "epoch": epoch,
        f"val/{task}/{metric}": value,
        f"train/{task}_loss": value / 10,
        "train/loss": value / 10,
        "train/samples_per_s": 100.0,
        "epoch_s": value,
        "worker_pid": 7,
    }


def test_an_epoch_of_every_model_is_one_result_the_objective_combines() -> None:
    merged = merge_epoch({"age": _epoch("age", 1, 5.0), "gender": _epoch("gender", 1, 0.8)})
    assert merged["epoch"] == 1
    assert merged["val/age/mae"] == 5.0 and merged["val/gender/accuracy"] == 0.8
    assert merged["train/age_loss"] == 0.5 and merged["train/gender_loss"] == pytest.approx(0.08)
    assert merged["train/loss"] == pytest.approx(0.58) and merged["train/samples_per_s"] == 200.0
    assert merged["epoch_s"] == 5.0  # side by side: the slower one
    assert merged["age/worker_pid"] == merged["gender/worker_pid"] == 7 and "worker_pid" not in merged
    assert combined_score(merged, WEIGHTS) == pytest.approx(-0.02 * 5.0 + 0.8)


def test_the_gather_reports_each_epoch_once_when_every_model_has_it_and_passes_tunes_stop_on() -> None:
    told: list[dict] = []
    gather = EpochGather(["age", "gender"], told.append)
    age, gender = gather.reporter("age"), gather.reporter("gender")
    age(_epoch("age", 0, 6.0))
    age(_epoch("age", 1, 5.0))  # one model ahead of the other: nothing yet
    assert told == []
    gender(_epoch("gender", 0, 0.7))
    gender(_epoch("gender", 1, 0.8))
    assert [(r["epoch"], r["val/age/mae"], r["val/gender/accuracy"]) for r in told] == [(0, 6.0, 0.7), (1, 5.0, 0.8)]
    age(_epoch("age", 1, 5.0))  # a resumed model's re-report of an epoch already told
    assert len(told) == 2

    def stop(_: dict) -> None:
        raise SystemExit("Tune stopped the trial")

    stopped = EpochGather(["age", "gender"], stop)
    stopped.reporter("age")(_epoch("age", 0, 6.0))
    with pytest.raises(SystemExit):
        stopped.reporter("gender")(_epoch("gender", 0, 0.7))
    with pytest.raises(SystemExit):  # the other model ends at its next report
        stopped.reporter("age")(_epoch("age", 1, 5.0))
    failed = EpochGather(["age", "gender"], told.append)
    failed.stop(RuntimeError("gender's model failed"))
    with pytest.raises(SystemExit):
        failed.reporter("age")(_epoch("age", 0, 6.0))


def test_the_gather_reports_in_order_from_concurrent_models() -> None:
    told: list[int] = []
    gather = EpochGather(["age", "gender"], lambda m: told.append(m["epoch"]))

    def train(task: str) -> None:
        for e in range(50):
            gather.reporter(task)(_epoch(task, e, 1.0))

    threads = [threading.Thread(target=train, args=(t,)) for t in ("age", "gender")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert told == list(range(50))


def test_each_model_publishes_its_best_epoch_by_its_own_terms_of_the_objective() -> None:
    weighted = parse_spec(Objective, {"weights": WEIGHTS})
    score, mode = model_rank(weighted, "age")
    assert mode == "max" and score({"val/age/mae": 5.0}) == pytest.approx(-0.1) and score({}) is None
    score, _ = model_rank(weighted, "gender")
    assert score({"val/gender/accuracy": 0.8, "val/age/mae": 5.0}) == pytest.approx(0.8)  # its own terms only
    assert model_rank(weighted, "emotion") is None  # not weighed: its task's primary metric, as a standalone run
    single = parse_spec(Objective, {"metric": "val/age/mae", "mode": "min"})
    score, mode = model_rank(single, "age")
    assert mode == "min" and score({"val/age/mae": 4.0}) == 4.0
    assert model_rank(single, "gender") is None
    pareto = parse_spec(Objective, {"metrics": {"val/age/mae": "min", "val/gender/accuracy": "max"}})
    assert model_rank(pareto, "age") == "last"


def test_a_separate_trial_reserves_every_models_worker_and_shares_one_gpu() -> None:
    objective = parse_spec(Objective, {"weights": WEIGHTS})
    ctx = TrialContext("s", FAMILY, {"main": "c0ffee"}, None, objective)
    (bundle,) = trial_resources({}, ctx, 0.25).bundles
    assert bundle == {"CPU": 0.25 + 2 * 0.5}
    gpu = {**FAMILY, "scaling": {"workers": 1, "cpus_per_worker": 1, "use_gpu": True}}
    (bundle,) = trial_resources({}, TrialContext("s", gpu, {"main": "c0ffee"}, None, objective), 0.25).bundles
    assert bundle == {"CPU": 2.25, "GPU": 1.0}


def _sweep(family: dict, space: dict | None = None) -> SweepSpec:
    spec = {
        "name": "sep",
        "base": family,
        "space": space or {"optim.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
        "objective": {"weights": WEIGHTS},
        "scheduler": {"type": "none"},
    }
    return parse_spec(SweepSpec, spec)


def test_a_separate_family_can_be_swept_where_its_models_train_in_the_trials_process() -> None:
    family = _sweep(FAMILY).check()
    assert family.strategy == "separate"
    assert runs_in_process(parse_spec(FamilySpec, FAMILY))  # the spec's condition is the in-process path's
    for bad, space in (
        ({**FAMILY, "scaling": {"workers": 2}}, None),
        ({**FAMILY, "backend": "deepspeed"}, None),
        (FAMILY, {"scaling.workers": {"type": "choice", "values": [1, 2]}}),
    ):
        with pytest.raises(SpecError) as err:
            _sweep(bad, space).check()
        assert any(p.startswith("strategy: separate: a trial trains each task's model") for p in err.value.problems)
