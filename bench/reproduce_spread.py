"""Is ``reproduce``'s default tolerance above repeat noise and below what another seed moves?

One private local lakeFS, one data commit (900 synthetic faces), the tiny spec of
tests/integration/test_reproduce.py, all in one run on one local Ray: trained R times
with seed 0, then once with each other seed. Every metric of the first seed-0 model's
card is read at that card's best epoch in every run (the epoch ``reproduce`` compares)
and set against the tolerance ``reproduce`` applies to it (``tolerance_for``):
  * repeat spread: max - min over the seed-0 runs (goal: spread / tolerance <= 1);
  * seed difference, per other seed: the largest |seed-s value - seed-0 value| over the
    seed-0 runs (goal: tolerance / difference < 1 for every seed, so that the tolerance
    tells a real change from noise).
Prints each run's metrics as it ends, then the table, then the ratios with PASS/FAIL.
Run: `PYTHONPATH=$PWD/platform .venv/bin/python bench/reproduce_spread.py [--repeats 3 --seeds 1,2]`.
"""

from __future__ import annotations

import argparse
import math
import os
import time

from flotilla.cluster import ensure_ray
from flotilla.data.api import generate
from flotilla.data.validate import Thresholds
from flotilla.hub.local import private_hub
from flotilla.registry import read_card, resolve
from flotilla.specs import FamilySpec, parse_spec
from flotilla.training import train
from flotilla.training.reproduction import tolerance_for

REPO = "faces"


def tiny_spec(commit: str, workers: int, seed: int) -> FamilySpec:
    """The spec the default tolerances were measured on (tests/integration/test_reproduce.py), on one commit."""
    spec = {
        "name": "spread",
        "data": {"repo": REPO, "dataset": "faces", "ref": commit},
        "model": {"width": 8},
        "epochs": 2,
        "batch_size": 64,
        "scaling": {"workers": workers, "cpus_per_worker": 1},
        "optim": {"lr": 0.003},
        "seed": seed,
        "tracking": {"wandb": False},
    }
    return parse_spec(FamilySpec, spec)


def fmt_ratio(x: float) -> str:
    return "n/a" if math.isnan(x) else ("inf" if math.isinf(x) else f"{x:.2f}x")


def ratio(num: float, den: float) -> float:
    """``num / den`` where 0 / 0 is undefined (nan) and x / 0 is infinite."""
    if den == 0:
        return math.nan if num == 0 else math.inf
    return num / den


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=900, help="synthetic faces")
    ap.add_argument("--repeats", type=int, default=3, help="runs with seed 0")
    ap.add_argument("--seeds", default="1,2", help="other seeds, one run each")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    others = [int(s) for s in args.seeds.split(",")]
    os.environ.setdefault("WANDB_MODE", "offline")
    with private_hub("flotilla-bench-") as (hub, _):
        generate(hub, REPO, "faces", args.n, seed=5, thresholds=Thresholds(min_group_count=3))
        commit = hub.repo(REPO).resolve("main")
        print(f"data commit {commit[:12]}: {args.n} synthetic faces", flush=True)
        ensure_ray()
        runs: list[tuple[int, list[dict]]] = []  # (seed, history)
        card = None
        for seed in [0] * args.repeats + others:
            t = time.perf_counter()
            (model,) = train(tiny_spec(commit, args.workers, seed), hub=hub).models
            if card is None:
                card = read_card(hub.repo(REPO), resolve(hub, model.model_uri, REPO))
            runs.append((seed, model.history))
            shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(model.metrics.items()))
            print(f"seed {seed} run {len(runs)}: {shown} ({time.perf_counter() - t:.0f}s)", flush=True)
    assert card is not None
    epoch = card.best_epoch

    def value(history: list[dict], key: str) -> float:
        return float(history[epoch][f"val/{key}"]) if epoch < len(history) else math.nan

    keys = sorted(card.metrics)
    rows = []
    for key in keys:
        base = [value(h, key) for s, h in runs if s == 0]
        diffs = {s: max(abs(value(h, key) - b) for b in base) for s, h in runs if s != 0}
        rows.append((key, tolerance_for(key), base, max(base) - min(base), diffs))

    print(f"\nmetrics at the card's best epoch ({epoch}); {args.repeats} runs with seed 0, one with each of seeds {args.seeds}")
    head = f"{'metric':<18} {'tolerance':>9} {'seed 0 (first)':>14} {'repeat spread':>13}" + "".join(
        f"{f'|d| seed {s}':>12}" for s in others
    )
    print(head)
    for key, tol, base, spread, diffs in rows:
        print(f"{key:<18} {tol:>9.4g} {base[0]:>14.4f} {spread:>13.4g}" + "".join(f"{diffs[s]:>12.4f}" for s in others))

    print()
    for key, tol, _, spread, diffs in rows:
        r_spread = ratio(spread, tol)
        ok_spread = spread <= tol
        seed_ratios = {s: ratio(tol, d) for s, d in diffs.items()}
        count = key.rsplit("/", 1)[-1] == "n"
        ok_seed = all(r < 1 for r in seed_ratios.values())
        verdict_seed = "n/a (a sample count)" if count else ("PASS" if ok_seed else "FAIL")
        print(
            f"{key:<18} spread / tolerance {fmt_ratio(r_spread):>6} (goal <= 1x) {'PASS' if ok_spread else 'FAIL'};  "
            + "  ".join(f"tolerance / |d| seed {s} {fmt_ratio(r):>6}" for s, r in seed_ratios.items())
            + f" (goal < 1x) {verdict_seed}"
        )


if __name__ == "__main__":
    main()
