"""Batch inference: flotilla.infer's Ray Data path vs the same model in a plain in-process loop, one run.

A private local lakeFS and a local Ray. A face family is trained (1 epoch, default width) and merged,
``--n`` unlabelled faces ingested. Both paths read the same commit through the same warm node cache
and run the same code (shard_samples -> predict_with_embedding -> predictions_table) on the
machine's CPUs: in-process (torch on every CPU); Ray Data with one actor of every CPU but the
reads' quarter; Ray Data with two actors sharing that (the reads run beside the pool). One warm-up of
each, then ``--repeats`` alternating runs; medians and the ratios last (docs/benchmarks.md
declares the question and the goal).
Run: ``.venv/bin/python bench/inference.py [--n 8192]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from flotilla.cluster import ensure_ray
from flotilla.data.api import generate
from flotilla.data.loader import HubDataset
from flotilla.data.pinning import resolve_data
from flotilla.data.validate import Thresholds
from flotilla.hub.local import private_hub
from flotilla.loop import infer, load_model
from flotilla.loop.inference import READ_CPUS
from flotilla.loop.predictor import predictions_table
from flotilla.registry import resolve
from flotilla.specs import FamilySpec, parse_spec
from flotilla.training import train

REPO = "bench"


def in_process(hub, model_uri: str, batch_size: int, threads: int) -> tuple[int, float]:
    """The plain loop: load the model, read every shard, predict in batches, keep the tables."""
    torch.set_num_threads(threads)
    t = time.perf_counter()
    loc = resolve(hub, model_uri, REPO)
    model = load_model(loc, hub.credentials)
    data = HubDataset(resolve_data(hub, REPO, "main", "incoming"), hub.credentials, image_size=64)
    tables, n = [], 0
    for i in range(len(data.manifest.shards)):
        ids, images = data.shard_samples(i)
        for k in range(0, len(ids), batch_size):
            preds, feats = model.predict_with_embedding(np.stack(images[k : k + batch_size]))
            tables.append(
                predictions_table(ids[k : k + batch_size], model.tasks, {a: b.numpy() for a, b in preds.items()}, feats.numpy())
            )
            n += len(ids[k : k + batch_size])
    return n, time.perf_counter() - t


def ray_path(hub, model_uri: str, batch_size: int, concurrency: int, cpus: float) -> tuple[int, float, float]:
    t = time.perf_counter()
    r = infer(
        hub,
        model_uri,
        repo=REPO,
        data_ref="main",
        dataset="incoming",
        batch_size=batch_size,
        concurrency=concurrency,
        cpus_per_actor=cpus,
        on_progress=lambda done, total: None,
    )
    return r.rows, r.samples_per_s, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cpus = os.cpu_count() or 1
    with private_hub("flotilla-bench-") as (hub, _):
        hub.ensure_repo(REPO)
        generate(hub, REPO, "faces", 1000, seed=1, thresholds=Thresholds(min_group_count=1))
        generate(hub, REPO, "incoming", args.n, seed=2, labelled=False)
        ensure_ray()
        spec: FamilySpec = parse_spec(
            FamilySpec,
            {
                "name": "bench-fam",
                "data": {"repo": REPO, "dataset": "faces"},
                "epochs": 1,
                "scaling": {"workers": 1, "cpus_per_worker": 1},
                "tracking": {"wandb": False},
                "merge_into": "main",
            },
        )
        run = train(spec, hub=hub)
        model_uri = run.models[0].model_uri
        print(f"model {model_uri}; {args.n} faces; {cpus} CPUs; batch {args.batch_size}")
        plain: list[float] = []
        one: list[float] = []
        many: list[float] = []
        ends: list[float] = []
        for rep in range(args.repeats + 1):  # rep 0: warm-up, not counted
            n, dt = in_process(hub, model_uri, args.batch_size, cpus)
            rows1, rate1, end1 = ray_path(hub, model_uri, args.batch_size, 1, cpus - READ_CPUS)
            rows2, rate2, _ = ray_path(hub, model_uri, args.batch_size, 2, (cpus - READ_CPUS) / 2)
            assert n == rows1 == rows2 == args.n
            print(
                f"{'warm-up' if rep == 0 else f'run {rep}':<8} in-process {n / dt:7.0f}/s   ray 1 actor {rate1:7.0f}/s "
                f"(infer() end to end {n / end1:6.0f}/s)   ray 2 actors {rate2:7.0f}/s"
            )
            if rep:
                plain.append(n / dt)
                one.append(rate1)
                many.append(rate2)
                ends.append(n / end1)
    med = statistics.median
    print(f"median samples/s: in-process {med(plain):.0f}, ray 1 actor {med(one):.0f}, ray 2 actors {med(many):.0f}")
    print(f"ratio ray(1 actor) / in-process: {med(one) / med(plain):.2f}x  (goal >= 0.8x)")
    print(f"ratio ray(2 actors) / ray(1 actor): {med(many) / med(one):.2f}x")
    print(f"ratio infer() end to end / in-process: {med(ends) / med(plain):.2f}x")


if __name__ == "__main__":
    main()
