"""Pure sweep logic: the "good enough" target searcher wrapper, stopped trials as Optuna prunes, ASHA's rungs.

The searcher under the wrapper is a real OptunaSearch (no Ray cluster is needed
to ask it for configurations); the end-to-end effect is exercised by bench/hpo.py.
"""

from __future__ import annotations

import json
import logging

import optuna
import pytest
from pydantic import ValidationError
from ray.tune.search import ConcurrencyLimiter, Searcher, SearchGenerator
from ray.tune.search.optuna import OptunaSearch

from flotilla.errors import ConfigError, SpecError
from flotilla.specs import parse_spec
from flotilla.tune.journal import Journal
from flotilla.tune.report import missing_plots_note
from flotilla.tune.searcher import StoppedAsPrunedOptunaSearch
from flotilla.tune.space import DefineByRun, asha
from flotilla.tune.spec import Objective, SweepSpec
from flotilla.tune.until import UntilTarget


def _spec(**over) -> SweepSpec:
    return parse_spec(
        SweepSpec,
        {
            "name": "s",
            "base": {"name": "fam", "data": {"repo": "rep", "dataset": "d"}, "epochs": 9},
            "space": {"optim.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1}},
            "objective": {"metric": "val/age/mae", "mode": "min"},
            **over,
        },
    )


def _wrapped(mode: str = "max", target: float = 0.9) -> UntilTarget:
    spec = _spec()
    inner = OptunaSearch(
        space=DefineByRun(spec.space), metric="val/score", mode=mode, sampler=optuna.samplers.RandomSampler(seed=0)
    )
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
    return StoppedAsPrunedOptunaSearch(
        space=DefineByRun(_spec().space),
        metric="val/score",
        mode="max",
        sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=2),
        full_iterations=full,
    )


def _run(s, trial_id: str, scores: list[float], error: bool = False, stopped: bool = False) -> None:
    """Drive the searcher as Tune's controller does: a report that makes the scheduler stop the
    trial goes to on_trial_complete only, not to on_trial_result."""
    s.suggest(trial_id)
    for i, v in enumerate(scores[:-1] if stopped else scores, 1):
        s.on_trial_result(trial_id, {"val/score": v, "training_iteration": i})
    s.on_trial_complete(trial_id, {"val/score": scores[-1], "training_iteration": len(scores)}, error=error)


def test_a_trial_stopped_before_its_last_epoch_is_pruned_in_the_optuna_study_not_complete(caplog):
    s = _searcher(full=3)
    _run(s, "full", [0.2, 0.5, 0.7])
    _run(s, "stopped", [0.1], stopped=True)
    _run(s, "rung2", [0.3, 0.6], stopped=True)
    _run(s, "broken", [0.4, 0.4], error=True)
    by = {t.number: t for t in s.study.trials}
    full, stopped, rung2, broken = (by[n] for n in range(4))
    assert full.state == optuna.trial.TrialState.COMPLETE and full.value == 0.7
    assert stopped.state == optuna.trial.TrialState.PRUNED and stopped.value == 0.1  # the report that stopped it
    assert stopped.intermediate_values == {1: 0.1}
    assert rung2.state == optuna.trial.TrialState.PRUNED and rung2.intermediate_values == {1: 0.3, 2: 0.6}
    assert broken.state == optuna.trial.TrialState.FAIL
    assert s.study.best_trial.number == 0  # a half-trained trial can never be the study's best
    record = [(t.state, t.value, dict(t.intermediate_values)) for t in s.study.trials]
    with caplog.at_level(logging.WARNING):
        s.on_trial_complete("stopped", {"val/score": 0.3, "training_iteration": 2})  # a repeat is ignored, not re-told
    assert [(t.state, t.value, dict(t.intermediate_values)) for t in s.study.trials] == record
    assert "did not record" not in caplog.text  # ignored up front (Ray says so), not an Optuna error swallowed
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
    from flotilla.errors import SpecError

    with pytest.raises(ConfigError, match="grace_period"):
        asha(_spec(scheduler={"type": "asha", "grace_period": 4}), 4)
    # and by the check that runs before anything is written or Ray starts (sweep --check, jobs --check)
    with pytest.raises(SpecError) as err:
        _spec(scheduler={"type": "asha", "grace_period": 9}).check()
    assert any(p.startswith("scheduler.grace_period: 9") and "below 9" in p for p in err.value.problems)


def test_every_mistake_a_sweep_can_be_checked_for_is_reported_before_any_trial_runs():
    from flotilla.errors import SpecError

    spec = _spec(
        space={
            "optim.lrr": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
            "weighting": {"type": "choice", "values": ["fixed", "uncertanty"]},
            "model.width": {"type": "int", "low": 4, "high": 16},
        },
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
    family = _spec(
        objective={"metrics": {"val/age/mae": "min", "val/emotion/macro_f1": "max"}}, scheduler={"type": "none"}
    ).check()
    assert family.epochs == 9


def test_a_sweep_without_history_plots_says_it_is_because_asha_stopped_its_trials():
    note = missing_plots_note({"curves": "c.png"}, ["completed", "pruned", "pruned", "pruned"])
    assert note and "ASHA pruned 3 of 4" in note and "curves" in note
    assert missing_plots_note({"history": "h.png"}, ["completed", "pruned"]) is None
    assert missing_plots_note({}, ["completed", "completed", "pruned"]) is None  # enough finished: not ASHA's doing
    assert missing_plots_note({}, ["errored"]) is None


def test_what_the_sweep_decides_once_cannot_be_a_dimension_and_conditions_that_never_hold_are_reported():
    from flotilla.errors import SpecError

    spec = _spec(
        base={"name": "fam", "data": {"repo": "rep", "dataset": "d"}, "epochs": 9, "strategy": "separate"},
        space={
            "merge_into": {"type": "choice", "values": ["main", None]},
            "transfer.source": {"type": "choice", "values": ["run-a", "run-b"]},
            "epochs": {"type": "int", "low": 3, "high": 9},
            "optim.momentum": {"type": "uniform", "low": 0.8, "high": 0.9, "when": {"optim.name": "sgd"}},
            "optim.name": {"type": "choice", "values": ["adamw", "sgd"]},
            "optim.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1, "when": {"optim.nam": "sgd"}},
            "weighting": {"type": "choice", "values": ["fixed"], "when": {"optim.name": "SGD"}},
        },
        promote={"into": "main/../x"},
    )
    with pytest.raises(SpecError) as err:
        spec.check()
    problems = err.value.problems
    text = "\n".join(problems)
    assert "space.merge_into: cannot be a search dimension: trials never merge" in text
    assert "space.transfer.source: cannot be a search dimension" in text
    assert "space.epochs: cannot be a search dimension: every trial trains the same number of epochs" in text
    assert "strategy: separate" in text
    assert "space.optim.momentum.when: 'optim.name' is listed after it" in text
    assert "space.optim.lr.when: 'optim.nam' is not a dimension of this space (did you mean 'optim.name'?)" in text
    assert "space.weighting.when: optim.name = 'SGD' is never sampled" in text
    assert "promote.into" in text and "invalid branch id" in text
    assert len(problems) == 8, problems


def test_a_base_that_merges_its_own_runs_does_not_make_trials_merge():
    spec = _spec(base={"name": "fam", "data": {"repo": "rep", "dataset": "d"}, "epochs": 9, "merge_into": "main"})
    assert spec.check().merge_into is None and spec.family().merge_into is None


def test_a_complete_trial_is_told_to_optuna_with_its_best_epoch_not_its_last():
    s = _searcher(full=3)
    _run(s, "peaked", [0.2, 0.8, 0.7])
    (t,) = s.study.trials
    assert t.state == optuna.trial.TrialState.COMPLETE and t.value == 0.8
    m = StoppedAsPrunedOptunaSearch(
        space=DefineByRun(_spec().space),
        metric="val/age/mae",
        mode="min",
        sampler=optuna.samplers.RandomSampler(seed=0),
        full_iterations=3,
    )
    m.suggest("a")
    for i, v in enumerate([9.0, 4.0], 1):
        m.on_trial_result("a", {"val/age/mae": v, "training_iteration": i})
    m.on_trial_complete("a", {"val/age/mae": 6.0, "training_iteration": 3})
    assert m.study.trials[0].value == 4.0


def test_an_errored_trial_tune_runs_again_on_resume_gets_a_new_optuna_trial_with_its_params(tmp_path):
    s = _searcher(full=2)
    _run(s, "x", [0.4], error=True)
    s.save(str(tmp_path / "s.pkl"))  # the driver dies; resume restores the searcher
    fresh = _searcher(full=2)
    fresh.restore(str(tmp_path / "s.pkl"))
    fresh.on_trial_result("x", {"val/score": 0.5, "training_iteration": 1})  # Tune re-runs it (resume_errored)
    fresh.on_trial_complete("x", {"val/score": 0.6, "training_iteration": 2})
    failed, retried = fresh.study.trials
    assert failed.state == optuna.trial.TrialState.FAIL
    assert retried.state == optuna.trial.TrialState.COMPLETE and retried.value == 0.6
    assert retried.params == failed.params and retried.intermediate_values == {1: 0.5}


def test_a_trial_publishes_its_best_checkpoint_by_the_sweep_objective():
    from types import SimpleNamespace

    from flotilla.training import best_checkpoint
    from flotilla.tune.trial import checkpoint_rank

    epochs = [
        ("e1", {"val/age/mae": 10.0, "val/gender/accuracy": 0.5}),  # best age; combined 0.3
        ("e2", {"val/age/mae": 20.0, "val/gender/accuracy": 1.0}),  # best combined: 0.6
        ("e3", {"val/age/mae": 30.0, "val/gender/accuracy": 1.0}),
    ]  # the last: 0.4
    fit = SimpleNamespace(best_checkpoints=epochs, checkpoint="e3")
    weights = {"val/age/mae": -0.02, "val/gender/accuracy": 1.0}

    def objective(**kw) -> Objective:
        return parse_spec(Objective, kw)

    assert best_checkpoint(fit, [], checkpoint_rank(objective(weights=weights, mode="max"))) == "e2"
    assert best_checkpoint(fit, [], checkpoint_rank(objective(metric="val/age/mae", mode="min"))) == "e1"
    pareto = objective(metrics={"val/age/mae": "min", "val/gender/accuracy": "max"})
    assert best_checkpoint(fit, [], checkpoint_rank(pareto)) == "e3"
    tie = SimpleNamespace(best_checkpoints=[("a", {"val/x": 1.0}), ("b", {"val/x": 1.0})], checkpoint="b")
    assert best_checkpoint(tie, [], checkpoint_rank(objective(metric="val/x", mode="max"))) == "a"


def test_a_trials_record_carries_the_metrics_of_the_epoch_it_published(tmp_path):
    from types import SimpleNamespace

    from flotilla.tune.results import trial_record
    from flotilla.tune.trial import trial_branch

    journal = tmp_path / "lifecycle.jsonl"
    lines = [
        ("a1b2c3d4", 1, 0.9),
        ("a1b2c3d4", 2, 0.3),  # a first run, killed with the driver
        ("a1b2c3d4", 1, 0.5),
        ("a1b2c3d4", 2, 0.8),
        ("a1b2c3d4", 3, 0.6),
    ]  # run again from the start
    journal.write_text(
        "".join(
            json.dumps(
                {"trial_id": t, "event": "result", "iteration": i, "value": v, "metrics": {"val/score": v, "val/age/mae": 10 * i}}
            )
            + "\n"
            for t, i, v in lines
        )
    )
    live = Journal(journal).trials()
    assert [(r.epochs, r.value) for r in live["a1b2c3d4"].curve] == [(1, 0.5), (2, 0.8), (3, 0.6)]
    r = SimpleNamespace(
        metrics={"trial_id": "a1b2c3d4", "training_iteration": 3, "val/score": 0.6, "val/age/mae": 30.0},
        path="/s/trainable_a1b2c3d4_1_lr=0.1_2026",
        config={"optim.lr": 0.1},
        error=None,
    )
    commits = {"main": "c-main", "raw": "c-raw"}
    rec = trial_record(r, live, "sw", 3, "max", multi=False, commits=commits, base_ref="main")
    assert rec.status == "completed" and rec.metrics == {"val/score": 0.8, "val/age/mae": 20}
    assert (rec.data_ref, rec.data_commit) == ("main", "c-main")  # no data.ref param: the base spec's ref
    dead = SimpleNamespace(
        metrics={}, path="/s/trainable_deadbeef_2_lr=0.2_2026", config={"optim.lr": 0.2, "data.ref": "raw"}, error=RuntimeError()
    )
    rec = trial_record(dead, live, "sw", 3, "max", multi=False, commits=commits, base_ref="main")
    assert rec.trial_id == "deadbeef" and rec.status == "errored" and rec.branch == trial_branch("sw", "deadbeef")
    assert (rec.data_ref, rec.data_commit) == ("raw", "c-raw")  # known without a report: pinned when the sweep started


def test_the_trial_table_shows_each_trials_data_commit_when_the_sweep_has_several_data_versions():
    from io import StringIO

    from rich.console import Console

    from flotilla.tune import SweepResult, TrialRecord
    from flotilla.tune.report import trials_table

    def shown(result: SweepResult) -> list[str]:
        out = StringIO()
        Console(file=out, width=200).print(trials_table(result))
        return out.getvalue().splitlines()

    raw, fixed = "a" * 12 + "1" * 52, "b" * 12 + "2" * 52

    def trial(tid: str, ref: str, commit: str, score: float) -> TrialRecord:
        return TrialRecord(
            tid, {"data.ref": ref}, "completed", 3, {"val/score": score}, f"trial-s-{tid}", data_ref=ref, data_commit=commit
        )

    two = [trial("t1", "raw", raw, 0.5), trial("t2", "main", fixed, 0.7)]
    lines = shown(SweepResult("s", "/x", {"main": fixed, "raw": raw}, "val/score", "max", trials=two))
    assert any("data commit" in line for line in lines)
    assert "a" * 12 in next(x for x in lines if "t1" in x) and "b" * 12 in next(x for x in lines if "t2" in x)
    assert "a" * 13 not in "".join(lines)  # abbreviated, as a commit is everywhere else
    one = [trial("t1", "main", fixed, 0.5), trial("t2", "main", fixed, 0.7)]
    lines = shown(SweepResult("s", "/x", {"main": fixed}, "val/score", "max", trials=one))
    assert not any("data commit" in line for line in lines)  # the same in every row: said once, under the table
    assert sum("b" * 12 in line for line in lines) == 1 and any(f"data main @ {'b' * 12}" in line for line in lines)


def test_a_run_that_took_a_ctrl_c_is_told_apart_from_one_that_ended_and_the_caller_gets_its_handler_back():
    import os
    import signal
    import time

    from flotilla.tune.interrupts import caller_keeps_ctrl_c

    def tune_like_run(ctrl_c: bool) -> None:  # what tune.run does with SIGINT (ray/tune/tune.py)
        original = signal.getsignal(signal.SIGINT)

        def stop_gracefully(sig, frame):
            signal.signal(signal.SIGINT, original)  # put back only when a signal arrives

        signal.signal(signal.SIGINT, stop_gracefully)
        if ctrl_c:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)

    before = signal.getsignal(signal.SIGINT)
    with caller_keeps_ctrl_c() as ended:
        tune_like_run(ctrl_c=False)
    assert not ended.interrupted and signal.getsignal(signal.SIGINT) is before
    with caller_keeps_ctrl_c() as stopped:
        tune_like_run(ctrl_c=True)
    assert stopped.interrupted and signal.getsignal(signal.SIGINT) is before


def test_a_trial_counts_epochs_across_a_restart_not_reports():
    from flotilla.tune.trial import EPOCHS_DONE, epochs_done, with_trial_keys

    sent = with_trial_keys({"epoch": 4, "val/a": 0.5}, {"val/a": 1.0}, "trial-x", "run-x")  # a restarted trial's 5th epoch
    assert sent[EPOCHS_DONE] == 5 and sent["val/score"] == 0.5 and sent["branch"] == "trial-x" and sent["run_id"] == "run-x"
    assert epochs_done({**sent, "training_iteration": 1}) == 5 and epochs_done({"training_iteration": 2}) == 2
    assert epochs_done(None) == 0


def test_an_address_where_nothing_listens_fails_fast_and_says_so():
    from flotilla.cluster.connect import check_reachable
    from flotilla.errors import FlotillaError
    from flotilla.hub.server import free_port

    port = free_port()  # nothing listens there: ray.init would retry the GCS for minutes
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(FlotillaError) as err:
            check_reachable(address, timeout=2)
        assert f"nothing answers at 127.0.0.1:{port}" in err.value.message and "--address" in err.value.hint
    check_reachable("auto")  # forms Ray resolves itself are left to it
    with pytest.raises(FlotillaError) as err:  # the dashboard URL `cluster status` prints: for jobs, not for Ray itself
        check_reachable("http://127.0.0.1:8275")
    assert "dashboard" in err.value.message and "GCS address" in err.value.hint and "jobs submit" in err.value.hint


def test_a_ray_client_connection_that_fails_once_is_tried_again_but_a_gcs_address_is_not(monkeypatch):
    """A busy head can fail one Ray client connection (its proxy's runtime-env request or server start);
    ray.init is replaced here: what is tested is only how often flotilla asks, and what it says."""
    import ray

    from flotilla.cluster import RayConnector
    from flotilla.errors import FlotillaError

    calls = []

    def once_then_fine(address):
        calls.append(address)
        if len(calls) == 1:
            raise ConnectionAbortedError("Initialization failure from server: GetOrCreateRuntimeEnv request failed")

    def down(address):
        calls.append(address)
        raise ConnectionError("ray client connection timeout")

    connector = RayConnector(retry_wait_s=0)
    monkeypatch.setattr(ray, "init", once_then_fine)
    connector.init_remote("ray://127.0.0.1:10001")
    assert calls == ["ray://127.0.0.1:10001"] * 2
    monkeypatch.setattr(ray, "init", down)
    for address, tries in (("ray://127.0.0.1:10001", 2), ("127.0.0.1:6379", 1)):  # Ray retries a GCS itself, for a minute
        calls.clear()
        with pytest.raises(FlotillaError) as err:
            connector.init_remote(address)
        assert len(calls) == tries and "ray client connection timeout" in err.value.message and address in err.value.message


def test_an_address_ray_cannot_parse_is_our_error_not_a_traceback():
    import subprocess
    import sys

    code = "from flotilla.cluster import ensure_ray; ensure_ray('garbage')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "FlotillaError: cannot reach the Ray cluster at 'garbage'" in out.stderr, out.stderr[-2000:]
    assert "ValueError" not in out.stderr


def test_show_or_dashboard_of_an_unknown_sweep_says_there_is_none(tmp_path):
    from flotilla.errors import NotFoundError
    from flotilla.settings import Settings
    from flotilla.tune import load_result
    from flotilla.tune.store import sweep_dir

    settings = Settings(home=tmp_path, cache=tmp_path / "cache")
    sweep_dir("real-one", settings).mkdir(parents=True)
    (sweep_dir("real-one", settings) / "sweep.json").write_text("{}")
    with pytest.raises(NotFoundError) as err:
        load_result("no-such-sweep", settings)
    assert "no sweep 'no-such-sweep'" in err.value.message and "real-one" in err.value.hint
    with pytest.raises(ConfigError, match="has no results yet"):  # it exists, but has not finished
        load_result("real-one", settings)


def test_a_sweep_id_after_a_spec_file_is_refused_not_ignored():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [str(Path(sys.executable).parent / "flotilla"), "sweep", "tuning/demo.yaml", "my-id", "--check"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "unexpected extra argument" in out.stderr and "(my-id)" in out.stderr, out.stderr[-2000:]


def test_the_token_set_for_flotillas_cluster_is_taken_back_before_the_next_connection(monkeypatch):
    """A notebook that trained on flotilla's cluster by address, then connects elsewhere, must not send its token."""
    import os

    from flotilla.cluster import RayConnector

    connector = RayConnector(our_auth={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": "/home/u/.flotilla/ray/auth_token"})
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", "/home/u/.flotilla/ray/auth_token")
    connector.drop_our_auth()

    assert "RAY_AUTH_TOKEN_PATH" not in os.environ and "RAY_AUTH_MODE" not in os.environ and connector.our_auth == {}
    connector = RayConnector(our_auth={"RAY_AUTH_TOKEN_PATH": "/home/u/.flotilla/ray/auth_token"})
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", "/home/u/my-own-token")  # the user changed it since: theirs, kept
    connector.drop_our_auth()
    assert os.environ["RAY_AUTH_TOKEN_PATH"] == "/home/u/my-own-token"


def test_an_older_sweep_json_still_resumes_as_it_ran():
    """Older versions accepted (and ignored) a step on a float dimension and ran int end points like 7.5 as int(7.5)."""
    from flotilla.tune.store import saved_spec

    spec = _spec().model_dump(mode="json")
    spec["space"] = {
        "optim.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2, "step": 1},
        "model.width": {"type": "int", "low": 7.5, "high": 32.0},
    }
    with pytest.raises(ValidationError):  # what the spec says now, for a new sweep
        SweepSpec.model_validate(spec)
    resumed = saved_spec(spec, "old")
    assert resumed.space["optim.lr"].step is None
    assert (resumed.space["model.width"].low, resumed.space["model.width"].high) == (7, 32)
    spec["space"]["model.width"] = {"type": "choice", "values": []}  # really broken: our error, not pydantic's
    with pytest.raises(SpecError, match=r"sweep 'old' \(its sweep\.json\)"):
        saved_spec(spec, "old")


def test_a_searcher_checkpoint_interrupted_mid_write_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    import ray.tune.search.optuna.optuna_search as ray_optuna

    s = _searcher()
    path = tmp_path / "searcher-state-x.pkl"
    s.save(str(path))
    saved = path.read_bytes()
    assert saved and not list(tmp_path.glob("*.tmp-*"))

    def killed(obj, fh):  # the driver dies after the first bytes of the pickle
        fh.write(b"\x80")
        raise KeyboardInterrupt

    monkeypatch.setattr(ray_optuna.pickle, "dump", killed)
    with pytest.raises(KeyboardInterrupt):
        s.save(str(path))
    assert path.read_bytes() == saved and not list(tmp_path.glob("*.tmp-*"))
    fresh = _searcher()
    fresh.restore(str(path))  # what a resume does: it unpickles, instead of an EOFError


def test_sweep_actions_are_subcommands_and_a_spec_file_alone_still_runs():
    from pathlib import Path

    from typer.testing import CliRunner

    from flotilla.cli.commands import app

    root = Path(__file__).resolve().parents[2]
    runner = CliRunner()
    helped = runner.invoke(app, ["sweep", "--help"], env={"COLUMNS": "200"})
    assert helped.exit_code == 0 and all(f" {c} " in helped.output for c in ("run", "resume", "show", "list", "dashboard"))
    for argv in (
        ["sweep", "run", str(root / "tuning/demo.yaml"), "--check"],
        ["sweep", str(root / "tuning/demo.yaml"), "--check"],
    ):
        out = runner.invoke(app, argv, env={"COLUMNS": "200"})
        assert out.exit_code == 0 and "3 dimensions" in out.output, (argv, out.output)
