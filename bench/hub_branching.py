"""How much does an experiment branch cost as the repository grows?

Measured side by side in one run, on a private local lakeFS:
  * time to create a branch on a repo of 1k objects and of 20k objects (median of N);
  * time to copy the same 20k objects to a new prefix on local disk (the
    "copy the dataset per experiment" alternative without lakeFS).
Prints both ratios last. Run: `make bench` or `.venv/bin/python bench/hub_branching.py`.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

from flotilla.hub.local import private_hub


def make_files(root: Path, n: int, size: int) -> None:
    root.mkdir(parents=True)
    payload = bytes(range(256)) * (size // 256 + 1)
    for i in range(n):
        d = root / f"part-{i // 1000:03d}"
        d.mkdir(exist_ok=True)
        (d / f"obj-{i:06d}.bin").write_bytes(payload[i % 256 : i % 256 + size])


def time_branching(repo, n: int) -> float:
    base = repo.resolve("main")
    times = []
    for i in range(n):
        t = time.perf_counter()
        repo.create_branch(f"bench-{i:04d}", base)
        times.append(time.perf_counter() - t)
    for i in range(n):
        repo.delete_branch(f"bench-{i:04d}")
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--small", type=int, default=1_000)
    ap.add_argument("--large", type=int, default=20_000)
    ap.add_argument("--object-bytes", type=int, default=4096)
    ap.add_argument("--branches", type=int, default=50)
    args = ap.parse_args()

    with private_hub("flotilla-bench-") as (hub, _):
        home = hub.settings.home
        results = {}
        for label, n in (("small", args.small), ("large", args.large)):
            src = home / "imports" / f"ds-{n}"
            make_files(src, n, args.object_bytes)
            repo = hub.ensure_repo(f"bench-{n}")
            t = time.perf_counter()
            repo.import_prefix("main", f"local://{src}/", "data/", f"import {n} objects")
            print(f"imported {n} objects in {time.perf_counter() - t:.1f}s (zero-copy import)")
            assert len(repo.list("main", "data/")) == n
            results[label] = time_branching(repo, args.branches)
            print(f"branch create, {n:>6} objects: median {results[label] * 1e3:.2f} ms over {args.branches}")
        src = home / "imports" / f"ds-{args.large}"
        copies = []
        for i in range(3):
            t = time.perf_counter()
            shutil.copytree(src, home / f"copy-{i}")
            copies.append(time.perf_counter() - t)
        copy = statistics.median(copies)
        print(f"copy {args.large} objects to a new prefix (local disk): median {copy * 1e3:.0f} ms over 3")
    print(f"ratio branch@{args.large} / branch@{args.small}: {results['large'] / results['small']:.2f}x  (goal <= 1.5x)")
    print(f"ratio copy@{args.large} / branch@{args.large}: {copy / results['large']:.0f}x  (goal >= 50x)")


if __name__ == "__main__":
    main()
