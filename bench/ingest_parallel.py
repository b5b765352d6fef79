"""Ingest in one process vs a process per core, measured side by side in one run.

A private local lakeFS; the same N synthetic faces (same seed: the same bytes) ingested twice, as two
datasets: ``workers=1`` (everything in this process) and ``workers=cores`` (a process pool). Each is the
whole ``generate`` call: branch, generate + encode + inspect per shard, upload, gate, commit, merge.
Prints wall time, samples/s and samples/s per core of each, the ratio last.
Run: `.venv/bin/python bench/ingest_parallel.py [--n 32000] [--workers K]`.
"""

from __future__ import annotations

import argparse
import resource
import time

from flotilla.data.api import generate
from flotilla.data.shardwork import default_workers
from flotilla.data.store import read_manifest
from flotilla.data.validate import Thresholds
from flotilla.hub.local import private_hub


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (the pool's workers, once it is shut down)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=32_000)
    ap.add_argument("--workers", type=int, default=default_workers(), help="the parallel run's processes (default: cores)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"{args.n} faces, cores available: {default_workers()}, parallel workers: {args.workers}")
    walls: dict[int, float] = {}
    with private_hub("flotilla-bench-") as (hub, _):
        shas = {}
        for workers in (1, args.workers):
            t, cpu, kids = time.perf_counter(), time.process_time(), _children_cpu()
            result = generate(
                hub,
                "bench",
                f"faces-w{workers}",
                args.n,
                seed=args.seed,
                thresholds=Thresholds(min_group_count=1),
                workers=workers,
                create_repo=True,
            )
            walls[workers] = wall = time.perf_counter() - t
            cpu, kids = time.process_time() - cpu, _children_cpu() - kids
            assert result.passed
            shas[workers] = [s.sha256 for s in read_manifest(hub.repo("bench"), "main", f"faces-w{workers}").shards]
            rate = args.n / wall
            print(
                f"workers={workers:<3} {wall:7.1f} s  {rate:7.0f} samples/s  {rate / workers:7.0f} samples/s/core"
                f"  (CPU: this process {cpu:6.1f} s, workers {kids:6.1f} s; lakeFS not counted)"
            )
    print(f"same shards whatever the workers: {shas[1] == shas[args.workers]}")
    print(
        f"ratio wall(workers=1) / wall(workers={args.workers}): {walls[1] / walls[args.workers]:.2f}x  (goal >= 1.8x on 2 cores)"
    )


if __name__ == "__main__":
    main()
