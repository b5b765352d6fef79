"""Tune's saved state, written by Ray's own classes, as :mod:`flotilla.tune.tune_state` reads and edits it.

These fail loudly when a Ray release changes what the module relies on (file names, the keys of
the experiment state and of the searcher wrappers' states, the restored tuner's run config): read
the module's docstring before moving to another Ray version. No Ray cluster is needed: the files
are written by Tune's own ``save_to_dir`` code and read back by Tune's own restore code.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import ray
import ray.cloudpickle as cloudpickle
from ray import tune
from ray.tune.callback import CallbackList
from ray.tune.execution.placement_groups import PlacementGroupFactory
from ray.tune.execution.tune_controller import TuneController
from ray.tune.experiment.trial import Trial
from ray.tune.search import ConcurrencyLimiter, Searcher, SearchGenerator

from flotilla.errors import ConfigError
from flotilla.specs import parse_spec
from flotilla.tune import tune_state
from flotilla.tune.journal import Reported
from flotilla.tune.searcher import StoppedAsPrunedOptunaSearch
from flotilla.tune.space import DefineByRun
from flotilla.tune.spec import SweepSpec
from flotilla.tune.until import UntilTarget

SESSION = "2026-11-27_15-15-13"


def _space() -> DefineByRun:
    spec = parse_spec(
        SweepSpec,
        {
            "name": "s",
            "base": {"name": "fam", "data": {"repo": "rep", "dataset": "d"}, "epochs": 3},
            "space": {"optim.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1}},
            "objective": {"metric": "val/age/mae", "mode": "min"},
        },
    )
    return DefineByRun(spec.space)


def _searchers(concurrency: int = 1, target: float = 0.9) -> SearchGenerator:
    """The searcher stack of a sweep as Tune holds it: its ConcurrencyLimiter (budget.concurrency) around
    our UntilTarget (budget.target) around our Optuna searcher."""
    optuna_search = StoppedAsPrunedOptunaSearch(
        space=_space(), metric="val/score", mode="max", full_iterations=3, sampler=optuna.samplers.RandomSampler(seed=0)
    )
    return SearchGenerator(ConcurrencyLimiter(UntilTarget(optuna_search, "val/score", "max", target), max_concurrent=concurrency))


def _trial(trial_id: str, status: str, last_result: dict) -> Trial:
    trial = Trial(
        "trainable",
        config={"optim.lr": 0.01},
        trial_id=trial_id,
        stub=True,
        placement_group_factory=PlacementGroupFactory([{"CPU": 0.25}]),
    )
    trial.create_placement_group_factory()  # as Tune does when it adds a trial
    trial.set_status(status)
    trial.run_metadata.last_result = last_result
    return trial


def _save(exp: Path, trials: list[Trial], searchers: SearchGenerator) -> None:
    """Tune's own TuneController.save_to_dir, on the controller state it reads (no cluster needed)."""
    controller = SimpleNamespace(
        _get_trial_checkpoints=lambda: {t.trial_id: t.get_json_state() for t in trials},
        _start_time=time.time(),
        _storage=SimpleNamespace(experiment_driver_staging_path=str(exp)),
        experiment_state_file_name=TuneController.CKPT_FILE_TMPL.format(SESSION),
        _search_alg=searchers,
        _callbacks=CallbackList([]),
        _session_str=SESSION,
    )
    TuneController.save_to_dir(controller)


def test_the_file_names_and_the_ray_version_are_the_ones_the_module_was_written_for():
    assert ray.__version__.startswith(tune_state.RAY_VERSION + "."), (
        f"Ray {ray.__version__}: check flotilla.tune.tune_state against it, then update RAY_VERSION"
    )
    assert TuneController.CKPT_FILE_TMPL.format("*") == tune_state.EXPERIMENT_STATES
    assert SearchGenerator.CKPT_FILE_TMPL.format("*") == tune_state.SEARCHER_STATES
    assert (Trial.TERMINATED, Trial.ERROR) == (tune_state.TERMINATED, tune_state.ERROR)


def test_a_finished_trial_saved_as_running_is_restored_terminated_with_the_journals_last_report(tmp_path):
    done = _trial("done0001", Trial.RUNNING, {"epochs_done": 2, "val/score": 0.5, "trial_id": "done0001"})
    running = _trial("runn0002", Trial.RUNNING, {"epochs_done": 1, "val/score": 0.1})
    failed = _trial("fail0003", Trial.ERROR, {"epochs_done": 1})
    _save(tmp_path, [done, running, failed], _searchers())
    [path] = tmp_path.glob(tune_state.EXPERIMENT_STATES)
    pairs = json.loads(path.read_text())["trial_data"]  # what saved_trial_ids and mark_finished read
    assert {json.loads(p[0])["trial_id"]: json.loads(p[0])["status"] for p in pairs} == {
        "done0001": "RUNNING",
        "runn0002": "RUNNING",
        "fail0003": "ERROR",
    }
    assert json.loads(pairs[0][1])["last_result"]["epochs_done"] == 2
    assert tune_state.saved_trial_ids(tmp_path) == {"done0001", "runn0002", "fail0003"}

    final = Reported("done0001", 3, 0.8, {"val/score": 0.8, "val/age/mae": 4.0})
    tune_state.mark_finished(tmp_path, {"done0001": final, "fail0003": None})
    restored = {}
    for trial_json, metadata in json.loads(path.read_text())["trial_data"]:  # as TuneController._restore_trials does
        trial = Trial.from_json_state(trial_json, stub=True)
        trial.restore_run_metadata(metadata)
        restored[trial.trial_id] = trial
    assert restored["done0001"].status == Trial.TERMINATED
    assert restored["done0001"].last_result["epochs_done"] == 3 and restored["done0001"].last_result["val/age/mae"] == 4.0
    assert restored["runn0002"].status == Trial.PENDING  # not in the journal's finished: Tune runs it again
    assert restored["fail0003"].status == Trial.ERROR  # an error stays one: the resume re-runs it


def test_the_searcher_state_learns_what_the_journal_saw_before_the_kill(tmp_path):
    """Killed between Tune's callbacks (the journal) and the searcher's next save: a trial that ended is
    still "live" for the limiter (with concurrency 1 nothing was ever suggested again), and a
    budget.target reached is unknown to UntilTarget (the sweep went on to budget.trials)."""
    searchers = _searchers(concurrency=1)
    assert isinstance(searchers.searcher.suggest("done"), dict) and searchers.searcher.suggest("next") is None
    _save(tmp_path, [], searchers)
    [path] = tmp_path.glob(tune_state.SEARCHER_STATES)
    saved = cloudpickle.loads(path.read_bytes())  # the keys fix_searcher_state edits
    assert saved[tune_state.LIMITER]["live_trials"] == {"done"} and saved[tune_state.LIMITER]["num_unfinished_live_trials"] == 1
    assert saved[tune_state.UNTIL_TARGET]["reached_by"] is None

    tune_state.fix_searcher_state(tmp_path, {"done"}, "done")
    fresh = _searchers(concurrency=1)
    fresh.restore_from_dir(str(tmp_path))  # as Tune restores its searcher
    limiter, until = fresh.searcher, fresh.searcher.searcher
    assert limiter.live_trials == set() and until.reached_by == "done"
    assert until.suggest("after") == Searcher.FINISHED

    # a trial still running stays counted, and a target nobody reached stays unreached
    searchers = _searchers(concurrency=1)
    searchers.searcher.suggest("next")
    for p in tmp_path.glob(tune_state.SEARCHER_STATES):
        p.unlink()
    _save(tmp_path, [], searchers)
    tune_state.fix_searcher_state(tmp_path, {"done"}, None)
    fresh = _searchers(concurrency=1)
    fresh.restore_from_dir(str(tmp_path))
    assert fresh.searcher.live_trials == {"next"} and fresh.searcher.searcher.reached_by is None
    (tmp_path / "search_gen_state-x.json").write_bytes(b"not a pickle")  # another format: left alone, no error
    tune_state.fix_searcher_state(tmp_path, {"done"}, "done")


def test_trials_that_finished_before_tune_saved_them_count_against_the_budget(tmp_path):
    """A trial created and finished between two saves is not in what Tune restores: counting it keeps the
    resumed sweep within num_samples (it would otherwise run one trial more in its place)."""
    searchers = _searchers(concurrency=2)
    searchers._total_samples, searchers._counter = 3, 1  # num_samples 3; one trial created before the save
    _save(tmp_path, [], searchers)
    tune_state.set_created(tmp_path, 3)  # two more created, run and finished before the kill
    fresh = _searchers(concurrency=2)
    fresh.restore_from_dir(str(tmp_path))
    assert fresh._counter == 3 and fresh.is_finished()  # no trial past budget.trials
    (tmp_path / "search_gen_state-x.json").write_bytes(b"not a pickle")  # another format: a warning, no error
    tune_state.set_created(tmp_path, 1)


def test_a_cut_short_state_is_set_aside_so_tune_restores_the_one_before_it(tmp_path):
    _save(tmp_path, [_trial("a0000001", Trial.TERMINATED, {})], _searchers())
    newest = tmp_path / TuneController.CKPT_FILE_TMPL.format("2026-11-27_16-00-00")
    newest.write_text('{"trial_data": [["{')  # the driver died while Tune copied it
    assert tune_state.saved_trial_ids(tmp_path) == {"a0000001"}
    assert not newest.exists() and (tmp_path / f".{newest.name}.unreadable").exists()
    assert tune_state.saved_trial_ids(tmp_path / "nothing") == set()  # no saved state: nothing was saved


def test_a_restored_tuner_keeps_its_callbacks_where_the_module_looks(tmp_path):
    marker = tune.Callback()
    tuner = tune.Tuner(lambda config: None, run_config=tune.RunConfig(name="e", storage_path=str(tmp_path), callbacks=[marker]))
    assert marker in tune_state.restored_callbacks(tuner)


def test_a_state_that_names_a_module_flotilla_no_longer_has_is_refused_with_the_reason(tmp_path):
    (tmp_path / "tuner.pkl").write_bytes(b"\x80\x05\x95 ... \x8c\x13flotilla.tune.sweep\x94\x8c\x0bDefineByRun\x94")
    with pytest.raises(ConfigError, match="older flotilla") as err:
        tune_state.check_restorable(tmp_path, "old")
    assert "flotilla.tune.space" in err.value.message
    (tmp_path / "tuner.pkl").write_bytes(cloudpickle.dumps(_space()))
    tune_state.check_restorable(tmp_path, "new")


def test_a_moved_experiments_saved_searcher_points_new_trials_at_the_new_folder(tmp_path):
    """A sweep pulled from its hub mirror into another home: Tune moves the restored trials to the new folder,
    but SearchGenerator.set_state puts back the Experiment it saved, still naming the old one."""
    from ray.tune.experiment import Experiment

    old, new = tmp_path / "home-a" / "tune", tmp_path / "home-b" / "tune"
    searchers = _searchers()
    searchers.add_configurations([Experiment("e", lambda config: None, storage_path=str(old))])
    (new / "e").mkdir(parents=True)
    _save(new / "e", [], searchers)
    fresh = _searchers()
    fresh.restore_from_dir(str(new / "e"))
    assert fresh._experiment.storage.storage_fs_path == old.as_posix()  # what Tune alone would create trials in

    tune_state.relocate_experiment(new / "e")
    fresh = _searchers()
    fresh.restore_from_dir(str(new / "e"))
    assert fresh._experiment.storage.storage_fs_path == new.as_posix()
    assert fresh._experiment.spec["storage"].storage_fs_path == new.as_posix()
    assert fresh.searcher.max_concurrent == 1, "the rest of the state is kept"
