"""Pure training logic: the learning-rate schedules and what the DeepSpeed spec accepts."""

from __future__ import annotations

import pytest

from flotilla.errors import SpecError
from flotilla.specs import FamilySpec, parse_spec
from flotilla.train.loop import _lr_lambda


def _family(**over) -> FamilySpec:
    return parse_spec(FamilySpec, {"name": "f", **over})


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "constant"])
def test_schedules_never_jump_between_steps(schedule: str) -> None:
    f = _lr_lambda(_family(epochs=10, optim={"schedule": schedule, "warmup_epochs": 1}), steps_per_epoch=100)
    factors = [f(step) for step in range(1000)]
    steps = [abs(b - a) for a, b in zip(factors, factors[1:])]
    assert max(steps) < 0.02, (schedule, max(steps), steps.index(max(steps)))
    assert all(0.0 <= x <= 1.0 for x in factors)


def test_onecycle_rises_to_its_peak_then_falls_to_its_floor() -> None:
    f = _lr_lambda(_family(epochs=10, optim={"schedule": "onecycle"}), steps_per_epoch=100)
    assert f(0) == pytest.approx(0.3) and f(300) == pytest.approx(1.0, abs=1e-3)
    assert f(999) == pytest.approx(0.02, abs=0.01) and f(650) == pytest.approx(0.5, abs=0.01)


def test_zero_stage_3_is_refused_with_the_reason_and_the_alternative() -> None:
    with pytest.raises(SpecError) as err:
        _family(backend="deepspeed", deepspeed={"stage": 3})
    text = str(err.value) + " ".join(err.value.problems or [])
    assert "stage 3 is not supported" in text and "use stage 2" in text
    assert _family(backend="deepspeed", deepspeed={"stage": 2}).deepspeed.stage == 2


def test_a_checkpoint_always_holds_the_schedule_and_the_optimiser_only_when_rank_0_has_it_all(tmp_path) -> None:
    import shutil
    from types import SimpleNamespace

    import torch

    from flotilla.models import MultiTaskModel
    from flotilla.models.tasks import resolve_tasks
    from flotilla.train.loop import CKPT_STATE, _report

    saved = []

    def from_directory(d):
        dest = tmp_path / f"ckpt{len(saved)}"
        shutil.copytree(d, dest)  # the directory is temporary: keep what was written
        saved.append(dest)

    sink = SimpleNamespace(report=lambda metrics, checkpoint=None: None, Checkpoint=SimpleNamespace(from_directory=from_directory))
    model = MultiTaskModel(resolve_tasks(["age"]), "small_cnn", width=4)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (step + 1))
    for _ in range(3):
        opt.step()
        sched.step()
    _report({}, [], 0, model, opt, sched, 0, sink)  # DDP: rank 0 holds the whole optimiser
    _report({}, [], 0, model, None, sched, 0, sink)  # DeepSpeed: ZeRO keeps it partitioned
    ddp, ds = (torch.load(d / CKPT_STATE, weights_only=True) for d in saved)
    assert ddp["optimizer"] is not None and ddp["scheduler"]["last_epoch"] == 3
    assert ds["optimizer"] is None and ds["scheduler"]["last_epoch"] == 3


def test_a_task_reading_a_label_column_hub_datasets_lack_is_refused_when_the_spec_is_parsed() -> None:
    with pytest.raises(SpecError) as err:
        _family(tasks=["age", {"name": "smile", "kind": "binary", "label": "smile"}])
    assert "label column 'smile'" in " ".join(err.value.problems) and "age, gender, emotion" in " ".join(err.value.problems)
    assert len(_family(tasks=["age", {"name": "age_l2", "label": "age", "kind": "regression", "loss": "mse"}]).tasks) == 2
