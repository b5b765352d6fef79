"""ASHA + TPE against random search without early stopping: trial-epochs to find a top-5 % model.

Same family, data, search space and seeds for both arms, one invocation.

The question asked: *how much training does each searcher spend before it has
trained a model as good as the best twentieth of this search space?* The target is
therefore a property of the space, measured before either arm runs:

1. **Calibration** — random configurations, spread evenly over the *measured*
   training seeds (0 .. ``--seeds``-1) but drawn by sampler seeds 1000, 1001, ...
   (so never the arms' own draws), each trained the full ``--epochs``; the target
   is the ``--percentile`` (95th) percentile of their best objective. It is
   printed before any arm runs.
2. **Measurement** — for each seed, each arm sweeps with ``budget.target`` set to
   that target (no new trials once a trial reaches it) and at most
   ``--max-trials`` trials. Every epoch any trial trains is one trial-epoch, in
   the order Tune received the reports; an arm's cost is the number of
   trial-epochs until some trial first reports an objective at or past the
   target. An arm that never gets there is censored at what it spent (shown as
   ">=N"; counted as infinite in the median).

Prints per-seed figures, the medians, wall times and the ratio last.
Run: `.venv/bin/python bench/hpo.py [--seeds 5 --epochs 9 --calib-trials 50 --percentile 95 --max-trials 48]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from flotilla.cluster import ensure_ray
from flotilla.data.api import generate
from flotilla.data.validate import Thresholds
from flotilla.hub.local import private_hub
from flotilla.specs import parse_spec
from flotilla.tune import SweepSpec, sweep

OBJ = {"weights": {"val/age/mae": -0.02, "val/gender/accuracy": 1.0, "val/emotion/accuracy": 1.0}, "mode": "max"}
SPACE = {
    "optim.lr": {"type": "loguniform", "low": 1e-5, "high": 1e-1},
    "optim.weight_decay": {"type": "loguniform", "low": 1e-6, "high": 1e-2},
    "model.width": {"type": "choice", "values": [4, 8, 16]},
}


def spec(
    name: str, seed: int, trials: int, epochs: int, asha_tpe: bool, target: float | None, sampler_seed: int | None = None
) -> SweepSpec:
    """One arm's sweep: ``seed`` is the training seed (and the sampler's, unless ``sampler_seed`` is given)."""
    return parse_spec(
        SweepSpec,
        {
            "name": name,
            "base": {
                "name": "hpo",
                "data": {"repo": "faces", "dataset": "synthetic"},
                "model": {"width": 16},
                "epochs": epochs,
                "batch_size": 64,
                "seed": seed,
                "scaling": {"workers": 1, "cpus_per_worker": 0.75},
                "tracking": {"wandb": False},
            },
            "space": SPACE,
            "objective": OBJ,
            "searcher": {
                "type": "tpe" if asha_tpe else "random",
                "seed": seed if sampler_seed is None else sampler_seed,
                "n_startup_trials": 3,
            },
            "scheduler": {"type": "asha" if asha_tpe else "none", "grace_period": 1, "reduction_factor": 3},
            "budget": {"trials": trials, "concurrency": 2, "trial_cpus": 0.25, "target": target},
            "retention": {"keep": "winner"},
            "promote": {"into": None},
        },
    )


def reports(sweep_dir: Path) -> list[dict]:
    return [r for r in map(json.loads, (sweep_dir / "lifecycle.jsonl").read_text().splitlines()) if r["event"] == "result"]


def cost_to_target(sweep_dir: Path, target: float) -> tuple[float, int]:
    """Trial-epochs (in the order Tune received the reports) until the objective first reaches ``target``."""
    scores = [r["value"] for r in reports(sweep_dir)]
    for i, score in enumerate(scores, 1):
        if score >= target:
            return i, len(scores)
    return float("inf"), len(scores)


def calibrate(hub, trials: int, epochs: int, percentile: float, seeds: range) -> tuple[float, list[float]]:
    """The ``percentile`` of random configurations' best objective (full training, no stopping).

    The configurations are spread evenly over the training seeds the arms are measured at (the
    target must describe the space *as those seeds train it*; run 4 calibrated at other training
    seeds), and drawn by sampler seeds 1000 + s, disjoint from the arms' own draws.
    """
    best: dict[str, float] = {}
    for i, s in enumerate(seeds):
        n = trials // len(seeds) + (1 if i < trials % len(seeds) else 0)
        res = sweep(spec(f"hpo-calibration-{s}", s, n, epochs, asha_tpe=False, target=None, sampler_seed=1000 + s), hub=hub)
        for r in reports(Path(res.directory)):
            best[r["trial_id"]] = max(best.get(r["trial_id"], float("-inf")), r["value"])
    scores = sorted(best.values())
    return float(np.percentile(scores, percentile)), scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000, help="synthetic faces")
    ap.add_argument("--seeds", type=int, default=5, help="how many seeds (training and sampler) to measure")
    ap.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="measure seeds first-seed .. first-seed+seeds-1 (to add seeds to an earlier run at its target)",
    )
    ap.add_argument("--epochs", type=int, default=9, help="full training length of a trial")
    ap.add_argument("--calib-trials", type=int, default=50, help="random configurations that place the target")
    ap.add_argument("--percentile", type=float, default=95, help="the target's percentile among them")
    ap.add_argument("--max-trials", type=int, default=48, help="trial budget of each arm (it stops early at the target)")
    ap.add_argument("--target", type=float, default=None, help="skip calibration and use this target")
    args = ap.parse_args()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    with private_hub("flotilla-bench-") as (hub, _):
        generate(hub, "faces", "synthetic", args.n, thresholds=Thresholds(min_group_count=1))
        ensure_ray()
        if args.target is None:
            t = time.perf_counter()
            target, scores = calibrate(hub, args.calib_trials, args.epochs, args.percentile, seeds)
            print(
                f"calibration: {len(scores)} random configurations, best objectives "
                f"{', '.join(f'{s:.3f}' for s in scores)} ({time.perf_counter() - t:.0f}s)"
            )
            print(f"target = {args.percentile:g}th percentile = {target:.4f}", flush=True)
        else:
            target = args.target
        costs: dict[str, list[float]] = {"asha+tpe": [], "random": []}
        walls: dict[str, list[float]] = {"asha+tpe": [], "random": []}
        for seed in seeds:
            for arm in ("asha+tpe", "random"):
                t = time.perf_counter()
                name = f"hpo-{arm.replace('+', '-')}-{seed}"
                res = sweep(spec(name, seed, args.max_trials, args.epochs, arm == "asha+tpe", target), hub=hub)
                walls[arm].append(time.perf_counter() - t)
                c, total = cost_to_target(Path(res.directory), target)
                costs[arm].append(c)
                shown = f"{c:.0f}" if c != float("inf") else f">={total}"
                print(
                    f"seed {seed} {arm:<9} trial-epochs to target: {shown:>5}  "
                    f"({len(res.trials)} trials, {total} trial-epochs in all; {walls[arm][-1]:.0f}s)",
                    flush=True,
                )
    med = {k: statistics.median(v) for k, v in costs.items()}
    print(f"median trial-epochs to objective >= {target:.4f}: asha+tpe {med['asha+tpe']}, random {med['random']}")
    print(
        f"median wall time: asha+tpe {statistics.median(walls['asha+tpe']):.0f}s, "
        f"random {statistics.median(walls['random']):.0f}s"
    )
    # the seeds pair the arms (same data, training seed and first random draws): per-seed ratios show
    # what the ratio of medians, which may take its two medians from different seeds, can hide
    both = [(a, r) for a, r in zip(costs["asha+tpe"], costs["random"], strict=True) if max(a, r) < float("inf")]
    if both:
        paired = [a / r for a, r in both]
        print(
            f"per-seed ratios (seeds both arms reached): {', '.join(f'{x:.2f}' for x in paired)}; "
            f"median {statistics.median(paired):.2f}x; summed {sum(a for a, _ in both) / sum(r for _, r in both):.2f}x"
        )
    print(f"ratio asha+tpe / random trial-epochs to target: {med['asha+tpe'] / med['random']:.2f}x  (goal <= 0.5x)")


if __name__ == "__main__":
    main()
