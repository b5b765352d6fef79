"""What a sweep trial costs beyond its epochs: flotilla's sweep vs a plain Ray Tune function trainable.

Same data (one pinned commit read through ``HubDataset``), same parameter sets, same model, step and
scoring, one invocation, one local Ray. Arm 1 is ``flotilla.sweep`` (random search, no scheduler);
arm 2 a plain ``tune.Tuner`` over a function trainable that trains the parameter sets arm 1 drew and
calls ``tune.report`` each epoch (no branch, no checkpoint, no model).

Per trial: wall time from Tune's ``on_trial_start`` to its ``on_trial_complete`` on the driver
(flotilla's ledger and journal record those very hooks; arm 2 has a callback of its own), less the
sum of its epochs' ``epoch_s`` (train + validation, measured inside the training process) = its
overhead. Phases: start-up (trial start to first report, less the first epoch), between epochs
(report gaps less ``epoch_s``), finish (last report to trial end), gap to the next trial's start.
Memory: the peak, while the trial runs, of the summed RSS of this Ray's worker processes
(``ray::...``, idle ones excluded), sampled every 0.2 s; and of the trial's own processes alone
(:data:`TRIAL_PROCESSES`: the node's agents and Tune's own actors, ~0.35 GiB, left out). Medians; the ratio last.

Run: `.venv/bin/python bench/trial_overhead.py [--trials 6 --epochs 2 --n 2000 --concurrency 1]`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import threading
import time
from dataclasses import dataclass, field
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
from flotilla.tune.journal import JOURNAL, LEDGER, Ended, Journal, Ledger, Reported
from flotilla.tune.spec import unflatten
from flotilla.tune.store import TUNE

GIB = 1024**3
BASE = {
    "name": "overhead",
    "data": {"repo": "faces", "dataset": "synthetic"},
    "model": {"width": 16},
    "batch_size": 64,
    "seed": 0,
    "scaling": {"workers": 1, "cpus_per_worker": 0.75},
    "tracking": {"wandb": False},
}
SPACE = {
    "optim.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
    "optim.weight_decay": {"type": "loguniform", "low": 1e-6, "high": 1e-2},
}
TRIAL_CPUS = 0.25


@dataclass
class Trial:
    """One trial as the driver saw it: start, each report (time, epoch_s), end; its peak memory."""

    start: float
    reports: list[tuple[float, float]] = field(default_factory=list)
    end: float = math.nan
    peak_rss: float = 0.0  # every Ray worker process but idle ones
    trial_rss: float = 0.0  # the trial's own processes (TRIAL_PROCESSES)

    @property
    def epochs_s(self) -> float:
        return sum(e for _, e in self.reports)

    @property
    def overhead(self) -> float:
        return self.end - self.start - self.epochs_s

    @property
    def startup(self) -> float:
        return self.reports[0][0] - self.start - self.reports[0][1]

    @property
    def between(self) -> float:
        gaps = [t1 - t0 - e1 for (t0, _), (t1, e1) in itertools.pairwise(self.reports)]
        return statistics.median(gaps) if gaps else 0.0

    @property
    def finish(self) -> float:
        return self.end - self.reports[-1][0]


TRIAL_PROCESSES = ("ray::ImplicitFunc", "ray::TrainController", "ray::RayTrainWorker")
"""What a trial runs in: Tune's function trainable, and under Ray Train its controller and workers."""


class RssSampler:
    """Summed RSS of this driver's Ray worker processes every ``period`` seconds: all of them but idle ones
    (``all``, the declared statistic) and those a trial runs in (``trial``: the node's agents and Tune's
    own actors left out)."""

    def __init__(self, period: float = 0.2) -> None:
        self.period = period
        self.samples: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = trial = 0
            for p in me.children(recursive=True):
                try:
                    cmd = p.cmdline()
                    if cmd and cmd[0].startswith("ray::") and not cmd[0].startswith("ray::IDLE"):
                        rss = p.memory_info().rss
                        total += rss
                        trial += rss if cmd[0].startswith(TRIAL_PROCESSES) else 0
                except psutil.Error:
                    continue
            self.samples.append((time.time(), total, trial))
            self._stop.wait(self.period)

    def peak(self, t0: float, t1: float, *, trial: bool = False) -> float:
        return max((r[2] if trial else r[1] for r in self.samples if t0 <= r[0] <= t1), default=0.0)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def flotilla_arm(hub: Any, trials: int, epochs: int, concurrency: int) -> tuple[list[Trial], list[dict[str, Any]], float]:
    """Run flotilla's sweep; its trials as the driver saw them, the params it drew, and its wall time."""
    spec = parse_spec(
        SweepSpec,
        {
            "name": "overhead",
            "base": {**BASE, "epochs": epochs},
            "space": SPACE,
            "objective": {"metric": "val/age/mae", "mode": "min"},
            "searcher": {"type": "random", "seed": 0},
            "scheduler": {"type": "none"},
            "budget": {"trials": trials, "concurrency": concurrency, "trial_cpus": TRIAL_CPUS},
            "retention": {"keep": "all"},
            "promote": {"into": None},
        },
    )
    t = time.time()
    res = sweep(spec, hub=hub)
    wall = time.time() - t
    d = Path(res.directory)
    starts = {s.trial_id: s for s in Ledger(d / LEDGER).starts()}
    out: dict[str, Trial] = {tid: Trial(s.started) for tid, s in starts.items()}
    journal = Journal(d / JOURNAL)
    for ev in journal.records():
        tid = getattr(ev, "trial_id", None)
        if tid not in out:
            continue
        if isinstance(ev, Reported):
            out[tid].reports.append((ev.t, math.nan))
        elif isinstance(ev, Ended):
            out[tid].end = ev.t
    for tid, trial in out.items():
        lines = [json.loads(x) for x in (d / TUNE / res.sweep_id / tid / "result.json").read_text().splitlines() if x]
        trial.reports = [(t, float(r["epoch_s"])) for (t, _), r in zip(trial.reports, lines, strict=True)]
    params = [next(t.params for t in res.trials if t.trial_id == tid) for tid in sorted(out, key=lambda k: out[k].start)]
    return [out[k] for k in sorted(out, key=lambda k: out[k].start)], params, wall


def plain_trainable(config: dict[str, Any]) -> None:
    """A plain Tune function trainable: the same data, model, step and scoring, nothing else."""
    import ray
    import torch
    from ray import tune

    spec: FamilySpec = parse_spec(FamilySpec, deep_merge(dict(config["family"]), unflatten(config["params"])))
    tasks = spec.task_specs()
    torch.manual_seed(spec.seed)
    torch.set_num_threads(max(1, round(spec.scaling.cpus_per_worker)))
    data = HubDataset(DataRef(**config["data"]), ray.get(config["creds"][0]), image_size=spec.data.image_size)
    model = build_model(spec, tasks)
    optimizer = build_optimizer(spec, model)
    steps = max(1, math.ceil(sum(len(r) for r in data._split_rows("train")) / spec.batch_size))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(spec, steps))
    for epoch in range(spec.epochs):
        t0 = time.perf_counter()
        model.train()
        for batch in data.iter_batches("train", spec.batch_size, seed=spec.seed, epoch=epoch, rank=0, world_size=1):
            train_step(model, None, optimizer, model, batch, tasks, "cpu")
            scheduler.step()
        metrics = evaluate(model, data, tasks, spec.batch_size, 0, 1, "cpu")
        tune.report({**metrics, "epoch": epoch, "epoch_s": time.perf_counter() - t0})


def plain_arm(
    hub: Any, params: list[dict[str, Any]], epochs: int, concurrency: int, *, reuse: bool = False
) -> tuple[list[Trial], float]:
    """The plain Tune trainable over the same parameter sets; ``reuse``: Tune's ``reuse_actors`` (off by default,
    on in flotilla's sweeps), so a trial's process takes the next trial with its imports warm."""
    import ray
    from ray import tune

    seen: dict[str, Trial] = {}

    class Watch(tune.Callback):
        def on_trial_start(self, iteration: int, trials: Any, trial: Any, **info: Any) -> None:
            seen[trial.trial_id] = Trial(time.time())

        def on_trial_result(self, iteration: int, trials: Any, trial: Any, result: dict[str, Any], **info: Any) -> None:
            seen[trial.trial_id].reports.append((time.time(), float(result["epoch_s"])))

        def on_trial_complete(self, iteration: int, trials: Any, trial: Any, **info: Any) -> None:
            seen[trial.trial_id].end = time.time()

    repo = hub.repo("faces")
    commit = repo.commit_info("main").id
    family = {**BASE, "epochs": epochs}
    data = {"repo": "faces", "commit": commit, "dataset": "synthetic", "ref": "main"}
    creds = [ray.put(hub.credentials)]  # in a list: Tune resolves a bare ObjectRef in a config
    tuner = tune.Tuner(
        tune.with_resources(plain_trainable, {"CPU": TRIAL_CPUS + BASE["scaling"]["cpus_per_worker"]}),
        param_space={"params": tune.grid_search(params), "family": family, "data": data, "creds": creds},
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrency, reuse_actors=reuse),
        run_config=tune.RunConfig(
            name=f"plain{'-reuse' * reuse}-{int(time.time())}",
            storage_path=str(hub.settings.home / "plain"),
            callbacks=[Watch()],
            verbose=0,
        ),
    )
    t = time.time()
    tuner.fit()
    wall = time.time() - t
    return sorted(seen.values(), key=lambda x: x.start), wall


def summary(name: str, trials: list[Trial], wall: float) -> dict[str, float]:
    gaps = [b.start - a.end for a, b in itertools.pairwise(trials)]
    s = {
        "trial": statistics.median(t.end - t.start for t in trials),
        "epochs": statistics.median(t.epochs_s for t in trials),
        "overhead": statistics.median(t.overhead for t in trials),
        "startup": statistics.median(t.startup for t in trials),
        "between": statistics.median(t.between for t in trials),
        "finish": statistics.median(t.finish for t in trials),
        "gap": statistics.median(gaps) if gaps else 0.0,
        "rss": statistics.median(t.peak_rss for t in trials) / GIB,
        "rss_max": max(t.peak_rss for t in trials) / GIB,
        "trial_rss": statistics.median(t.trial_rss for t in trials) / GIB,
        "wall": wall,
    }
    print(
        f"{name:<11} trial {s['trial']:6.2f}s = epochs {s['epochs']:5.2f}s + overhead {s['overhead']:5.2f}s "
        f"[start-up {s['startup']:5.2f}, between epochs {s['between']:5.2f}, finish {s['finish']:5.2f}; "
        f"gap to next {s['gap']:5.2f}]  peak RSS {s['rss']:.2f} GiB (max {s['rss_max']:.2f}; "
        f"trial's own processes {s['trial_rss']:.2f})  "
        f"whole run {wall:6.1f}s  ({len(trials)} trials)",
        flush=True,
    )
    for i, t in enumerate(trials):
        print(
            f"  {name} trial {i}: {t.end - t.start:6.2f}s, epochs {t.epochs_s:5.2f}s, overhead {t.overhead:5.2f}s, "
            f"peak RSS {t.peak_rss / GIB:.2f} GiB (trial's own {t.trial_rss / GIB:.2f})"
        )
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="synthetic faces")
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=1, help="trials at a time (memory per trial needs 1)")
    args = ap.parse_args()
    with private_hub("flotilla-bench-") as (hub, _):
        generate(hub, "faces", "synthetic", args.n, thresholds=Thresholds(min_group_count=1))
        ensure_ray()
        with RssSampler() as rss:
            flo, params, flo_wall = flotilla_arm(hub, args.trials, args.epochs, args.concurrency)
            plain, plain_wall = plain_arm(hub, params, args.epochs, args.concurrency)
            warm, warm_wall = plain_arm(hub, params, args.epochs, args.concurrency, reuse=True)
        for t in flo + plain + warm:
            t.peak_rss = rss.peak(t.start, t.end)
            t.trial_rss = rss.peak(t.start, t.end, trial=True)
    f = summary("flotilla", flo, flo_wall)
    p = summary("plain", plain, plain_wall)
    r = summary("plain+reuse", warm, warm_wall)
    print(f"flotilla overhead {f['overhead']:.2f}s per trial (goal <= 3 s: 5 % of a one-minute trial)")
    print(
        f"flotilla peak RSS per trial {f['rss']:.2f} GiB, of the trial's own processes {f['trial_rss']:.2f} GiB (goal <= 1.2 GiB)"
    )
    print(f"whole run flotilla / plain: {f['wall'] / p['wall']:.2f}x")
    print(f"ratio flotilla / plain Tune with reuse_actors per-trial overhead: {f['overhead'] / r['overhead']:.2f}x")
    print(f"ratio flotilla / plain-Tune per-trial overhead: {f['overhead'] / p['overhead']:.2f}x  (goal <= 1.5x)")


if __name__ == "__main__":
    main()
