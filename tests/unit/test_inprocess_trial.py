"""Which models train in the calling process, what a trial reserves for it, and how its fit is published."""

from __future__ import annotations

import gc
import platform
import weakref

import pytest

from flotilla.specs import FamilySpec, parse_spec
from flotilla.training import best_checkpoint
from flotilla.training.inprocess import LocalFit, release_memory, runs_in_process
from flotilla.training.publish import final_history
from flotilla.tune.spec import Objective
from flotilla.tune.trial import TrialContext, trial_resources

BASE = {"name": "f", "tasks": ["age", "gender"], "scaling": {"workers": 1, "cpus_per_worker": 0.5}}


def _spec(**over) -> FamilySpec:
    return parse_spec(FamilySpec, {**BASE, **over})


def _ctx(**over) -> TrialContext:
    family = {**BASE, **over}
    return TrialContext("s", family, {"main": "c0ffee"}, None, parse_spec(Objective, {"metric": "val/age/mae", "mode": "min"}))


def test_only_a_single_worker_ddp_model_trains_in_the_calling_process() -> None:
    assert runs_in_process(_spec())
    assert not runs_in_process(_spec(scaling={"workers": 2, "cpus_per_worker": 0.5}))
    assert not runs_in_process(_spec(backend="deepspeed"))


def test_an_in_process_trial_reserves_its_workers_resources_and_a_ray_train_trial_only_its_own() -> None:
    (bundle,) = trial_resources({}, _ctx(), 0.25).bundles
    assert bundle == {"CPU": 0.75}  # the trainable trains: it holds the worker's CPUs too
    (bundle,) = trial_resources({"scaling.workers": 2}, _ctx(), 0.25).bundles
    assert bundle == {"CPU": 0.25}  # Ray Train's worker group reserves its own
    (bundle,) = trial_resources({}, _ctx(scaling={"workers": 1, "cpus_per_worker": 1, "use_gpu": True}), 0.25).bundles
    assert bundle == {"CPU": 1.25, "GPU": 1.0}


def test_a_local_fit_publishes_like_ray_trains_result() -> None:
    fit = LocalFit(
        [("e0", {"val/age/mae": 9.0}), ("e1", {"val/age/mae": 7.0}), ("e2", {"val/age/mae": 7.0}), ("e3", {})],
        history=[{"epoch": e} for e in range(4)],
    )
    tasks = _spec().task_specs()
    assert best_checkpoint(fit, tasks, None) == "e1"  # the first task's primary metric; ties: the earlier epoch
    assert best_checkpoint(fit, tasks, "last") == fit.checkpoint == "e3"
    assert LocalFit([("a", {}), ("b", {})]).get_best_checkpoint("val/x", "max") == "b"  # nothing scored: the last
    assert LocalFit([]).checkpoint is None
    # the chosen checkpoint's history stops at its epoch: the card gets every epoch the run trained
    assert final_history(fit, {"history": [{"epoch": 0}, {"epoch": 1}]}) == fit.history


@pytest.mark.parametrize("history", [[], [{"epoch": 0}]])
def test_a_checkpoints_own_history_is_kept_when_the_fit_knows_no_more(history) -> None:
    meta = {"history": [{"epoch": 0}, {"epoch": 1}]}
    assert final_history(LocalFit([("e1", {})], history=history), meta) == meta["history"]


class _Held:
    me: _Held


def test_releasing_a_finished_trials_memory_collects_its_cycles_and_trims_glibcs_heap() -> None:
    held = _Held()
    held.me = held  # a cycle: only a collection frees it
    gone = weakref.ref(held)
    del held
    gc.disable()  # no automatic collection in between: release_memory's own must free it
    try:
        assert gone() is not None
        trimmed = release_memory()
    finally:
        gc.enable()
    assert gone() is None
    assert trimmed == (platform.libc_ver()[0] == "glibc")
