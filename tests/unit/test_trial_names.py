"""One name per trial and one word per state: Tune's trial name, the Optuna trial, the plots and the records.

Real Tune ``Trial`` objects, a real ``OptunaSearch`` (our subclass) over a real SQLite study, Optuna's and
matplotlib's real plots: nothing here needs a cluster or a hub.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from flotilla.specs import parse_spec
from flotilla.tune import SweepResult, TrialRecord
from flotilla.tune.report import relabel, trial_labels, write_plots
from flotilla.tune.results import ranked, status_word, trial_record
from flotilla.tune.searcher import StoppedAsPrunedOptunaSearch
from flotilla.tune.space import DefineByRun, searcher
from flotilla.tune.spec import Objective, SweepSpec
from flotilla.tune.study import BRANCH_ATTR, MODEL_ATTR, TRIAL_ATTR, load, pareto_ids, trial_id
from flotilla.tune.trial import trial_branch, trial_id_of_dir, trial_model_uri, trial_name, with_trial_keys


def _spec(**over) -> SweepSpec:
    return parse_spec(
        SweepSpec,
        {
            "name": "s",
            "base": {"name": "fam", "data": {"repo": "rep", "dataset": "d"}, "epochs": 3},
            "space": {"optim.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1}},
            "objective": {"metric": "val/age/mae", "mode": "min"},
            **over,
        },
    )


def test_tunes_name_and_folder_for_a_trial_are_its_id():
    from ray.tune.experiment import Trial

    trial = Trial("trainable", trial_name_creator=trial_name, trial_dirname_creator=trial_name, stub=True)
    assert re.fullmatch(r"[0-9a-f]{8}", trial.trial_id)
    assert str(trial) == trial.trial_id  # Tune's default: trainable_<id>
    assert trial.custom_dirname == trial.trial_id  # Tune's default: trainable_<id>_<n>_<params>_<date>
    assert trial_id_of_dir("88bb400d") == "88bb400d"
    assert trial_id_of_dir("trainable_88bb400d_3_optim.lr=0.01_2026-12-07") == "88bb400d"  # a sweep started before


def _tagged_searcher(study_name: str, full: int = 3, **kw) -> StoppedAsPrunedOptunaSearch:
    kw = {"metric": "val/age/mae", "mode": "min", **kw}
    return StoppedAsPrunedOptunaSearch(
        space=DefineByRun(_spec().space),
        sampler=optuna.samplers.RandomSampler(seed=0),
        full_iterations=full,
        study_name=study_name,
        **kw,
    )


def test_the_optuna_trial_carries_the_id_the_branch_and_for_a_trial_trained_to_the_end_its_model():
    s = _tagged_searcher("sw")
    uri = trial_model_uri("rep", trial_branch("sw", "88bb400d"), "sw-88bb400d", "family")
    assert uri == "lakefs://rep/trial-sw-88bb400d/models/sw-88bb400d/family/model.pt"
    for t in ("88bb400d", "0badc0de"):
        s.suggest(t)
    report = with_trial_keys({"val/age/mae": 9.0, "epoch": 0}, None, trial_branch("sw", "88bb400d"), "sw-88bb400d", uri)
    assert report["model_uri"] == uri and report["epochs_done"] == 1
    for e, v in enumerate((9.0, 7.0), 1):
        s.on_trial_result("88bb400d", {**report, "val/age/mae": v, "training_iteration": e, "epochs_done": e})
    s.on_trial_complete("88bb400d", {**report, "val/age/mae": 8.0, "training_iteration": 3, "epochs_done": 3})
    s.on_trial_result("0badc0de", {"val/age/mae": 12.0, "training_iteration": 1, "model_uri": "lakefs://x"})
    s.on_trial_complete("0badc0de", {"val/age/mae": 11.0, "training_iteration": 2, "model_uri": "lakefs://x"})  # ASHA
    done, pruned = s.study.trials
    assert done.user_attrs == {TRIAL_ATTR: "88bb400d", BRANCH_ATTR: "trial-sw-88bb400d", MODEL_ATTR: uri}
    assert done.state == optuna.trial.TrialState.COMPLETE and done.value == 7.0
    assert pruned.state == optuna.trial.TrialState.PRUNED, "ASHA's stop is PRUNED in the study"
    assert pruned.user_attrs == {TRIAL_ATTR: "0badc0de", BRANCH_ATTR: "trial-sw-0badc0de"}, "a pruned trial published no model"
    assert [trial_id(t) for t in s.study.trials] == ["88bb400d", "0badc0de"]
    older = SimpleNamespace(user_attrs={"tune_trial_id": "abc"})  # a study written before the rename
    assert trial_id(older) == "abc"


def test_a_new_sweeps_study_names_its_metrics(tmp_path):
    search = searcher(_spec(), 3, tmp_path / "optuna.db", "sw")
    assert load(tmp_path, "sw").metric_names == ["val/age/mae"]
    weighted = _spec(objective={"weights": {"val/age/mae": -0.02, "val/gender/accuracy": 1.0}, "mode": "max"})
    searcher(weighted, 3, tmp_path / "w.db", "w")
    assert optuna.load_study(study_name="w", storage=f"sqlite:///{tmp_path / 'w.db'}").metric_names == ["val/score"]
    pareto = _spec(objective={"metrics": {"val/age/mae": "min", "val/gender/accuracy": "max"}}, scheduler={"type": "none"})
    searcher(pareto, 3, tmp_path / "p.db", "p")
    names = optuna.load_study(study_name="p", storage=f"sqlite:///{tmp_path / 'p.db'}").metric_names
    assert names == ["val/age/mae", "val/gender/accuracy"]
    assert search.metric == "val/age/mae"


def test_the_pareto_front_is_optunas_best_trials_and_a_stopped_trial_is_pruned_not_on_it():
    metrics = ["val/age/mae", "val/gender/accuracy"]
    s = _tagged_searcher("pf", metric=metrics, mode=["min", "max"])
    points = {"aaaaaaaa": (5.0, 0.6), "bbbbbbbb": (8.0, 0.9), "cccccccc": (9.0, 0.5), "dddddddd": (1.0, 0.99)}
    for t, (mae, acc) in points.items():
        s.suggest(t)
        epochs = 1 if t == "dddddddd" else 3  # dominates everything, but was stopped after epoch 1
        s.on_trial_complete(t, {"val/age/mae": mae, "val/gender/accuracy": acc, "training_iteration": epochs})
    states = {trial_id(t): t.state for t in s.study.trials}
    assert states["dddddddd"] == optuna.trial.TrialState.PRUNED
    assert pareto_ids(s.study) == {"aaaaaaaa", "bbbbbbbb"}
    objective = parse_spec(Objective, {"metrics": {"val/age/mae": "min", "val/gender/accuracy": "max"}})
    records = [
        TrialRecord(t, {}, "completed" if t != "dddddddd" else "pruned", 3, {metrics[0]: m, metrics[1]: a}, f"trial-pf-{t}")
        for t, (m, a) in points.items()
    ]
    result = ranked("pf", Path("/x"), {"main": "c"}, objective, records, front=pareto_ids(s.study))
    assert result.pareto == ["aaaaaaaa", "bbbbbbbb"] and result.winner and result.winner.trial_id == "aaaaaaaa"


def test_a_stop_is_pruned_in_records_and_an_older_results_json_says_so_too(tmp_path):
    assert [status_word(s) for s in ("completed", "stopped", "pruned", "errored")] == ["completed", "pruned", "pruned", "errored"]
    r = SimpleNamespace(
        metrics={"trial_id": "88bb400d", "epochs_done": 1, "val/score": 0.5}, path="/e/88bb400d", config={}, error=None
    )
    assert trial_record(r, {}, "sw", 3, "max", multi=False).status == "pruned"
    old = SweepResult("sw", str(tmp_path), {"main": "c"}, "val/score", "max")
    old.trials = [TrialRecord("88bb400d", {}, "stopped", 1, {"val/score": 0.5}, "trial-sw-88bb400d")]
    assert SweepResult.from_json(old.to_json()).trials[0].status == "pruned"


def test_the_plots_name_each_trial_by_its_id_on_whole_epochs(tmp_path):
    d = tmp_path / "plots-sweep"
    d.mkdir()
    s = _tagged_searcher("plots", storage=optuna.storages.RDBStorage(f"sqlite:///{d / 'optuna.db'}"))
    curves = {"aaaaaaaa": [9.0, 7.0, 6.0], "bbbbbbbb": [8.0, 6.5, 6.1], "cccccccc": [12.0]}
    for t, values in curves.items():
        s.suggest(t)
        for e, v in enumerate(values[:-1] if len(values) == 1 else values, 1):
            s.on_trial_result(t, {"val/age/mae": v, "training_iteration": e})
        s.on_trial_complete(t, {"val/age/mae": values[-1], "training_iteration": len(values)})
    study = load(d, "plots")
    labels = trial_labels(study)
    assert labels == {"Trial0": "aaaaaaaa", "Trial1": "bbbbbbbb", "Trial2": "cccccccc (pruned)"}
    assert relabel("Trial2", labels) == "cccccccc (pruned)" and relabel("Best Value", labels) == "Best Value"
    records = [
        TrialRecord(
            t, {}, "completed" if len(v) == 3 else "pruned", len(v), {"val/age/mae": v[-1], "val/gender/accuracy": 0.8}, "b"
        )
        for t, v in curves.items()
    ]
    result = ranked("plots", d, {"main": "c"}, parse_spec(Objective, {"metric": "val/age/mae", "mode": "min"}), records)
    plots = write_plots(d, "plots", result)
    assert {"curves", "curves.html", "history", "tradeoff"} <= set(plots)
    page = Path(plots["curves.html"]).read_text()
    names = set(re.findall(r'"name":"([^"]*)"', page))
    assert {"aaaaaaaa", "bbbbbbbb", "cccccccc (pruned)"} <= names and not any(n.startswith("Trial") for n in names)
    assert '"dtick":1' in page and '"title":{"text":"epoch"}' in page
    history = Path(plots["history.html"]).read_text()
    assert '"ticktext":["aaaaaaaa","bbbbbbbb","cccccccc"]' in history  # Optuna's trial numbers, as the trials' ids


@pytest.mark.parametrize("status", ["completed", "pruned"])
def test_the_trial_table_shows_the_whole_id_however_narrow(status):
    from io import StringIO

    from rich.console import Console

    from flotilla.tune.report import trials_table

    rec = TrialRecord("88bb400d", {"optim.lr": 0.01, "model.width": 8}, status, 3, {"val/score": 0.5}, "trial-sw-88bb400d")
    result = SweepResult("sw", "/x", {"main": "c" * 64}, "val/score", "max", trials=[rec], winner=rec)
    out = StringIO()
    Console(file=out, width=60).print(trials_table(result))
    text = out.getvalue()
    assert "88bb400d ★" in text
    assert ("pruned: stopped early by ASHA" in " ".join(text.split())) == (status == "pruned")
