"""Does a reused trial process (Tune's ``reuse_actors=True``) grow with each trial it takes, and why?

Arm ``plain``: a plain Tune function trainable (``trial_overhead.plain_trainable``'s training) with
``reuse_actors=True``, concurrency 1; at the end of each trial, from inside it, the process's RSS and
USS (``psutil.memory_full_info``), its thread count, its Python objects and its mappings of decoded
images. Variants: ``--trim`` (gc.collect + glibc ``malloc_trim(0)`` at each trial's end), ``--drop``
(the dataset deleted and collected before measuring), ``--trace`` (tracemalloc: the 10 sites that grew
most between trials), ``--arenas N`` (``MALLOC_ARENA_MAX=N`` for Ray's workers).

Arm ``flotilla``: ``flotilla.sweep`` (random search, concurrency 1, retention keep all); the trial
process's memory sampled from the driver (psutil) when each trial completes, by the ``worker_pid`` its
results carry.

Run: `nice -n 15 .venv/bin/python bench/trial_memory.py plain --trials 10 [--trim|--drop|--trace|--arenas 2]`
"""

from __future__ import annotations

import argparse
import builtins
import gc
import json
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from flotilla.cluster import ensure_ray
from flotilla.data.api import generate
from flotilla.data.loader import HubDataset
from flotilla.data.pinning import DataRef
from flotilla.data.validate import Thresholds
from flotilla.hub.local import private_hub
from flotilla.specs import FamilySpec, deep_merge, parse_spec
from flotilla.training.loop import build_model, build_optimizer, evaluate, lr_lambda, train_step
from flotilla.tune import SweepSpec, sweep
from flotilla.tune.spec import unflatten
from trial_overhead import BASE as OVERHEAD_BASE
from trial_overhead import SPACE

MIB = 1024**2
BASE: dict[str, Any] = {**OVERHEAD_BASE, "name": "memory"}  # trial_overhead's trials, so the two benches' figures compare


def measure(pid: int | None = None) -> dict[str, Any]:
    """RSS, USS, peak RSS since the last call (``VmHWM``, then reset), threads and mappings of decoded images
    (``*-s<size>``/``*-native`` cache entries) of a process."""
    p = psutil.Process(pid)
    m = p.memory_full_info()
    maps = Path(f"/proc/{p.pid}/maps").read_text().splitlines()
    decoded = sum(1 for line in maps if line.rstrip().endswith(("-native", *(f"-s{s}" for s in range(8, 1025)))))
    status = Path(f"/proc/{p.pid}/status").read_text()
    hwm = next(int(x.split()[1]) * 1024 for x in status.splitlines() if x.startswith("VmHWM:"))
    Path(f"/proc/{p.pid}/clear_refs").write_text("5")  # VmHWM from here on: the next trial's own peak
    return {
        "pid": p.pid,
        "rss_mib": m.rss / MIB,
        "uss_mib": m.uss / MIB,
        "peak_mib": hwm / MIB,
        "threads": p.num_threads(),
        "decoded_maps": decoded,
    }


def trim() -> None:
    import ctypes

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def plain_trainable(config: dict[str, Any]) -> None:
    """``trial_overhead.plain_trainable``'s training, then the process measured (after the variant's cleanup)."""
    import ray
    import torch
    from ray import tune

    state = builtins.__dict__.setdefault("_trial_memory_state", {"n": 0})  # survives from trial to trial in a process
    if config["trace"] and state["n"] == 0:
        import tracemalloc

        tracemalloc.start(8)
    spec: FamilySpec = parse_spec(FamilySpec, deep_merge(dict(config["family"]), unflatten(config["params"])))
    tasks = spec.task_specs()
    torch.manual_seed(spec.seed)
    torch.set_num_threads(max(1, round(spec.scaling.cpus_per_worker)))
    data = HubDataset(DataRef(**config["data"]), ray.get(config["creds"][0]), image_size=spec.data.image_size)
    model = build_model(spec, tasks)
    optimizer = build_optimizer(spec, model)
    steps = max(1, math.ceil(sum(len(r) for r in data._split_rows("train")) / spec.batch_size))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(spec, steps))
    metrics: dict[str, Any] = {}
    for epoch in range(spec.epochs):
        model.train()
        for batch in data.iter_batches("train", spec.batch_size, seed=spec.seed, epoch=epoch, rank=0, world_size=1):
            train_step(model, None, optimizer, model, batch, tasks, "cpu")
            scheduler.step()
        metrics = evaluate(model, data, tasks, spec.batch_size, 0, 1, "cpu")
        if epoch < spec.epochs - 1:
            tune.report({**metrics, "epoch": epoch})
    if config["drop"]:
        del data, model, optimizer, scheduler, batch
        gc.collect()
    if config["trim"]:
        trim()
    m = measure()
    m |= {"trial": state["n"], "objects": len(gc.get_objects()), "py_threads": threading.active_count()}
    if config["trace"]:
        import tracemalloc

        snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        prev = state.get("snap")
        if prev is not None:
            top = snap.compare_to(prev, "traceback")[:10]
            m["top"] = [
                f"{s.size_diff / 1024:+.0f} KiB {s.count_diff:+d}: " + " <- ".join(str(f) for f in s.traceback[-3:]) for s in top
            ]
        m["traced_mib"] = tracemalloc.get_traced_memory()[0] / MIB
        state["snap"] = snap
    state["n"] += 1
    with open(config["out"], "a") as fh:
        fh.write(json.dumps(m) + "\n")
    tune.report({**metrics, "epoch": spec.epochs - 1})


def plain_arm(hub: Any, args: argparse.Namespace, out: Path) -> None:
    import random

    import ray
    from ray import tune

    rng = random.Random(0)
    params = [
        {"optim.lr": 10 ** rng.uniform(-4, -2), "optim.weight_decay": 10 ** rng.uniform(-6, -2)} for _ in range(args.trials)
    ]
    commit = hub.repo("faces").commit_info("main").id
    tuner = tune.Tuner(
        tune.with_resources(plain_trainable, {"CPU": 1.0}),
        param_space={
            "params": tune.grid_search(params),
            "family": {**BASE, "epochs": args.epochs},
            "data": {"repo": "faces", "commit": commit, "dataset": "synthetic", "ref": "main"},
            "creds": [ray.put(hub.credentials)],
            "out": str(out),
            "trim": args.trim,
            "drop": args.drop,
            "trace": args.trace,
        },
        tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=True),
        run_config=tune.RunConfig(name=f"memory-{int(time.time())}", storage_path=str(hub.settings.home / "plain"), verbose=0),
    )
    tuner.fit()


def flotilla_arm(hub: Any, args: argparse.Namespace, out: Path) -> None:
    from ray import tune

    class Sample(tune.Callback):
        def on_trial_complete(self, iteration: int, trials: Any, trial: Any, **info: Any) -> None:
            pid = (trial.last_result or {}).get("worker_pid")
            if pid:
                with open(out, "a") as fh:
                    fh.write(json.dumps({**measure(int(pid)), "trial": trial.trial_id}) + "\n")

    import flotilla.tune.run as run

    new_tuner = run._new_tuner

    def with_sampler(*a: Any, **k: Any) -> Any:
        tuner = new_tuner(*a, **k)
        tuner._local_tuner._run_config.callbacks.append(Sample())
        return tuner

    run._new_tuner = with_sampler
    spec = parse_spec(
        SweepSpec,
        {
            "name": "memory",
            "base": {**BASE, "epochs": args.epochs},
            "space": SPACE,
            "objective": {"metric": "val/age/mae", "mode": "min"},
            "searcher": {"type": "random", "seed": 0},
            "scheduler": {"type": "none"},
            "budget": {"trials": args.trials, "concurrency": 1, "trial_cpus": 0.25},
            "retention": {"keep": "all"},
            "promote": {"into": None},
        },
    )
    sweep(spec, hub=hub)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("arm", choices=("plain", "flotilla"))
    ap.add_argument("--n", type=int, default=600, help="synthetic faces")
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--trim", action="store_true")
    ap.add_argument("--drop", action="store_true")
    ap.add_argument("--trace", action="store_true")
    ap.add_argument("--arenas", type=int, default=0, help="MALLOC_ARENA_MAX for Ray's processes (0: glibc's default)")
    ap.add_argument("--out", default="", help="JSON lines, one per trial (default: a temporary file)")
    args = ap.parse_args()
    if args.arenas:
        os.environ["MALLOC_ARENA_MAX"] = str(args.arenas)  # Ray's workers inherit the driver's environment
    with private_hub("flotilla-bench-") as (hub, _):
        out = Path(args.out) if args.out else hub.settings.home / "memory.jsonl"
        generate(hub, "faces", "synthetic", args.n, thresholds=Thresholds(min_group_count=1))
        ensure_ray()
        (plain_arm if args.arm == "plain" else flotilla_arm)(hub, args, out)
        rows = [json.loads(x) for x in out.read_text().splitlines() if x]
    for i, r in enumerate(rows):
        extra = f" objects {r['objects']} py_threads {r['py_threads']}" if "objects" in r else ""
        print(
            f"trial {i}: pid {r['pid']} RSS {r['rss_mib']:7.1f} MiB USS {r['uss_mib']:7.1f} MiB "
            + (f"peak {r['peak_mib']:7.1f} MiB " if "peak_mib" in r else "")
            + f"threads {r['threads']} decoded maps {r['decoded_maps']}{extra}"
            + (f" traced {r['traced_mib']:.1f} MiB" if "traced_mib" in r else ""),
            flush=True,
        )
        for line in r.get("top", []):
            print("    " + line)


if __name__ == "__main__":
    main()
