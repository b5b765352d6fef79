"""The per-worker training loop Ray Train runs (DDP or DeepSpeed, CPU or GPU), or a single-worker model's in-process run.

Everything a worker needs arrives in one :class:`~flotilla.training.config.WorkerConfig`: the
validated spec and tasks, the pinned :class:`DataRef`, the transfer parent, the worker hooks, and an
object-store reference to the hub credentials (so the secret never sits in anything Ray pickles or
displays). Data is read through the hub on whichever node the worker runs; checkpoints go to Ray's
storage, which flotilla points at the run's own hub branch.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from flotilla.data.loader import HubDataset
from flotilla.errors import SpecError
from flotilla.models.family import MultiTaskModel, device_losses
from flotilla.models.metrics import MetricAccumulator
from flotilla.registry.address import ModelLocation
from flotilla.training.artifacts import read_model_bytes
from flotilla.training.environment import capture_environment
from flotilla.training.feed import device_batches
from flotilla.training.hooks import EpochStart
from flotilla.training.session import RayTrainSession
from flotilla.training.tracking import start_tracking

if TYPE_CHECKING:
    from flotilla.specs import FamilySpec
    from flotilla.training.config import WorkerConfig
    from flotilla.training.session import Session

CKPT_MODEL = "model.pt"
CKPT_STATE = "train_state.pt"
CKPT_META = "meta.json"


def unwrap(model: torch.nn.Module) -> Any:
    """The model inside a DDP or DeepSpeed wrapper (the model itself when unwrapped)."""
    return getattr(model, "module", model)


def lr_lambda(spec: FamilySpec, steps_per_epoch: int) -> Callable[[int], float]:
    """The spec's schedule as the factor of the peak lr at each step (for ``LambdaLR``)."""
    total = max(1, spec.epochs * steps_per_epoch)
    warm = int(spec.optim.warmup_epochs * steps_per_epoch)

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if spec.optim.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total - warm))
        if spec.optim.schedule == "onecycle":
            if warm:  # the warm-up was the ramp: fall from the peak it reached, with no jump back down
                return max(0.02, 1.0 - progress)
            # up from 0.3 to 1.0 over the first 30 %, then down to 0.02 over the rest, with no jump at the peak
            return max(0.02, 1.0 - (progress - 0.3) / 0.7) if progress > 0.3 else 0.3 + progress * (0.7 / 0.3)
        return 0.5 * (1 + math.cos(math.pi * progress))

    return f


def build_optimizer(spec: Any, model: Any) -> torch.optim.Optimizer:
    """The spec's optimiser over the model's parameter groups (no weight decay on norms and biases)."""
    groups = model.param_groups(lr=spec.optim.lr, weight_decay=spec.optim.weight_decay)
    if spec.optim.name == "sgd":
        return torch.optim.SGD(groups, lr=spec.optim.lr, momentum=spec.optim.momentum)
    return torch.optim.AdamW(groups, lr=spec.optim.lr)


def deepspeed_config(spec: Any, use_gpu: bool) -> dict[str, Any]:
    ds = spec.deepspeed
    dtype = ds.dtype
    if dtype == "auto":
        dtype = "bf16" if use_gpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": spec.batch_size,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": ds.stage},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if ds.offload_optimizer:
        cfg["zero_optimization"]["offload_optimizer"] = {"device": "cpu"}
        # the optimiser is flotilla's own torch one (AdamW/SGD from the spec); DeepSpeed >= 0.8.3 refuses
        # any but its CPU Adam under offload unless told not to force it
        cfg["zero_force_ds_cpu_optimizer"] = False
    if dtype == "bf16":
        cfg["bf16"] = {"enabled": True}
    elif dtype == "fp16":
        cfg["fp16"] = {"enabled": True}
    if dtype in ("bf16", "fp16"):
        # DeepSpeed >= 0.18 casts parameters only and leaves buffers in fp32; BatchNorm then meets bf16
        # weights with fp32 running statistics and refuses to run. Buffers follow the weights, as the
        # blanket module.bfloat16() of older DeepSpeed did.
        cfg["data_types"] = {"buffer_dtype": dtype}
    return cfg


def load_parent(model: Any, parent: ModelLocation | None, creds: Any, *, heads: bool = False) -> None:
    """Warm-start ``model`` from the run's transfer parent (a no-op without one); its heads too if ``heads``.

    Public because the driver runs it too, once, before any worker starts (``training.run``'s
    ``check_parent_fits``): a parent that does not fit fails there as a SpecError instead of in
    every worker, retried. ``strict=True`` so a width or backbone mismatch is an error, not a
    silently half-loaded backbone.
    """
    if parent is None:
        return
    blob = read_model_bytes(parent.repo, parent.commit, parent.path, creds)
    try:
        weights = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)["state"]
    except Exception as exc:  # a card, metrics or train-state file, an empty object, another tool's torch file
        # torch's own text would advise weights_only=False: never for a file from the hub
        raise SpecError(
            f"transfer.source lakefs://{parent.repo}/{parent.commit[:12]}/{parent.path} is not a flotilla model checkpoint "
            f"({type(exc).__name__}: "
            f"{'no state dict in it' if isinstance(exc, (KeyError, TypeError)) else 'not loadable as weights'})",
            hint="point it at a model.pt that flotilla published (lakefs://<repo>/<ref>/models/<run>/<model>/model.pt) "
            "or give the run id",
        ) from None
    model.load_backbone(weights, strict=True)
    if heads:
        model.load_heads(weights)


def build_model(spec: Any, tasks: Any) -> Any:
    """The family's model as the spec describes it (the workers and bench/gpu_train.py build it here)."""
    return MultiTaskModel(
        tasks,
        spec.model.backbone,
        width=spec.model.width,
        head_hidden=spec.model.head_hidden,
        dropout=spec.model.dropout,
        weighting=spec.weighting,
    )


def train_step(
    net: Any, engine: Any, optimizer: Any, core: Any, batch: dict[str, Any], tasks: Any, device: Any, frozen: bool = False
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One optimisation step on one batch, under DDP/plain torch (``engine`` None) or DeepSpeed.

    Its own function so that ``bench/gpu_train.py`` times the very step the workers run. Returns the
    loss, each task's masked-mean loss and each task's labelled count, all on the device, unread: the
    step never waits for the GPU (see :func:`add_batch`).
    """
    out = net(torch.as_tensor(batch["image"], device=device))
    loss, per_task, labelled = device_losses(out, batch, tasks, core.loss_weighting)
    if engine is not None:
        engine.backward(loss)
        engine.step()
    else:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if frozen:  # DDP-safe freeze: gradients still flow through DDP, but the backbone never moves
            for p in core.backbone.parameters():
                p.grad = None
        optimizer.step()
    return loss, per_task, labelled


def train_loop_per_worker(config: WorkerConfig, session: Session | None = None) -> None:
    """One worker's share of the run: ``train_model`` binds ``config`` to it (``functools.partial``).

    Bound rather than passed as Ray's ``train_loop_config``: Ray Train copies that dict, made JSON-safe,
    into the run state its dashboard and exports show; the typed config never enters it. ``session``
    is where it runs: a Ray Train worker (the default) or the calling process
    (:mod:`flotilla.training.inprocess`).
    """
    import ray

    session = session or RayTrainSession()
    rank, world = session.rank, session.world
    spec, tasks = config.spec, list(config.tasks)
    torch.manual_seed(spec.seed)
    np.random.seed(spec.seed)
    torch.set_num_threads(max(1, round(spec.scaling.cpus_per_worker)))
    creds = ray.get(config.credentials)
    data = HubDataset(config.data, creds, image_size=spec.data.image_size)

    model = build_model(spec, tasks)
    load_parent(model, config.parent, creds, heads=bool(spec.transfer and spec.transfer.load_heads))
    start_epoch, history = 0, []
    resumed_from = None
    ckpt = session.get_checkpoint()
    train_state = None
    if ckpt:
        with ckpt.as_directory() as d:
            saved = torch.load(Path(d) / CKPT_MODEL, map_location="cpu", weights_only=True)
            model.load_state_dict(saved["state"])
            meta = json.loads((Path(d) / CKPT_META).read_text())
            start_epoch, history = meta["epoch"] + 1, meta["history"]
            resumed_from = meta["epoch"]
            if (Path(d) / CKPT_STATE).exists():
                train_state = torch.load(Path(d) / CKPT_STATE, map_location="cpu", weights_only=True)

    optimizer = build_optimizer(spec, model)
    per_rank = sum(len(r) // world for r in data._split_rows("train"))
    steps_per_epoch = max(1, math.ceil(per_rank / spec.batch_size))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(spec, steps_per_epoch))
    if train_state is not None:
        restore_train_state(optimizer, scheduler, train_state)
    if spec.backend == "deepspeed":
        import deepspeed

        # DeepSpeed broadcasts parameters as raw bytes, which needs contiguous (not channels_last) storage
        model = model.to(memory_format=torch.contiguous_format)
        engine, optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, config=deepspeed_config(spec, spec.scaling.use_gpu)
        )
        net, device = engine, engine.device
    else:
        net = session.prepare_model(model)
        device = session.device()
        engine = None
    core = unwrap(net)
    environment = capture_environment(world, spec.backend, device).to_dict() if rank == 0 else None  # for the card

    tracker = start_tracking(config) if rank == 0 else None
    tracked = tracker.record if tracker is not None else None  # for the card, through the checkpoint
    freeze_epochs = spec.transfer.freeze_backbone_epochs if spec.transfer else 0
    for epoch in range(start_epoch, spec.epochs):
        for hook in config.hooks:
            hook.on_epoch_start(EpochStart(epoch, rank, world, resumed_from))
        frozen = epoch < freeze_epochs
        net.train()
        if frozen:  # BN statistics of a frozen backbone stay as the parent left them
            core.backbone.eval()
        t0 = time.perf_counter()
        sums: dict[str, Any] = {}
        counts: dict[str, Any] = {}
        for batch in device_batches(
            data, device, "train", spec.batch_size, seed=spec.seed, epoch=epoch, rank=rank, world_size=world
        ):
            if session.stop_requested():
                return  # the session raises its stop where the run waits for it next (the fit)
            loss, per_task, labelled = train_step(net, engine, optimizer, core, batch, tasks, device, frozen=frozen)
            scheduler.step()
            add_batch(sums, counts, loss, per_task, labelled, len(batch["image"]))
        train_time = time.perf_counter() - t0
        sums, counts = all_ranks(sums, counts, ["loss"] + [t.name for t in tasks], world, device)
        metrics: dict[str, Any] = {"epoch": epoch, **train_metrics(sums, counts, train_time)}
        # every rank evaluates, and rank 0 saves, with rank 0's BatchNorm statistics
        sync_buffers(core, world)
        # DDP's wrapper may broadcast buffers on a forward: ranks with different numbers of validation
        # batches must not call it, so they evaluate the plain module (DeepSpeed's ZeRO <= 2 forward is local)
        metrics.update(evaluate(core if engine is None else net, data, tasks, spec.batch_size, rank, world, device))
        metrics["epoch_s"] = time.perf_counter() - t0  # train + validation: what a trial's overhead is measured against
        metrics["resumed_from_epoch"] = -1 if resumed_from is None else resumed_from
        metrics["placement_group"] = session.placement_group()
        metrics["worker_pid"] = os.getpid()  # which process trained it: a sweep's trial, or a Ray Train worker
        history.append(metrics)
        if tracker is not None:
            tracker.log(metrics, step=epoch)
        report_epoch(
            metrics, history, epoch, core, optimizer if engine is None else None, scheduler, rank, session, environment, tracked
        )
    if tracker is not None:
        tracker.finish()


def restore_train_state(optimizer: torch.optim.Optimizer, scheduler: Any, train_state: dict[str, Any]) -> None:
    """Put a resumed run's optimiser and schedule back where the checkpoint left them.

    Under DeepSpeed the checkpoint has no optimiser state (ZeRO partitions it), and
    ``LambdaLR.load_state_dict`` restores only the scheduler's counters: the param groups would keep the
    lr of step 0 (the peak, for cosine) for the first resumed step. So every group's lr is set from the
    schedule, on both backends (under DDP the loaded optimiser already holds the same values).
    """
    if train_state.get("optimizer") is not None:  # None under DeepSpeed: ZeRO keeps it partitioned
        optimizer.load_state_dict(train_state["optimizer"])
    scheduler.load_state_dict(train_state["scheduler"])
    for group, lr in zip(optimizer.param_groups, scheduler.get_last_lr(), strict=True):
        group["lr"] = lr


def sync_buffers(module: torch.nn.Module, world: int) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics), in place.

    Neither backend keeps buffers equal: DeepSpeed broadcasts parameters once at start-up and never
    buffers, so each rank's statistics follow its own data shard; DDP's last forward still updates them
    locally. Each rank then evaluated its validation share with its own statistics while only rank 0's
    were saved, so ``val/*`` (best checkpoint, card, commit metadata) described no saved model.
    Broadcast from rank 0 rather than averaging: rank 0's buffers are the ones the checkpoint holds,
    so the model evaluated is exactly the model saved (and a plain average of running variances is
    not the variance of the union anyway). Every rank must call it, in the same place.
    """
    import torch.distributed as dist

    if world <= 1 or not dist.is_initialized():
        return
    for buf in module.buffers():
        dist.broadcast(buf, src=0)


def add_batch(
    sums: dict[str, Any],
    counts: dict[str, Any],
    loss: torch.Tensor,
    per_task: Mapping[str, torch.Tensor | float],
    labelled: Mapping[str, torch.Tensor | int],
    n: int,
) -> None:
    """Add one batch to the epoch's training sums, in place, on the loss's device (no host sync).

    The total loss is weighted by the batch's samples, each task's masked-mean loss by that task's
    labelled samples in the batch: with mixed-label data (emotion-only images with no age) a batch-size
    weight would scale ``train/age_loss`` down by the labelled fraction. Sums are float64 tensors
    (as the Python floats they replace), read once per epoch by :func:`all_ranks`.
    """
    sums["loss"] = sums.get("loss", 0.0) + loss.detach().double() * n
    counts["loss"] = counts.get("loss", 0) + n
    for k, v in per_task.items():
        c = labelled[k]
        sums[k] = sums.get(k, 0.0) + (v.double() * c if isinstance(v, torch.Tensor) else v * c)
        counts[k] = counts.get(k, 0) + c


def train_metrics(sums: dict[str, float], counts: dict[str, int], train_time: float) -> dict[str, float]:
    """``train/loss``, ``train/<task>_loss`` and ``train/samples_per_s`` from the epoch's (all-rank) sums.

    A task no sample of the epoch was labelled for reads 0, as the loss it contributed.
    """
    metrics = {"train/samples_per_s": counts.get("loss", 0) / max(train_time, 1e-9)}
    metrics.update({"train/loss" if k == "loss" else f"train/{k}_loss": v / max(1, counts.get(k, 0)) for k, v in sums.items()})
    return metrics


def all_ranks(
    sums: Mapping[str, Any], counts: Mapping[str, Any], keys: list[str], world: int, device: Any
) -> tuple[dict[str, float], dict[str, int]]:
    """Every rank's weighted training sums added up, and the samples each covers, as numbers.

    Only rank 0's report reaches Ray, so without this ``train/*`` described rank 0's shard alone.
    One all-reduce per epoch over a fixed key list, sums and counts in one tensor (every rank sends
    the same shape even if it saw no batch); reading it is the epoch's one wait for the device.
    """
    import torch.distributed as dist

    def as64(x: Any) -> torch.Tensor:
        return (
            x.to(device=device, dtype=torch.float64)
            if isinstance(x, torch.Tensor)
            else torch.tensor(float(x), dtype=torch.float64, device=device)
        )

    t = torch.stack([as64(sums.get(k, 0.0)) for k in keys] + [as64(counts.get(k, 0)) for k in keys])
    if world > 1 and dist.is_initialized():
        dist.all_reduce(t)
    values = t.tolist()
    return dict(zip(keys, values[: len(keys)], strict=True)), {
        k: round(v) for k, v in zip(keys, values[len(keys) :], strict=True)
    }


def evaluate(net: Any, data: Any, tasks: Any, batch_size: int, rank: int, world: int, device: Any) -> dict[str, float]:
    """``val/*``: every validation sample scored on exactly one rank, the ranks' tallies merged."""
    import torch.distributed as dist

    acc = MetricAccumulator(tasks)
    net.eval()
    with torch.no_grad():
        # every validation sample on exactly one rank: metrics do not depend on the number of workers
        for batch in data.iter_batches("val", batch_size, shuffle=False, rank=rank, world_size=world, equal=False):
            acc.update(net(torch.as_tensor(batch["image"], device=device)), batch)
    states: list[Any] = [acc.state()]
    if world > 1 and dist.is_initialized():
        states = [None] * world
        dist.all_gather_object(states, acc.state())
    merged = MetricAccumulator.from_states(tasks, states).compute()
    return {f"val/{k}": float(v) for k, v in merged.items()}


def report_epoch(
    metrics: dict[str, Any],
    history: list[dict[str, Any]],
    epoch: int,
    core: Any,
    optimizer: Any,
    scheduler: Any,
    rank: int,
    train: Any,
    environment: dict[str, Any] | None = None,
    tracking: dict[str, Any] | None = None,
) -> None:
    """Report the epoch to the session (``train``: a :class:`~flotilla.training.session.Session`); rank 0
    attaches the checkpoint.

    The checkpoint holds the weights, the schedule's position, the optimiser when rank 0 has all of
    it (``optimizer`` None under DeepSpeed), the history so far, the environment it trained in and
    its W&B run (``tracking``, :attr:`~flotilla.training.tracking.Tracker.record`).
    """
    if rank != 0:
        train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        torch.save({"config": core.config(), "state": core.state_dict()}, Path(d) / CKPT_MODEL)
        # the schedule's position always (a restart must not replay warm-up); the optimiser's moments when
        # rank 0 holds them all (DDP), not under DeepSpeed, whose ZeRO partitions them across ranks
        state = {"optimizer": None if optimizer is None else optimizer.state_dict(), "scheduler": scheduler.state_dict()}
        torch.save(state, Path(d) / CKPT_STATE)
        (Path(d) / CKPT_META).write_text(
            json.dumps({"epoch": epoch, "history": history, "environment": environment, "tracking": tracking}, default=float)
        )
        train.report(metrics, checkpoint=train.Checkpoint.from_directory(d))
