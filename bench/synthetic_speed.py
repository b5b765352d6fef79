"""Measure the synthetic face generator's throughput on ONE core.

The embedded dataset is generated on the fly by data-loading workers, so its
single-core rate decides how many workers a training job needs. Threads are
pinned to 1 *before* numpy is imported (BLAS pools start at import); ``--cpu``
also pins the process to one CPU (on a busy machine pick an idle one). The
CPU-time rate is the robust figure when other processes share the machine.

    python bench/synthetic_speed.py [--n 8192] [--size 64] [--repeats 3] [--cpu N]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

try:
    import flotilla.data.synthetic  # noqa: F401
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from flotilla.data.synthetic import FaceSpec, generate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=8192, help="images per repeat")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cpu", type=int, default=None, help="pin to this CPU (Linux)")
    args = ap.parse_args()

    pinned = "no"
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
        pinned = f"cpu {args.cpu}"
    spec = FaceSpec(size=args.size)
    generate(256, seed=args.seed, spec=spec)  # warm-up: noise banks, caches

    wall, cpu_rates = [], []
    for r in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        generate(args.n, seed=args.seed, spec=spec, start=(r + 1) * args.n)
        t1, c1 = time.perf_counter(), time.process_time()
        wall.append(args.n / (t1 - t0))
        cpu_rates.append(args.n / max(c1 - c0, 1e-9))
    print(f"synthetic faces {args.size}x{args.size}, n={args.n} x {args.repeats} repeats, 1 thread, pinned: {pinned}")
    print(f"images/s (wall): best {max(wall):.0f}  median {statistics.median(wall):.0f}")
    print(f"images/s (cpu):  best {max(cpu_rates):.0f}  median {statistics.median(cpu_rates):.0f}")


if __name__ == "__main__":
    main()
