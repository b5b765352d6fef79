"""One shared 3-head model vs three separate single-task models: same data commit, epochs, seed.

Both arms run on the same machine in one invocation, each with the same Ray
resources (the separate models one after another, so their times add up as
they would for three teams sharing the cluster). Prints the wall-time ratio and
each task's metric difference last.
Run: `.venv/bin/python bench/multitask.py [--n 20000 --epochs 4]`.
"""

from __future__ import annotations

import argparse
import os
import time

from flotilla.cluster import ensure_ray
from flotilla.data.api import generate
from flotilla.data.validate import Thresholds
from flotilla.hub.local import private_hub
from flotilla.specs import load_family_spec
from flotilla.training import train

KEYS = {"age": ("age/mae", "min"), "gender": ("gender/accuracy", "max"), "emotion": ("emotion/accuracy", "max")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    with private_hub("flotilla-bench-") as (hub, _):
        generate(hub, "faces", "synthetic", args.n, thresholds=Thresholds(min_group_count=1))
        ensure_ray()
        over = {"epochs": args.epochs, "scaling": {"workers": args.workers}, "tracking": {"wandb": False}}
        shared_spec = load_family_spec("jobs/face_family.yaml", {**over, "name": "bench-shared"})
        t = time.perf_counter()
        shared = train(shared_spec, hub=hub)
        t_shared = time.perf_counter() - t
        t_sep, separate = 0.0, {}
        for task in ("age", "gender", "emotion"):
            spec = load_family_spec("jobs/face_family.yaml", {**over, "name": f"bench-{task}", "tasks": [task]})
            t = time.perf_counter()
            separate[task] = train(spec, hub=hub)
            t_sep += time.perf_counter() - t
    print(f"shared 3-head model: {t_shared:.0f}s   three separate models: {t_sep:.0f}s (sum)")
    for task, (key, mode) in KEYS.items():
        a, b = shared.metric(key), separate[task].metric(key)
        better = (a < b) if mode == "min" else (a > b)
        print(
            f"{key:<18} shared {a:.4f}  separate {b:.4f}  diff {a - b:+.4f} ({'shared better' if better else 'separate better'})"
        )
    print(f"ratio shared / separate wall time: {t_shared / t_sep:.2f}x  (goal <= 0.5x)")


if __name__ == "__main__":
    main()
