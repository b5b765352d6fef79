"""The face family's training step on one GPU: fp32 against bf16 DeepSpeed, with the CPU beside them.

What a GPU check has to show, measured side by side in one process on one machine:

1. **Throughput** of flotilla's own step (``flotilla.training.loop.train_step``, the function the
   Ray Train workers run), in samples/s after a warm-up, for
   - ``cpu fp32``: every core of the machine, the reference;
   - ``gpu fp32``: the ``ddp`` backend at one worker (Ray's ``prepare_model`` leaves a single
     worker unwrapped, so this is exactly its step);
   - ``gpu ds-bf16``: the ``deepspeed`` backend, ZeRO-2, with the config ``deepspeed_config``
     builds for ``dtype: auto`` on a bf16 GPU;
   for the reference model (small_cnn width 32, batch 128) and a GPU-sized one (resnet width 64,
   batch 512).
2. **bf16 learns as fp32 does**: both GPU arms train the same epochs with the spec's schedule
   from the same initial weights on the same batches, and are validated with the loop's own
   ``evaluate``; two seeds show how far two fp32 runs would differ anyway.
3. **A bf16 checkpoint serves on CPU**: the engine's weights, saved as the loop saves them and
   loaded into a fresh fp32 model on CPU, predict what the engine predicts (to bf16 rounding).

4. **The data path keeps the GPU busy** (``--ray-train``, issue 21): N faces ingested into a private
   hub, then one Ray Train worker with one GPU trains the resnet (width 64, batch 512, 64 px) through
   flotilla's own loader (``HubDataset``: decoded cache, prefetch thread, pinned batches) and step
   (``device_batches``, ``train_step``, ``add_batch``), and reports each epoch's samples/s and the GPU
   busy fraction (``nvidia-smi``'s utilization, sampled every 50 ms over the epoch). Epoch 0 builds
   the decoded cache; later epochs are warm. Goal: busy >= 90 %.

Not part of the test suite (CI has no GPU). Prints a table and the ratios last; ``--out`` also
writes the figures as JSON.

    python bench/gpu_train.py --out gpu.json                       # on a GPU machine
    python bench/gpu_train.py --ray-train --n 32768                # on a GPU machine: the data path
    python bench/gpu_train.py --device cpu --n 1024 --steps 3 --epochs 1   # dry run, no GPU
    python bench/gpu_train.py --ray-train --device cpu --n 2048 --epochs 2  # dry run of the data path
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
try:
    import flotilla  # noqa: F401
except ImportError:  # a checkout without the package installed (e.g. a bare GPU machine)
    sys.path.insert(0, str(ROOT / "platform"))

from flotilla.data.synthetic import generate  # noqa: E402
from flotilla.models.family import MultiTaskModel  # noqa: E402
from flotilla.specs import load_family_spec  # noqa: E402
from flotilla.training.loop import (  # noqa: E402
    build_model,
    build_optimizer,
    deepspeed_config,
    evaluate,
    lr_lambda,
    train_step,
    unwrap,
)


class MemoryData:
    """The slice of ``HubDataset``'s interface the loop uses, over in-memory synthetic faces.

    The bench measures the step, not the hub: batches are the same uint8 NHWC numpy arrays the
    hub loader yields, moved to the device by the step as in training.
    """

    def __init__(self, n_train: int, n_val: int, size: int, seed: int = 0) -> None:
        faces = generate(n_train + n_val, seed=seed)
        if faces.images.shape[1] != size:
            raise SystemExit(f"the synthetic faces are {faces.images.shape[1]}px; run with image_size {size}")
        self.cols = {
            "image": faces.images,
            "age": faces.age,
            "gender": faces.gender.astype(np.int64),
            "emotion": faces.emotion.astype(np.int64),
        }
        self.split = {"train": np.arange(n_train), "val": np.arange(n_train, n_train + n_val)}

    def iter_batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        equal: bool = True,
    ):
        rows = self.split[split][rank::world_size]
        if shuffle:
            rows = np.random.default_rng([seed, epoch]).permutation(rows)
        stop = len(rows) - (len(rows) % batch_size if drop_last else 0)
        for i in range(0, stop, batch_size):
            sl = np.sort(rows[i : i + batch_size])
            yield {k: v[sl] for k, v in self.cols.items()}


@dataclass
class Arm:
    name: str
    device: str
    deepspeed: bool


@dataclass
class Result:
    model: str
    arm: str
    samples_per_s: float
    loss_first: float
    loss_last: float


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_process_group_env() -> None:
    """DeepSpeed wants a process group even for one process; Ray Train sets these on a cluster."""
    for k, v in {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_WORLD_SIZE": "1",
    }.items():
        os.environ.setdefault(k, v)


def build(spec: Any, arm: Arm, train_rows: int, init_state: dict[str, torch.Tensor] | None = None):
    """(net, engine, optimizer, core, device, scheduler) as ``train_loop_per_worker`` builds them.

    The schedule is built on the torch optimiser before DeepSpeed wraps it, as in the loop.
    """
    torch.manual_seed(spec.seed)
    model = build_model(spec, spec.task_specs())
    if init_state is not None:
        model.load_state_dict(init_state)
    steps_per_epoch = max(1, -(-train_rows // spec.batch_size))
    if arm.deepspeed:
        import deepspeed

        optimizer = build_optimizer(spec, model)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(spec, steps_per_epoch))
        model = model.to(memory_format=torch.contiguous_format)  # as the workers do for DeepSpeed
        engine, optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, config=deepspeed_config(spec, use_gpu=arm.device == "cuda")
        )
        return engine, engine, optimizer, unwrap(engine), engine.device, scheduler
    device = torch.device(arm.device)
    model.to(device)
    optimizer = build_optimizer(spec, model)
    return model, None, optimizer, model, device, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(spec, steps_per_epoch))


def _sync(device: Any) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _forever(data: MemoryData, batch_size: int, seed: int):
    """Full training batches, epoch after epoch (a small --n must not run out mid-measurement)."""
    epoch = 0
    while True:
        yield from data.iter_batches("train", batch_size, seed=seed, epoch=epoch, drop_last=True)
        epoch += 1


def throughput(spec: Any, arm: Arm, data: MemoryData, warmup: int, steps: int) -> tuple[float, float, float]:
    net, engine, optimizer, core, device, _ = build(spec, arm, len(data.split["train"]))
    net.train()
    tasks, batches, losses = spec.task_specs(), _forever(data, spec.batch_size, spec.seed), []
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        loss, *_ = train_step(net, engine, optimizer, core, next(batches), tasks, device)
        losses.append(float(loss.detach()))
    _sync(device)
    return steps * spec.batch_size / (time.perf_counter() - t0), losses[0], losses[-1]


def train_and_validate(
    spec: Any, arm: Arm, data: MemoryData, init_state: dict[str, torch.Tensor]
) -> tuple[dict[str, float], Any, Any]:
    """``spec.epochs`` epochs with the spec's learning-rate schedule, then the loop's validation."""
    net, engine, optimizer, core, device, scheduler = build(spec, arm, len(data.split["train"]), init_state)
    tasks = spec.task_specs()
    for epoch in range(spec.epochs):
        net.train()
        for batch in data.iter_batches("train", spec.batch_size, seed=spec.seed, epoch=epoch):
            train_step(net, engine, optimizer, core, batch, tasks, device)
            scheduler.step()
    metrics = evaluate(core if engine is None else net, data, tasks, spec.batch_size, 0, 1, device)
    return metrics, net, core


def serve_check(net: Any, core: Any, data: MemoryData) -> dict[str, float]:
    """Save the engine's weights as the loop does, load them into a fresh fp32 CPU model, compare outputs."""
    buf = io.BytesIO()
    torch.save({"config": core.config(), "state": core.state_dict()}, buf)
    saved = torch.load(io.BytesIO(buf.getvalue()), map_location="cpu", weights_only=True)
    dtypes = sorted({str(v.dtype) for v in saved["state"].values() if v.is_floating_point()})
    cpu_model = MultiTaskModel.from_config(saved["config"])
    cpu_model.load_state_dict(saved["state"])
    cpu_model.eval()
    net.eval()
    batch = next(data.iter_batches("val", 256, shuffle=False))
    with torch.no_grad():
        on_gpu = {k: v.float().cpu() for k, v in net(torch.as_tensor(batch["image"], device=core.pixel_mean.device)).items()}
        on_cpu = cpu_model(torch.as_tensor(batch["image"]))
    out = {"saved_dtypes": ",".join(dtypes)}
    for k, v in on_cpu.items():
        out[f"{k}/max_abs_diff"] = float((v - on_gpu[k]).abs().max())
        out[f"{k}/argmax_agree"] = float((v.argmax(-1) == on_gpu[k].argmax(-1)).float().mean()) if v.shape[-1] > 1 else 1.0
        out[f"{k}/scale"] = float(on_gpu[k].abs().max())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a dry run of every arm on CPU")
    ap.add_argument("--n", type=int, default=16384, help="synthetic training faces (plus n/4 for validation)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--steps", type=int, default=60, help="timed steps per arm")
    ap.add_argument("--cpu-steps", type=int, default=15, help="timed steps of the CPU reference")
    ap.add_argument("--epochs", type=int, default=6, help="epochs of the fp32 vs bf16 learning check")
    ap.add_argument("--learn-seeds", type=int, default=2, help="seeds of the learning check")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--ray-train", action="store_true", help="the data path: flotilla's loader + Ray Train, one GPU worker")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; for a dry run use --device cpu")
    if args.ray_train:
        ray_train_busy(args)
        return
    _one_process_group_env()
    torch.set_num_threads(os.cpu_count() or 1)
    info = {
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
    }
    print(json.dumps(info), flush=True)

    data = MemoryData(args.n, args.n // 4, 64)
    base = {"tracking": {"wandb": False}, "scaling": {"workers": 1, "use_gpu": args.device == "cuda"}}
    models = {
        "small_cnn w32 b128": {"model": {"backbone": "small_cnn", "width": 32}, "batch_size": 128},
        "resnet w64 b512": {"model": {"backbone": "resnet", "width": 64}, "batch_size": 512},
    }
    dev = args.device
    # what deepspeed_config picks for dtype auto: bf16 on a GPU that has it, fp32 otherwise (the dry run)
    ds_dtype = "bf16" if dev == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    arms = [Arm("cpu fp32", "cpu", False), Arm(f"{dev} ds-{ds_dtype}", dev, True)]
    if dev != "cpu":
        arms.insert(1, Arm(f"{dev} fp32", dev, False))
    results: list[Result] = []
    for mname, over in models.items():
        for arm in arms:
            spec = load_family_spec(
                ROOT / "jobs/face_family.yaml",
                {**base, **over, "backend": "deepspeed" if arm.deepspeed else "ddp", "deepspeed": {"stage": 2, "dtype": "auto"}},
            )
            steps = args.cpu_steps if arm.device == "cpu" else args.steps
            rate, first, last = throughput(spec, arm, data, args.warmup if arm.device != "cpu" else 2, steps)
            results.append(Result(mname, arm.name, rate, first, last))
            print(f"{mname:<20} {arm.name:<14} {rate:>9.0f} samples/s   loss {first:.3f} -> {last:.3f}", flush=True)

    # bf16 learns: the reference model with its cosine schedule; per seed, both GPU arms start from the
    # same weights and see the same batches, so seeds show how far apart two fp32 runs would be anyway
    learned: dict[str, dict[str, float]] = {}
    t = time.perf_counter()
    for seed in range(args.learn_seeds):
        kw = {**base, **models["small_cnn w32 b128"], "epochs": args.epochs, "seed": seed}
        ref = load_family_spec(ROOT / "jobs/face_family.yaml", {**kw, "backend": "ddp"})
        torch.manual_seed(seed)
        init = build_model(ref, ref.task_specs()).state_dict()
        learned[f"fp32 seed {seed}"], _, _ = train_and_validate(ref, Arm("fp32", dev, False), data, init)
        ds = load_family_spec(ROOT / "jobs/face_family.yaml", {**kw, "backend": "deepspeed", "deepspeed": {"stage": 2}})
        learned[f"ds-{ds_dtype} seed {seed}"], net, core = train_and_validate(ds, Arm("ds", dev, True), data, init)
    learn_s = time.perf_counter() - t
    serve = serve_check(net, core, data)

    print(
        f"\nlearning check: small_cnn w32, {args.epochs} epochs (cosine) on {args.n} faces, validated on "
        f"{args.n // 4}, seeds 0-{args.learn_seeds - 1} ({learn_s:.0f}s; DeepSpeed dtype here: {ds_dtype})"
    )
    keys = [k for k in next(iter(learned.values())) if k.endswith(("mae", "accuracy", "macro_f1"))]
    print("  " + f"{'':<18}" + "".join(f"{k.removeprefix('val/'):>20}" for k in keys))
    for name, m in learned.items():
        print("  " + f"{name:<18}" + "".join(f"{m[k]:>20.4f}" for k in keys))
    print(
        f"serve check: checkpoint weights saved as {serve['saved_dtypes']}; fresh fp32 CPU model vs engine: "
        + ", ".join(
            f"{k.split('/')[0]} max|diff| {serve[k]:.4f} (of {serve[k.replace('max_abs_diff', 'scale')]:.2f})"
            for k in serve
            if k.endswith("max_abs_diff")
        )
    )
    print("  argmax agreement: " + ", ".join(f"{k.split('/')[0]} {serve[k]:.3f}" for k in serve if k.endswith("argmax_agree")))

    rate = {(r.model, r.arm): r.samples_per_s for r in results}
    print("\nratios (samples/s):")
    for mname in models:
        fp32, ds_rate = rate[mname, f"{dev} fp32"], rate[mname, f"{dev} ds-{ds_dtype}"]
        print(
            f"  {mname:<20} {dev} fp32 / cpu fp32: {fp32 / rate[mname, 'cpu fp32']:.1f}x   "
            f"{dev} ds-{ds_dtype} / {dev} fp32: {ds_rate / fp32:.2f}x   "
            f"{dev} ds-{ds_dtype} / cpu fp32: {ds_rate / rate[mname, 'cpu fp32']:.1f}x"
        )
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "info": info,
                    "throughput": [asdict(r) for r in results],
                    "learning": learned,
                    "serve": serve,
                    "learn_s": learn_s,
                },
                indent=2,
            )
        )


class BusySampler:
    """The GPU's utilization (percent of time a kernel ran), sampled by ``nvidia-smi`` every 50 ms."""

    def __init__(self) -> None:
        import subprocess

        cmd = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "50", "-i", "0"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)

    def stop(self) -> float:
        """Mean utilization over the samples, as a fraction; the first sample (before the epoch) is dropped."""
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        samples = [float(x) for x in out.split() if x.strip().replace(".", "", 1).isdigit()][1:]
        return sum(samples) / len(samples) / 100 if samples else float("nan")


def _data_path_worker(cfg: dict[str, Any], creds_ref: Any) -> None:
    """One Ray Train worker: the loop's own loader, feed, step and loss sums, epoch by epoch."""
    import ray
    import ray.train
    import ray.train.torch

    from flotilla.data.loader import HubDataset
    from flotilla.training.feed import device_batches
    from flotilla.training.loop import add_batch, all_ranks

    spec = load_family_spec(ROOT / "jobs/face_family.yaml", cfg["spec"])
    data = HubDataset(cfg["ref"], ray.get(creds_ref), cache_dir=cfg["cache"], image_size=spec.data.image_size)
    model = ray.train.torch.prepare_model(build_model(spec, spec.task_specs()))
    device = ray.train.torch.get_device()
    optimizer, tasks, core = build_optimizer(spec, model), spec.task_specs(), unwrap(model)
    history: list[dict[str, float]] = []
    for epoch in range(spec.epochs):
        model.train()
        sampler = BusySampler() if device.type == "cuda" else None
        t0, sums, counts = time.perf_counter(), {}, {}
        for batch in device_batches(data, device, "train", spec.batch_size, seed=spec.seed, epoch=epoch, drop_last=True):
            loss, per_task, labelled = train_step(model, None, optimizer, core, batch, tasks, device)
            add_batch(sums, counts, loss, per_task, labelled, len(batch["image"]))
        totals, n = all_ranks(sums, counts, ["loss"], 1, device)  # the epoch's one sync: the GPU is done
        seconds = time.perf_counter() - t0
        busy = sampler.stop() if sampler is not None else float("nan")
        n_seen = n["loss"]
        history.append({"epoch": epoch, "samples_per_s": n_seen / seconds, "gpu_busy": busy, "loss": totals["loss"] / n_seen})
        ray.train.report({"history": history})
        Path(cfg["history"]).write_text(json.dumps(history))  # Ray Train v2 keeps metrics only with checkpoints


def ray_train_busy(args: argparse.Namespace) -> None:
    """Train the resnet through flotilla's data path in one Ray Train GPU worker; print samples/s and GPU busy."""
    import functools
    import tempfile

    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from flotilla.data.api import generate as ingest
    from flotilla.data.pinning import resolve_data
    from flotilla.data.validate import Thresholds
    from flotilla.hub.local import private_hub

    gpu = args.device == "cuda"
    over = {
        "model": {"backbone": "resnet", "width": 64},
        "batch_size": 512,
        "epochs": max(2, args.epochs),
        "data": {"image_size": 64},
        "tracking": {"wandb": False},
        "scaling": {"workers": 1, "use_gpu": gpu},
    }
    with private_hub("flotilla-gpu-bench-") as (hub, _), tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        ingest(hub, "bench", "faces", args.n, thresholds=Thresholds(min_group_count=1))
        print(f"ingest {args.n} faces: {time.perf_counter() - t:.1f}s", flush=True)
        ref = resolve_data(hub, "bench", "main", "faces")
        ray.init(
            num_cpus=os.cpu_count(),
            num_gpus=1 if gpu else 0,
            include_dashboard=False,
            runtime_env={"env_vars": {"PYTHONPATH": str(ROOT / "platform")}},  # this checkout's flotilla in the worker
        )
        try:
            creds_ref = ray.put(hub.credentials)
            trainer = TorchTrainer(
                functools.partial(
                    _data_path_worker,
                    {"spec": over, "ref": ref, "cache": f"{tmp}/cache", "history": f"{tmp}/history.json"},
                    creds_ref,
                ),
                scaling_config=ScalingConfig(
                    num_workers=1, use_gpu=gpu, resources_per_worker={"CPU": max(1, (os.cpu_count() or 2) - 1)}
                ),
                run_config=RunConfig(storage_path=f"{tmp}/ray", name="data-path"),
            )
            trainer.fit()
        finally:
            ray.shutdown()
        epochs = json.loads(Path(f"{tmp}/history.json").read_text())
    print(f"\nresnet w64 b512 at 64 px, one Ray Train worker ({'GPU' if gpu else 'CPU dry run'}), flotilla's loader:")
    for m in epochs:
        note = "  (builds the decoded cache)" if m["epoch"] == 0 else ""
        rate, busy = f"{m['samples_per_s']:9.0f} samples/s", f"GPU busy {m['gpu_busy']:6.1%}"
        print(f"  epoch {m['epoch']}: {rate}   {busy}   loss {m['loss']:.3f}{note}")
    warm = [m["gpu_busy"] for m in epochs if m["epoch"] > 0]
    print(f"GPU busy over the warm epochs (median): {float(np.median(warm)):.1%}  (goal >= 90 %)")
    if args.out:
        args.out.write_text(json.dumps({"data_path": epochs}, indent=2, default=float))


if __name__ == "__main__":
    main()
