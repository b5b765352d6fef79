"""What presigned reads take off the lakeFS server: the S3 gateway vs presigned URLs, side by side in one run.

moto's S3 server on 127.0.0.1 is the blockstore of a private embedded lakeFS; N synthetic faces are ingested.
Then, in this process, every shard of the pinned commit is read --passes times per arm, one object at a time
and with no node cache, as the loader reads them:
  gateway    - HubDataset._read_gateway: pyarrow's S3FileSystem through lakeFS's S3 gateway (FLOTILLA_PRESIGN=off)
  presigned  - HubDataset._read with FLOTILLA_PRESIGN=auto: stat_object(presign=true), then a GET straight to moto
--rounds rounds, the arms alternating which goes first. Per arm, medians over rounds: the lakeFS server's CPU
seconds per GiB (psutil on its pid), wall seconds per GiB, moto's CPU seconds per GiB, lakeFS's gateway GETs
and StatObject calls per shard read (its /metrics). Ratios presigned / gateway last.

moto on loopback is not S3 (a Python server on the same cores): wall times and moto's CPU are this machine's;
the lakeFS CPU ratio is the figure: what the lakeFS server no longer carries. docs/benchmarks.md has the design.
Run: `nice -n 19 .venv/bin/python bench/presigned_reads.py [--n 8192 --passes 3 --rounds 5]`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.s3store: the moto server the tests use too

from tests.s3store import lakefs_counter, moto_server

from flotilla.data.api import generate
from flotilla.data.loader import HubDataset
from flotilla.data.pinning import resolve_data
from flotilla.data.validate import Thresholds
from flotilla.hub import presign
from flotilla.hub.local import private_hub
from flotilla.settings import FLOTILLA_PRESIGN

BUCKET = "bench"
GIB = 2**30


def cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def read_all(ds: HubDataset, arm: str, passes: int) -> int:
    n = 0
    for _ in range(passes):
        for shard in ds.manifest.shards:
            n += len(ds._read_gateway(shard.path) if arm == "gateway" else ds._read(shard.path))
    return n


def measure(arm: str, ref, hub, lakefs: psutil.Process, moto: psutil.Process, passes: int) -> dict[str, float]:
    os.environ[FLOTILLA_PRESIGN] = "off" if arm == "gateway" else "auto"
    ds = HubDataset(ref, hub.credentials)
    ds.manifest  # noqa: B018 -- manifest and labels read before the clock starts
    shards = len(ds.manifest.shards) * passes
    before = (cpu(lakefs), cpu(moto), time.perf_counter(), gateway_gets(hub), stats(hub))
    nbytes = read_all(ds, arm, passes)
    after = (cpu(lakefs), cpu(moto), time.perf_counter(), gateway_gets(hub), stats(hub))
    gib = nbytes / GIB
    return {
        "lakefs_cpu_per_gib": (after[0] - before[0]) / gib,
        "wall_per_gib": (after[2] - before[2]) / gib,
        "moto_cpu_per_gib": (after[1] - before[1]) / gib,
        "gateway_gets_per_shard": (after[3] - before[3]) / shards,
        "stat_calls_per_shard": (after[4] - before[4]) / shards,
        "gib": gib,
    }


def gateway_gets(hub) -> float:
    return lakefs_counter(hub.endpoint, "gateway_request_duration_seconds_count", operation="get_object")


def stats(hub) -> float:
    return lakefs_counter(hub.endpoint, "api_request_duration_seconds_count", operation="StatObject")


def check_bytes(ref, hub) -> None:
    for arm in ("gateway", "presigned"):
        os.environ[FLOTILLA_PRESIGN] = "off" if arm == "gateway" else "auto"
        ds = HubDataset(ref, hub.credentials)
        for shard in ds.manifest.shards:
            data = ds._read_gateway(shard.path) if arm == "gateway" else ds._read(shard.path)
            assert hashlib.sha256(data).hexdigest() == shard.sha256, (arm, shard.path)
    st = presign.stats(hub.endpoint)
    assert st.fallbacks == 0 and st.direct > 0, st


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--passes", type=int, default=3, help="reads of every shard per arm per round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="flotilla-bench-moto-") as tmp, moto_server(Path(tmp)) as store:
        store.create_bucket(BUCKET)
        with private_hub("flotilla-bench-", blockstore=store.blockstore(BUCKET)) as (hub, server):
            assert server.blockstore is not None
            t = time.perf_counter()
            hub.ensure_repo("bench", storage_namespace=server.blockstore.namespace("bench"))
            generate(hub, "bench", "faces", args.n, thresholds=Thresholds(min_group_count=1))
            print(f"ingest {args.n} samples in {time.perf_counter() - t:.1f}s", flush=True)
            ref = resolve_data(hub, "bench", "main", "faces")
            pid = int(server.pid_path.read_text())
            lakefs, moto = psutil.Process(pid), psutil.Process(store.pid)
            check_bytes(ref, hub)
            runs: dict[str, list[dict[str, float]]] = {"gateway": [], "presigned": []}
            for r in range(args.rounds):
                for arm in ("gateway", "presigned") if r % 2 == 0 else ("presigned", "gateway"):
                    m = measure(arm, ref, hub, lakefs, moto, args.passes)
                    runs[arm].append(m)
                    print(
                        f"round {r} {arm:<9} {m['gib'] * 1024:7.1f} MiB  lakeFS CPU {m['lakefs_cpu_per_gib']:7.2f} s/GiB  "
                        f"wall {m['wall_per_gib']:7.2f} s/GiB  moto CPU {m['moto_cpu_per_gib']:7.2f} s/GiB  "
                        f"gateway GETs/shard {m['gateway_gets_per_shard']:5.1f}  "
                        f"StatObject/shard {m['stat_calls_per_shard']:4.1f}",
                        flush=True,
                    )
    med = {arm: {k: statistics.median(m[k] for m in ms) for k in ms[0]} for arm, ms in runs.items()}
    print("\nmedians over rounds (per GiB read; per shard read)")
    for arm, m in med.items():
        print(
            f"{arm:<9} lakeFS CPU {m['lakefs_cpu_per_gib']:7.2f} s  wall {m['wall_per_gib']:7.2f} s  "
            f"moto CPU {m['moto_cpu_per_gib']:7.2f} s  gateway GETs {m['gateway_gets_per_shard']:5.1f}  "
            f"StatObject {m['stat_calls_per_shard']:4.1f}"
        )
    g, p = med["gateway"], med["presigned"]
    print(f"ratio lakeFS CPU presigned / gateway: {p['lakefs_cpu_per_gib'] / g['lakefs_cpu_per_gib']:.3f}x")
    print(f"ratio wall presigned / gateway: {p['wall_per_gib'] / g['wall_per_gib']:.2f}x  (moto on loopback, not S3)")
    print(f"ratio moto CPU presigned / gateway: {p['moto_cpu_per_gib'] / g['moto_cpu_per_gib']:.2f}x")


if __name__ == "__main__":
    main()
