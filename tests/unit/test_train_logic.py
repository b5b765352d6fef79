"""Training logic: the learning-rate schedules, what the DeepSpeed spec accepts, the per-epoch sums over ranks."""

from __future__ import annotations

import itertools

import pytest

from flotilla.data.schema import FACE_SCHEMA, LabelColumn
from flotilla.errors import SpecError
from flotilla.specs import FamilySpec, check_tasks_fit, parse_spec
from flotilla.training.loop import lr_lambda


def _family(**over) -> FamilySpec:
    return parse_spec(FamilySpec, {"name": "f", **over})


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "constant"])
def test_schedules_never_jump_between_steps(schedule: str) -> None:
    f = lr_lambda(_family(epochs=10, optim={"schedule": schedule, "warmup_epochs": 1}), steps_per_epoch=100)
    factors = [f(step) for step in range(1000)]
    steps = [abs(b - a) for a, b in itertools.pairwise(factors)]
    assert max(steps) < 0.02, (schedule, max(steps), steps.index(max(steps)))
    assert all(0.0 <= x <= 1.0 for x in factors)


def test_onecycle_rises_to_its_peak_then_falls_to_its_floor() -> None:
    f = lr_lambda(_family(epochs=10, optim={"schedule": "onecycle"}), steps_per_epoch=100)
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
    from flotilla.training.loop import CKPT_STATE, report_epoch

    saved = []

    def from_directory(d):
        dest = tmp_path / f"ckpt{len(saved)}"
        shutil.copytree(d, dest)  # the directory is temporary: keep what was written
        saved.append(dest)

    sink = SimpleNamespace(
        report=lambda metrics, checkpoint=None: None, Checkpoint=SimpleNamespace(from_directory=from_directory)
    )
    model = MultiTaskModel(resolve_tasks(["age"]), "small_cnn", width=4)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (step + 1))
    for _ in range(3):
        opt.step()
        sched.step()
    report_epoch({}, [], 0, model, opt, sched, 0, sink)  # DDP: rank 0 holds the whole optimiser
    report_epoch({}, [], 0, model, None, sched, 0, sink)  # DeepSpeed: ZeRO keeps it partitioned
    ddp, ds = (torch.load(d / CKPT_STATE, weights_only=True) for d in saved)
    assert ddp["optimizer"] is not None and ddp["scheduler"]["last_epoch"] == 3
    assert ds["optimizer"] is None and ds["scheduler"]["last_epoch"] == 3


def test_a_task_on_a_column_the_dataset_lacks_parses_but_is_refused_against_its_schema() -> None:
    # a spec may name any column (datasets declare their own); the data's schema decides, when a run pins it
    family = _family(tasks=["age", {"name": "smile", "kind": "binary", "label": "smile"}])
    with pytest.raises(SpecError) as err:
        check_tasks_fit(family.task_specs(), FACE_SCHEMA, "faces")
    assert "task 'smile' reads label column 'smile', which dataset 'faces' does not declare" in err.value.message
    assert "age (regression), gender (binary: female, male)" in (err.value.hint or "")
    smiles = FACE_SCHEMA.extended(LabelColumn("smile", "binary", classes=("no", "yes")))
    check_tasks_fit(family.task_specs(), smiles, "smiles")
    assert len(_family(tasks=["age", {"name": "age_l2", "label": "age", "kind": "regression", "loss": "mse"}]).tasks) == 2


def _on_ranks(target, world: int = 2) -> dict[int, object]:
    """Run ``target(rank, world, port, queue)`` in ``world`` spawned processes; what each rank put, by rank."""
    import torch.multiprocessing as mp

    from flotilla.hub.server import free_port

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=target, args=(r, world, port, queue)) for r in range(world)]
    for p in procs:
        p.start()
    got = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return got


def _sum_on_rank(rank: int, world: int, port: int, queue) -> None:
    import torch.distributed as dist

    from flotilla.training.loop import all_ranks

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        # rank 0 saw 3 samples of mean loss 1.0 (2 with an age label, mean 0.75); rank 1 saw 5 of mean
        # loss 3.0 and no "age" key at all
        sums, counts = ({"loss": 3.0, "age": 1.5}, {"loss": 3, "age": 2}) if rank == 0 else ({"loss": 15.0}, {"loss": 5})
        queue.put((rank, all_ranks(sums, counts, ["loss", "age"], world, "cpu")))
    finally:
        dist.destroy_process_group()


def test_train_sums_cover_every_rank() -> None:
    """A real two-process gloo group: both ranks get the totals, so train/loss is the mean over all samples."""
    got = _on_ranks(_sum_on_rank)
    for rank in (0, 1):
        sums, counts = got[rank]
        assert counts == {"loss": 8, "age": 2} and sums == {"loss": 18.0, "age": 1.5}
    assert sums["loss"] / counts["loss"] == pytest.approx(2.25)  # (3 x 1.0 + 5 x 3.0) / 8, not rank 0's 1.0


def test_one_rank_sums_are_its_own() -> None:
    from flotilla.training.loop import all_ranks

    assert all_ranks({"loss": 4.0}, {"loss": 2}, ["loss", "age"], 1, "cpu") == ({"loss": 4.0, "age": 0.0}, {"loss": 2, "age": 0})


def test_a_task_labelled_on_some_samples_reads_its_labelled_sample_mean() -> None:
    """Mixed-label data: age on 3 of 4 samples, then on none; train/age_loss is the mean over those 3."""
    import numpy as np
    import torch

    from flotilla.models import MultiTaskModel
    from flotilla.models.family import compute_losses, elementwise_loss, task_target
    from flotilla.models.tasks import resolve_tasks
    from flotilla.training.loop import add_batch, all_ranks, train_metrics

    torch.manual_seed(0)
    tasks = resolve_tasks(["age", "emotion"])
    model = MultiTaskModel(tasks, "small_cnn", width=4).eval()
    rng = np.random.default_rng(0)
    sums, counts, labelled_losses, emotion_losses, totals = {}, {}, [], [], []
    for mask_age in ([True, True, True, False], [False] * 4):
        batch = {
            "image": rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8),
            "age": rng.uniform(1, 90, 4).astype(np.float32),
            "mask_age": np.array(mask_age),
            "emotion": rng.integers(0, 7, 4).astype(np.int64),
        }
        with torch.no_grad():
            out = model(torch.as_tensor(batch["image"]))
            loss, per_task, labelled = compute_losses(out, batch, model.tasks, return_counts=True)
            for task, kept in ((tasks[0], labelled_losses), (tasks[1], emotion_losses)):
                target, mask = task_target(task, batch, out[task.name].device)
                kept += elementwise_loss(task, out[task.name], target)[mask].tolist()
        totals += [float(loss)] * 4
        add_batch(sums, counts, loss, per_task, labelled, 4)
    assert counts == {"loss": 8, "age": 3, "emotion": 8}
    metrics = train_metrics(*all_ranks(sums, counts, ["loss", "age", "emotion"], 1, "cpu"), train_time=2.0)
    assert metrics["train/age_loss"] == pytest.approx(np.mean(labelled_losses), rel=1e-5)
    assert metrics["train/emotion_loss"] == pytest.approx(np.mean(emotion_losses), rel=1e-5)
    assert metrics["train/loss"] == pytest.approx(np.mean(totals), rel=1e-5)  # the total stays sample-weighted
    assert metrics["train/samples_per_s"] == pytest.approx(4.0)


def test_sums_kept_on_the_device_give_the_metrics_the_per_step_floats_gave() -> None:
    """The loop adds device tensors (no host sync per step); the epoch's metrics equal the float path's."""
    import numpy as np
    import torch

    from flotilla.models import MultiTaskModel
    from flotilla.models.family import compute_losses, device_losses
    from flotilla.models.tasks import resolve_tasks
    from flotilla.training.loop import add_batch, all_ranks, train_metrics

    torch.manual_seed(0)
    model = MultiTaskModel(resolve_tasks(["age", "emotion"]), "small_cnn", width=4).eval()
    rng = np.random.default_rng(1)
    on_device: tuple[dict, dict] = ({}, {})
    as_floats: tuple[dict, dict] = ({}, {})
    for n in (5, 3, 6):
        batch = {
            "image": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
            "age": rng.uniform(1, 90, n).astype(np.float32),
            "mask_age": rng.random(n) < 0.6,
            "emotion": rng.integers(0, 7, n).astype(np.int64),
        }
        with torch.no_grad():
            out = model(torch.as_tensor(batch["image"]))
            loss, per_task, labelled = device_losses(out, batch, model.tasks)
            assert all(isinstance(v, torch.Tensor) for v in [*per_task.values(), *labelled.values()])
            add_batch(*on_device, loss, per_task, labelled, n)
            add_batch(*as_floats, *compute_losses(out, batch, model.tasks, return_counts=True), n)  # type: ignore[call-arg]
    assert isinstance(on_device[0]["age"], torch.Tensor)  # nothing read back yet
    keys = ["loss", "age", "emotion"]
    got = train_metrics(*all_ranks(*on_device, keys, 1, "cpu"), train_time=1.0)
    want = train_metrics(*all_ranks(*as_floats, keys, 1, "cpu"), train_time=1.0)
    assert got.keys() == want.keys() and all(isinstance(v, float) for v in got.values())
    assert got == pytest.approx(want, rel=1e-12)


def test_a_resumed_optimiser_without_its_state_runs_at_the_schedules_lr() -> None:
    """DeepSpeed's case: the checkpoint holds the schedule but no optimiser; step 25 of a cosine
    schedule must not restart at the peak lr of step 0."""
    import torch

    from flotilla.models import MultiTaskModel
    from flotilla.models.tasks import resolve_tasks
    from flotilla.training.loop import build_optimizer, restore_train_state

    spec = _family(epochs=4, optim={"schedule": "cosine", "warmup_epochs": 1, "lr": 0.1})
    f = lr_lambda(spec, steps_per_epoch=10)

    def fresh():
        opt = build_optimizer(spec, MultiTaskModel(resolve_tasks(["age"]), "small_cnn", width=4))
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, f)

    opt, sched = fresh()
    for _ in range(25):
        opt.step()
        sched.step()
    expected = [0.1 * f(25)] * len(opt.param_groups)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx(expected) and f(25) < 0.9
    for saved_optimizer in (None, opt.state_dict()):  # DeepSpeed, then DDP (which has always worked)
        resumed, resumed_sched = fresh()
        restore_train_state(resumed, resumed_sched, {"optimizer": saved_optimizer, "scheduler": sched.state_dict()})
        assert [g["lr"] for g in resumed.param_groups] == pytest.approx(expected)
        assert resumed_sched.last_epoch == 25


def _bn_on_rank(rank: int, world: int, port: int, queue) -> None:
    import torch
    import torch.distributed as dist

    from flotilla.models import MultiTaskModel
    from flotilla.models.tasks import resolve_tasks
    from flotilla.training.loop import sync_buffers

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # the same weights on every rank, as after DeepSpeed's start-up broadcast
        model = MultiTaskModel(resolve_tasks(["age"]), "small_cnn", width=4).train()
        torch.manual_seed(100 + rank)  # each rank's own shard moves its own running statistics
        with torch.no_grad():
            model(torch.randint(0, 256, (8, 64, 64, 3), dtype=torch.uint8) // (rank + 1))
        # plain lists: a tensor would cross the queue as shared memory that dies with this process
        before = {k: v.tolist() for k, v in model.state_dict().items() if "running" in k}
        sync_buffers(model, world)
        after = {k: v.tolist() for k, v in model.state_dict().items() if "running" in k}
        queue.put((rank, (before, after)))
    finally:
        dist.destroy_process_group()


def test_every_rank_evaluates_with_rank_0s_batchnorm_statistics() -> None:
    """A real two-process gloo group: BN running stats that differ per rank all equal rank 0's after sync."""
    got = _on_ranks(_bn_on_rank)
    (before0, after0), (before1, after1) = got[0], got[1]
    assert before0 and set(before0) == set(before1)
    assert any(before0[k] != before1[k] for k in before0), "the ranks' statistics did not differ"
    for k in before0:
        assert after0[k] == before0[k] and after1[k] == before0[k], k


def test_fractional_gpus_with_several_workers_are_refused_and_allowed_for_one() -> None:
    base = {"name": "g", "data": {"repo": "rep", "dataset": "d"}}
    with pytest.raises(SpecError, match="NCCL refuses"):
        parse_spec(FamilySpec, {**base, "scaling": {"workers": 2, "use_gpu": True, "gpus_per_worker": 0.5}})
    one = parse_spec(FamilySpec, {**base, "scaling": {"workers": 1, "use_gpu": True, "gpus_per_worker": 0.5}})
    assert one.scaling.gpus_per_worker == 0.5
    assert parse_spec(FamilySpec, {**base, "scaling": {"workers": 2, "use_gpu": True, "gpus_per_worker": 1}}).scaling.workers == 2


def test_optimizer_offload_is_refused_below_zero_2_and_configured_for_a_torch_optimizer() -> None:
    from flotilla.training.loop import deepspeed_config

    base = {"name": "o", "data": {"repo": "rep", "dataset": "d"}, "backend": "deepspeed"}
    with pytest.raises(SpecError, match="offload_optimizer needs ZeRO stage 2"):
        parse_spec(FamilySpec, {**base, "deepspeed": {"stage": 1, "offload_optimizer": True}})
    cfg = deepspeed_config(parse_spec(FamilySpec, {**base, "deepspeed": {"stage": 2, "offload_optimizer": True}}), use_gpu=False)
    assert cfg["zero_optimization"]["offload_optimizer"] == {"device": "cpu"} and cfg["zero_force_ds_cpu_optimizer"] is False
