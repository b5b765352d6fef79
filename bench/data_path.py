"""The training data path: the decoded-image cache vs decoding PNGs every epoch, side by side in one run.

A private local lakeFS; N synthetic 64x64 faces ingested. Then, in this one process, whole ``train``
epochs (batch 256, every batch materialised with its labels and masks) through flotilla's own
``HubDataset.iter_batches``:
  png warm      - ``decoded=False``: shards from the warm node cache, every PNG decoded each epoch
  decoded cold  - the first epoch with the decoded cache: each verified shard decoded once and written
  decoded fresh - a fresh HubDataset (a new trial's view) over the same node cache: its first epoch
  decoded warm  - its later epochs: memory-mapped arrays gathered by the prefetch thread
Warm figures are the median of --epochs epochs. Prints samples/s, the node cache's bytes of PNG shards
vs decoded arrays, and the ratio last. Run: `.venv/bin/python bench/data_path.py [--n 20000]`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from flotilla.data.api import generate
from flotilla.data.decoded import decoded_key
from flotilla.data.loader import HubDataset
from flotilla.data.pinning import resolve_data
from flotilla.data.validate import Thresholds
from flotilla.hub.local import private_hub

BATCH = 256


def epoch(ds: HubDataset, index: int) -> tuple[int, float]:
    t = time.perf_counter()
    n = sum(len(b["image"]) for b in ds.iter_batches("train", BATCH, seed=0, epoch=index))
    return n, time.perf_counter() - t


def show(label: str, n: int, seconds: float) -> float:
    print(f"{label:<14} {n:>7} samples in {seconds:7.3f}s = {n / seconds:10.0f} samples/s", flush=True)
    return n / seconds


def warm(label: str, ds: HubDataset, epochs: int) -> float:
    runs = [epoch(ds, 1 + e) for e in range(epochs)]
    n = runs[0][0]
    return show(label, n, statistics.median(dt for _, dt in runs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--epochs", type=int, default=3, help="warm epochs per arm (median)")
    args = ap.parse_args()
    with private_hub("flotilla-bench-") as (hub, _):
        cache = Path(hub.settings.home) / "node-cache"
        t = time.perf_counter()
        generate(hub, "bench", "faces", args.n, thresholds=Thresholds(min_group_count=1), create_repo=True)
        print(f"ingest         {args.n:>7} samples in {time.perf_counter() - t:7.2f}s", flush=True)
        ref = resolve_data(hub, "bench", "main", "faces")

        png = HubDataset(ref, hub.credentials, cache_dir=cache, image_size=64, decoded=False)
        epoch(png, 0)  # fills the node's blob cache: the warm state of today's loader
        png_rate = warm("png warm", png, args.epochs)

        cold = HubDataset(ref, hub.credentials, cache_dir=cache, image_size=64)
        cold_rate = show("decoded cold", *epoch(cold, 0))
        fresh = HubDataset(ref, hub.credentials, cache_dir=cache, image_size=64)
        show("decoded fresh", *epoch(fresh, 0))  # a new trial's first epoch: its manifest + labels reads, its maps
        dec_rate = warm("decoded warm", fresh, args.epochs)
        assert fresh.decoded_cache.stats.builds == 0 and fresh.cache.stats.misses <= 2  # manifest + labels only

        shards = fresh.manifest.shards
        png_bytes = sum(fresh.cache.path(s.sha256).stat().st_size for s in shards)
        dec_bytes = sum(fresh.cache.path(decoded_key(s.sha256, 64)).stat().st_size for s in shards)
        print(f"disk           PNG shards {png_bytes / 2**20:8.1f} MiB, decoded arrays {dec_bytes / 2**20:8.1f} MiB")
    print(f"ratio decoded-cold / png-warm: {cold_rate / png_rate:.2f}x")
    print(f"ratio disk decoded / PNG: {dec_bytes / png_bytes:.2f}x")
    print(f"ratio decoded-warm / png-warm: {dec_rate / png_rate:.1f}x  (goal >= 50x; and decoded warm >= 200k samples/s)")


if __name__ == "__main__":
    main()
