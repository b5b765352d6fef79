"""Pure sweep logic: the "good enough" target searcher wrapper and ASHA's rung layout.

The searcher under the wrapper is a real OptunaSearch (no Ray cluster is needed
to ask it for configurations); the end-to-end effect is exercised by bench/hpo.py.
"""

from __future__ import annotations

import optuna
import pytest
from ray.tune.search import ConcurrencyLimiter, SearchGenerator, Searcher
from ray.tune.search.optuna import OptunaSearch

from flotilla.errors import ConfigError
from flotilla.specs import parse_spec
from flotilla.tune.spec import SweepSpec
from flotilla.tune.sweep import DefineByRun, asha
from flotilla.tune.until import UntilTarget


def _spec(**over) -> SweepSpec:
    return parse_spec(SweepSpec, {
        "name": "s", "base": {"name": "fam", "data": {"repo": "r", "dataset": "d"}, "epochs": 9},
        "space": {"optim.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1}},
        "objective": {"metric": "val/age/mae", "mode": "min"}, **over,
    })


def _wrapped(mode: str = "max", target: float = 0.9) -> UntilTarget:
    spec = _spec()
    inner = OptunaSearch(space=DefineByRun(spec.space), metric="val/score", mode=mode,
                         sampler=optuna.samplers.RandomSampler(seed=0))
    return UntilTarget(inner, "val/score", mode, target)


def test_no_new_trials_once_a_report_reaches_the_target_but_running_ones_are_still_told():
    s = _wrapped()
    assert "optim.lr" in s.suggest("a") and "optim.lr" in s.suggest("b")
    s.on_trial_result("a", {"val/score": 0.5, "training_iteration": 1})
    assert isinstance(s.suggest("c"), dict)  # below the target: the search goes on
    s.on_trial_result("b", {"val/score": 0.91, "training_iteration": 2})
    assert s.reached_by == "b"
    assert s.suggest("d") == Searcher.FINISHED
    s.on_trial_complete("a", {"val/score": 0.6})  # still forwarded: Optuna records every finished trial
    states = [t.state for t in s.searcher._ot_study.trials]
    assert optuna.trial.TrialState.COMPLETE in states


def test_min_mode_and_errored_trials():
    s = _wrapped(mode="min", target=5.0)
    s.suggest("a")
    s.on_trial_complete("a", {"val/score": 1.0}, error=True)  # an error's last value does not count
    assert s.reached_by is None and isinstance(s.suggest("b"), dict)
    s.on_trial_result("b", {"val/score": 4.9, "training_iteration": 1})
    assert s.suggest("c") == Searcher.FINISHED


def test_the_reached_flag_survives_tunes_own_save_and_restore(tmp_path):
    """Saved and restored the way a Tune driver does it, through SearchGenerator and the concurrency limiter."""
    gen = SearchGenerator(ConcurrencyLimiter(_wrapped(), max_concurrent=2))
    gen.searcher.suggest("a")
    gen.searcher.on_trial_result("a", {"val/score": 0.95, "training_iteration": 1})
    gen.save_to_dir(str(tmp_path), session_str="s")
    fresh = SearchGenerator(ConcurrencyLimiter(_wrapped(), max_concurrent=2))
    fresh.restore_from_dir(str(tmp_path))
    until = fresh.searcher.searcher
    assert until.reached_by == "a" and until.suggest("z") == Searcher.FINISHED


def test_asha_rungs_all_lie_before_the_last_epoch():
    for epochs, rf in [(9, 3), (4, 2), (5, 3), (27, 3), (2, 2)]:
        sched = asha(_spec(scheduler={"type": "asha", "grace_period": 1, "reduction_factor": rf}), epochs)
        rungs = [m for m, _ in sched._brackets[0]._rungs]
        assert rungs and max(rungs) < epochs, (epochs, rf, rungs)
        assert 1 in rungs


def test_a_grace_period_as_long_as_training_is_refused():
    with pytest.raises(ConfigError, match="grace_period"):
        asha(_spec(scheduler={"type": "asha", "grace_period": 4}), 4)


def test_every_mistake_a_sweep_can_be_checked_for_is_reported_before_any_trial_runs():
    from flotilla.errors import SpecError

    spec = _spec(
        space={"optim.lrr": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
               "weighting": {"type": "choice", "values": ["fixed", "uncertanty"]},
               "model.width": {"type": "int", "low": 4, "high": 16}},
        objective={"weights": {"val/age/mea": -0.02, "val/gender/accuracy": 1.0}, "mode": "max"},
    )
    with pytest.raises(SpecError) as err:
        spec.check()
    text = "\n".join(err.value.problems)
    assert "optim.lrr" in text and "did you mean 'lr'" in text
    assert "uncertanty" in text
    assert "val/age/mea" in text and "val/age/mae" in text
    assert "model.width" not in text and "val/gender/accuracy" not in text
    assert len(err.value.problems) == 3


def test_a_valid_sweep_checks_clean_and_returns_its_family():
    family = _spec(objective={"metrics": {"val/age/mae": "min", "val/emotion/macro_f1": "max"}},
                   scheduler={"type": "none"}).check()
    assert family.epochs == 9
