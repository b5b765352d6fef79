"""Pure sweep logic: the "good enough" target searcher wrapper, stopped trials as Optuna prunes, ASHA's rungs.

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
from flotilla.tune.report import missing_plots_note
from flotilla.tune.searcher import StoppedAsPrunedOptunaSearch
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


def _searcher(full: int = 9) -> StoppedAsPrunedOptunaSearch:
    return StoppedAsPrunedOptunaSearch(space=DefineByRun(_spec().space), metric="val/score", mode="max",
                                       sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=2), full_iterations=full)


def _run(s, trial_id: str, scores: list[float], error: bool = False, stopped: bool = False) -> None:
    """Drive the searcher as Tune's controller does: a report that makes the scheduler stop the
    trial goes to on_trial_complete only, not to on_trial_result."""
    s.suggest(trial_id)
    for i, v in enumerate(scores[:-1] if stopped else scores, 1):
        s.on_trial_result(trial_id, {"val/score": v, "training_iteration": i})
    s.on_trial_complete(trial_id, {"val/score": scores[-1], "training_iteration": len(scores)}, error=error)


def test_a_trial_stopped_before_its_last_epoch_is_pruned_in_the_optuna_study_not_complete():
    s = _searcher(full=3)
    _run(s, "full", [0.2, 0.5, 0.7])
    _run(s, "stopped", [0.1], stopped=True)
    _run(s, "rung2", [0.3, 0.6], stopped=True)
    _run(s, "broken", [0.4, 0.4], error=True)
    by = {t.number: t for t in s._ot_study.trials}
    full, stopped, rung2, broken = (by[n] for n in range(4))
    assert full.state == optuna.trial.TrialState.COMPLETE and full.value == 0.7
    assert stopped.state == optuna.trial.TrialState.PRUNED and stopped.value == 0.1  # the report that stopped it
    assert stopped.intermediate_values == {1: 0.1}
    assert rung2.state == optuna.trial.TrialState.PRUNED and rung2.intermediate_values == {1: 0.3, 2: 0.6}
    assert broken.state == optuna.trial.TrialState.FAIL
    assert s._ot_study.best_trial.number == 0  # a half-trained trial can never be the study's best
    s.on_trial_complete("stopped", {"val/score": 0.1, "training_iteration": 1})  # a repeat is ignored, not re-told
    assert isinstance(s.suggest("next"), dict)  # TPE samples from a study holding pruned trials


def test_the_full_length_survives_tunes_save_and_restore(tmp_path):
    s = _searcher(full=5)
    s.save(str(tmp_path / "s.pkl"))
    fresh = _searcher(full=1)
    fresh.restore(str(tmp_path / "s.pkl"))
    assert fresh.full_iterations == 5


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


def test_a_sweep_without_history_plots_says_it_is_because_asha_stopped_its_trials():
    note = missing_plots_note({"curves": "c.png"}, ["completed", "stopped", "stopped", "stopped"])
    assert note and "ASHA stopped 3 of 4" in note and "curves" in note
    assert missing_plots_note({"history": "h.png"}, ["completed", "stopped"]) is None
    assert missing_plots_note({}, ["completed", "completed", "stopped"]) is None  # enough finished: not ASHA's doing
    assert missing_plots_note({}, ["errored"]) is None
