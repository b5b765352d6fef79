"""ASHA + TPE against random search without early stopping: trial-epochs to reach a target.

Same family, data and seeds for both arms, one invocation. For each seed, each
arm runs a sweep; every epoch any trial trains counts as one trial-epoch, in
the order Tune received the reports; the cost of an arm is the number of
trial-epochs spent until some trial first reports an objective at or past the
target. Prints the median over seeds and the ratio last.
Run: `.venv/bin/python bench/hpo.py [--seeds 3 --trials 10 --target 0.85]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from flotilla.data.api import generate
from flotilla.data.validate import Thresholds
from flotilla.hub.local import private_hub
from flotilla.specs import parse_spec
from flotilla.train.run import ensure_ray
from flotilla.tune.spec import SweepSpec
from flotilla.tune.sweep import sweep

OBJ = {"weights": {"val/age/mae": -0.02, "val/gender/accuracy": 1.0, "val/emotion/accuracy": 1.0}, "mode": "max"}


def spec(name: str, seed: int, trials: int, epochs: int, asha_tpe: bool) -> SweepSpec:
    return parse_spec(SweepSpec, {
        "name": name,
        "base": {"name": "hpo", "data": {"repo": "faces", "dataset": "synthetic"}, "model": {"width": 16}, "epochs": epochs,
                 "batch_size": 64, "seed": seed, "scaling": {"workers": 1, "cpus_per_worker": 0.75}, "tracking": {"wandb": False}},
        "space": {"optim.lr": {"type": "loguniform", "low": 1e-5, "high": 1e-1},
                  "optim.weight_decay": {"type": "loguniform", "low": 1e-6, "high": 1e-2},
                  "model.width": {"type": "choice", "values": [4, 8, 16]}},
        "objective": OBJ,
        "searcher": {"type": "tpe" if asha_tpe else "random", "seed": seed, "n_startup_trials": 3},
        "scheduler": {"type": "asha" if asha_tpe else "none", "grace_period": 1, "reduction_factor": 3},
        "budget": {"trials": trials, "concurrency": 2, "trial_cpus": 0.25},
        "retention": {"keep": "winner"}, "promote": {"into": None},
    })


def cost_to_target(sweep_dir: Path, target: float) -> tuple[float, int]:
    """Trial-epochs (in the order Tune received the reports) until the objective first reaches ``target``."""
    reports = [json.loads(x) for x in (sweep_dir / "lifecycle.jsonl").read_text().splitlines()]
    scores = [r["value"] for r in reports if r["event"] == "result"]
    for i, score in enumerate(scores, 1):
        if score >= target:
            return i, len(scores)
    return float("inf"), len(scores)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--target", type=float, default=0.85)
    args = ap.parse_args()
    with private_hub("flotilla-bench-") as (hub, _):
        generate(hub, "faces", "synthetic", args.n, thresholds=Thresholds(min_group_count=1))
        ensure_ray()
        costs = {"asha+tpe": [], "random": []}
        walls = {"asha+tpe": [], "random": []}
        for seed in range(args.seeds):
            for arm in ("asha+tpe", "random"):
                t = time.perf_counter()
                res = sweep(spec(f"hpo-{arm.replace('+', '-')}-{seed}", seed, args.trials, args.epochs, arm == "asha+tpe"), hub=hub)
                walls[arm].append(time.perf_counter() - t)
                c, total = cost_to_target(Path(res.directory), args.target)
                costs[arm].append(c)
                best = res.winner.metrics.get("val/score") if res.winner else float("nan")
                print(f"seed {seed} {arm:<9} trial-epochs to target: {c}  (of {total}; best {best:.3f}; {walls[arm][-1]:.0f}s)")
    med = {k: statistics.median(v) for k, v in costs.items()}
    print(f"median trial-epochs to objective >= {args.target}: asha+tpe {med['asha+tpe']}, random {med['random']}")
    print(f"median wall time: asha+tpe {statistics.median(walls['asha+tpe']):.0f}s, random {statistics.median(walls['random']):.0f}s")
    print(f"ratio asha+tpe / random trial-epochs to target: {med['asha+tpe'] / med['random']:.2f}x  (goal <= 0.5x)")


if __name__ == "__main__":
    main()
