"""The typed hand-offs of one model's training: what a ModelRun fills in, what it refuses, what travels."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import ray.cloudpickle as cloudpickle

from flotilla.data.pinning import DataRef
from flotilla.specs import FamilySpec, parse_spec
from flotilla.training import EpochStart, ModelRun, WorkerConfig, WorkerHook, best_checkpoint

DATA = DataRef("faces", "c0ffee", "synthetic", "main")


def _spec() -> FamilySpec:
    return parse_spec(FamilySpec, {"name": "f", "tasks": ["age", "gender"]})


def test_a_model_run_trains_every_task_of_its_spec_unless_told_which() -> None:
    spec = _spec()
    family = ModelRun(spec, DATA, "r1")
    assert [t.name for t in family.tasks] == ["age", "gender"] and family.branch_name == "r1"
    (age,) = ModelRun(spec, DATA, "r1", name="age", tasks=family.tasks[:1]).tasks
    assert age.name == "age" and ModelRun(spec, DATA, "r1", name="age", tasks=(age,)).branch_name == "r1-age"
    with pytest.raises(ValueError, match="'best'"):
        ModelRun(spec, DATA, "r1", rank="best")


def test_without_a_rank_the_first_tasks_primary_metric_picks_the_checkpoint() -> None:
    run = ModelRun(_spec(), DATA, "r1")
    asked = {}
    fit = SimpleNamespace(
        best_checkpoints=[("e0", {})],
        checkpoint="e0",
        get_best_checkpoint=lambda metric, mode: asked.update(metric=metric, mode=mode) or "best",
    )
    assert best_checkpoint(fit, run.tasks, run.rank) == "best" and asked == {"metric": "val/age/mae", "mode": "min"}
    assert best_checkpoint(fit, run.tasks, "last") == "e0"


class _Seen(WorkerHook):
    def __init__(self) -> None:
        self.events: list[EpochStart] = []

    def on_epoch_start(self, event: EpochStart) -> None:
        self.events.append(event)


def test_the_worker_config_pickles_with_its_typed_spec_and_hooks() -> None:
    """What Ray ships to every worker: the spec itself (no dict to validate again) and the hooks."""
    spec = _spec()
    config = WorkerConfig(
        spec, ModelRun(spec, DATA, "r1").tasks, DATA, "an object ref", "r1", "family", "exp-r1", hooks=(_Seen(),)
    )
    back = cloudpickle.loads(cloudpickle.dumps(config))
    assert back.spec == spec and back.tasks == config.tasks and back.data == DATA
    back.hooks[0].on_epoch_start(EpochStart(epoch=1, rank=0, world_size=2, resumed_from=None))
    assert back.hooks[0].events == [EpochStart(1, 0, 2, None)]
