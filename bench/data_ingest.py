"""Reading training data from the hub vs local disk, measured side by side in one run.

A private local lakeFS; N synthetic faces ingested (timed). Then every shard is
read and every image decoded to uint8, four ways:
  hub cold  – through the S3 gateway into an empty node cache
  hub warm  – the same reader again (the cache hit path later epochs/trials take)
  local     – the same Parquet shards from a local directory
  raw       – decode only, shards already in memory (the upper bound)
Prints samples/s and the ratios last. Run: `.venv/bin/python bench/data_ingest.py [--n 10000]`.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from flotilla.data import layout
from flotilla.data.api import generate
from flotilla.data.loader import HubDataset
from flotilla.data.pinning import resolve_data
from flotilla.data.validate import Thresholds
from flotilla.hub.local import private_hub


def decode_all(tables) -> int:
    n = 0
    for t in tables:
        for img in t.column("image").to_pylist():
            with Image.open(io.BytesIO(img)) as im:
                np.asarray(im.convert("RGB"))
            n += 1
    return n


def rate(label: str, fn) -> float:
    t = time.perf_counter()
    n = fn()
    dt = time.perf_counter() - t
    print(f"{label:<10} {n:>7} samples in {dt:6.2f}s = {n / dt:8.0f} samples/s")
    return n / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10_000)
    args = ap.parse_args()
    with private_hub("flotilla-bench-") as (hub, _):
        home = hub.settings.home
        t = time.perf_counter()
        generate(hub, "bench", "faces", args.n, thresholds=Thresholds(min_group_count=1), create_repo=True)
        print(f"ingest    {args.n:>7} samples in {time.perf_counter() - t:6.2f}s (generate + encode + upload + validate + merge)")
        ref = resolve_data(hub, "bench", "main", "faces")
        ds = HubDataset(ref, hub.credentials, cache_dir=home / "node-cache")
        shards = ds.manifest.shards
        local = home / "local-shards"
        local.mkdir()
        for s in shards:
            (local / Path(s.path).name).write_bytes(hub.repo("bench").get(ref.commit, s.path))
        in_memory = [(local / Path(s.path).name).read_bytes() for s in shards]
        cold = rate("hub cold", lambda: decode_all(ds.read_shard(s) for s in shards))
        warm = rate("hub warm", lambda: decode_all(ds.read_shard(s) for s in shards))
        disk = rate("local", lambda: decode_all(pq.read_table(local / Path(s.path).name) for s in shards))
        raw = rate("raw", lambda: decode_all(layout.decode_table(b) for b in in_memory))
    print(f"ratio hub-warm / local-disk: {warm / disk:.2f}x  (goal >= 0.9x)")
    print(f"ratio hub-cold / local-disk: {cold / disk:.2f}x  (goal >= 0.5x)")
    print(f"ratio local-disk / raw-decode: {disk / raw:.2f}x")


if __name__ == "__main__":
    main()
