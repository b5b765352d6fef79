"""Training logic: the learning-rate schedules, what the DeepSpeed spec accepts, the per-epoch sums over ranks."""

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


def _sum_on_rank(rank: int, world: int, port: int, queue) -> None:
    import torch.distributed as dist

    from flotilla.train.loop import all_ranks

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        # rank 0 saw 3 samples of mean loss 1.0, rank 1 saw 5 of mean loss 3.0 and no "age" key at all
        sums = {"loss": 3.0, "age": 1.5} if rank == 0 else {"loss": 15.0}
        queue.put((rank, all_ranks(sums, 3 if rank == 0 else 5, ["loss", "age"], world, "cpu")))
    finally:
        dist.destroy_process_group()


def test_train_sums_cover_every_rank() -> None:
    """A real two-process gloo group: both ranks get the totals, so train/loss is the mean over all samples."""
    import torch.multiprocessing as mp

    from flotilla.hub.server import free_port

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_sum_on_rank, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    got = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for rank in (0, 1):
        sums, n = got[rank]
        assert n == 8 and sums == {"loss": 18.0, "age": 1.5}
    assert sums["loss"] / n == pytest.approx(2.25)  # (3 x 1.0 + 5 x 3.0) / 8, not rank 0's 1.0


def test_one_rank_sums_are_its_own() -> None:
    from flotilla.train.loop import all_ranks

    assert all_ranks({"loss": 4.0}, 2, ["loss", "age"], 1, "cpu") == ({"loss": 4.0, "age": 0.0}, 2)
