"""How soon does ASHA + TPE find what a full random search finds? Trial-epochs and wall time to that target.

The space is the shipped ``tuning/face_family.yaml`` (six dimensions, one conditional: what users sweep),
each trial up to ``--epochs`` (9) epochs, 2 trials at a time. Three arms per seed, one invocation:

1. **random** — the shipped spec with a random searcher and no scheduler, its whole budget
   (``--trials``, 24 trials × 9 epochs): no early stop of any kind.
2. The **target** — the median over seeds of the best objective each random search reached with its
   whole budget (:func:`hpo_traces.target_of`), computed once every random arm has run.
3. **tpe** (TPE, no scheduler, ``--trials``) and **asha+tpe** (the shipped searcher and scheduler,
   ``--asha-trials``, 2 × ``--trials`` by default: its trials are mostly short), each with
   ``budget.target`` at the target (no new trials once one reaches it: the trace up to the first hit is
   what it would be without the stop; ``--no-stop`` runs them to their whole budget).

Every report of every sweep is traced with its wall time since ``sweep()`` was called and the
cumulative trial-epochs (:mod:`hpo_traces`); every arm, random included, is scored against the target.
Seed ``s`` is the training seed (``seed``) and the sampler seed (``searcher.seed``) of all three arms.

Prints each sweep as it ends, then the per-seed table, the medians and the ratios LAST; writes the
anytime curves (PNG) and the raw traces (JSON) to ``--out``.png/.json (the JSON after every sweep).
Run: ``.venv/bin/python bench/hpo.py`` (the defaults: 5 seeds, 24 trials, 9 epochs, 3,000 faces at 32 px);
smoke: ``--seeds 1 --trials 3 --epochs 2 --n 600``; score and plot a saved run: ``--replot FILE.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from flotilla.cluster import ensure_ray
from flotilla.data.api import generate
from flotilla.data.synthetic import FaceSpec
from flotilla.data.validate import Thresholds
from flotilla.hub.client import Hub
from flotilla.hub.local import private_hub
from flotilla.tune import NoWinner, SweepResult, sweep
from flotilla.tune.journal import JOURNAL
from hpo_traces import ARMS, INF, Cost, Trace, cost, load, median, plot, ratio, read_trace, save, shown_ratio, target_of

SPEC = Path(__file__).resolve().parents[1] / "tuning" / "face_family.yaml"
GOAL = 0.5


def overrides(arm: str, seed: int, args: argparse.Namespace, target: float | None) -> dict[str, Any]:
    """The shipped sweep spec, changed only where the benchmark's design says (nothing about the space)."""
    o: dict[str, Any] = {
        "name": f"hpo-{arm.replace('+', '-')}-{seed}",
        "overrides.epochs": args.epochs,
        "overrides.seed": seed,
        "overrides.data.image_size": args.size,
        "overrides.tracking.wandb": False,
        "searcher.seed": seed,
        "budget.trials": (args.asha_trials or 2 * args.trials) if arm == "asha+tpe" else args.trials,
        "budget.concurrency": 2,
        "promote.into": None,  # the bench measures the search; merging a winner into main is not part of it
    }
    if arm == "random":
        o |= {"searcher.type": "random", "scheduler.type": "none"}
    elif arm == "tpe":
        o["scheduler.type"] = "none"
    if target is not None and arm != "random" and not args.no_stop:
        o["budget.target"] = target
    return o


def run_arm(hub: Hub, arm: str, seed: int, args: argparse.Namespace, target: float | None) -> Trace:
    started = time.time()
    try:
        res: SweepResult = sweep(SPEC, overrides=overrides(arm, seed, args, target), hub=hub)
    except NoWinner as exc:  # every trial stopped early: its reports still count
        assert exc.result is not None
        res = exc.result
    wall = time.time() - started
    trace = read_trace(Path(res.directory) / JOURNAL, arm, seed, res.sweep_id, started, wall, len(res.trials))
    print(
        f"seed {seed} {arm:<9} {trace.trials:>2} trials, {trace.trial_epochs:>3} trial-epochs, best {trace.best:.4f}, "
        f"{wall:.0f}s (first report {trace.reports[0].wall_s if trace.reports else INF:.0f}s in)",
        flush=True,
    )
    return trace


def report(traces: dict[str, list[Trace]], target: float) -> None:
    """Per-seed table, medians, then the ratios (the goal's last)."""
    seeds = sorted({t.seed for ts in traces.values() for t in ts})
    by = {(t.arm, t.seed): t for ts in traces.values() for t in ts}
    costs: dict[str, list[Cost]] = {arm: [cost(by[arm, s], target) for s in seeds if (arm, s) in by] for arm in ARMS}
    print(f"\ntarget = median over {len(traces.get('random', []))} seeds of random search's best = {target:.4f}")
    print("random's best per seed: " + ", ".join(f"{t.seed}: {t.best:.4f}" for t in traces.get("random", [])))
    print("\ntrial-epochs / wall time to the target (>=N: never reached, censored at what it spent)")
    print(f"{'seed':>4}  " + "  ".join(f"{arm:>22}" for arm in ARMS))
    for s in seeds:
        cells = []
        for arm in ARMS:
            t = by.get((arm, s))
            c = cost(t, target) if t else None
            cells.append(f"{c.shown('epochs'):>6} / {c.shown('wall'):>7} ({t.trials:>2}tr)" if c and t else "-")
        print(f"{s:>4}  " + "  ".join(f"{x:>22}" for x in cells))
    med = {arm: (median([c.trial_epochs for c in cs]), median([c.wall_s for c in cs])) for arm, cs in costs.items() if cs}
    reached = {arm: sum(c.reached for c in cs) for arm, cs in costs.items()}
    print(
        "median  "
        + "  ".join(
            f"{arm} {m[0]:.0f} / {m[1]:.0f}s ({reached[arm]}/{len(costs[arm])} reached)"
            if m[0] < INF
            else f"{arm} never / never ({reached[arm]}/{len(costs[arm])} reached)"
            for arm, m in med.items()
        )
    )
    if "random" not in med:
        return
    for arm in ("tpe", "asha+tpe"):
        if arm not in med:
            continue
        e, w = ratio(med[arm][0], med["random"][0]), ratio(med[arm][1], med["random"][1])
        ok = e <= GOAL and w <= GOAL
        verdict = f"  -> {'PASS' if ok else 'FAIL'} (goal <= {GOAL}x on both)" if arm == "asha+tpe" else ""
        print(f"ratio {arm} / random, median to target: trial-epochs {shown_ratio(e)}, wall time {shown_ratio(w)}{verdict}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5, help="seeds measured (an odd number: the target is a median)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--trials", type=int, default=24, help="random's and TPE's trial budget")
    ap.add_argument("--asha-trials", type=int, default=None, help="ASHA + TPE's trial budget (default 2 x --trials)")
    ap.add_argument("--epochs", type=int, default=9, help="a trial's full training")
    ap.add_argument("--n", type=int, default=3000, help="synthetic faces")
    ap.add_argument("--size", type=int, default=32, help="image size (px) generated and trained at")
    ap.add_argument("--no-stop", action="store_true", help="run TPE and ASHA + TPE to their whole budget too")
    ap.add_argument("--out", type=Path, default=Path("artifacts/bench/hpo"), help="writes OUT.png and OUT.json")
    ap.add_argument("--replot", type=Path, default=None, help="score and plot a saved JSON of traces; train nothing")
    ap.add_argument("--resume", type=Path, default=None, help="go on with a saved JSON of an unfinished run of the same design")
    args = ap.parse_args()
    png, raw = args.out.with_suffix(".png"), args.out.with_suffix(".json")
    if args.replot:
        design, traces, target = load(args.replot)
        target = target if target is not None else target_of(traces["random"])
        plot(png, traces, target, f"bench/hpo.py, replotted from {args.replot}")
        print(f"curves: {png}")
        report(traces, target)
        return
    t0 = time.perf_counter()
    design = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "resume"}
    title = (
        f"bench/hpo.py: tuning/face_family.yaml, {args.trials} trials x {args.epochs} epochs, 2 at a time, "
        f"{args.n} faces at {args.size} px, seeds {args.first_seed}-{args.first_seed + args.seeds - 1}"
    )
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    traces: dict[str, list[Trace]] = {arm: [] for arm in ARMS}
    if args.resume:  # each sweep's figures are its own: a run stopped between sweeps goes on where it stopped
        saved, traces, _ = load(args.resume)
        traces = {arm: traces.get(arm, []) for arm in ARMS}
        if saved != design:
            raise SystemExit(f"{args.resume} is a run of another design: {saved} != {design}")
        print(f"resuming {args.resume}: " + ", ".join(f"{a} seeds {[t.seed for t in ts]}" for a, ts in traces.items()))
    done = {(t.arm, t.seed) for ts in traces.values() for t in ts}
    with private_hub("flotilla-bench-") as (hub, _):
        generate(hub, "faces", "synthetic", args.n, spec=FaceSpec(size=args.size), thresholds=Thresholds(min_group_count=1))
        ensure_ray()
        for seed in seeds:
            if ("random", seed) not in done:
                traces["random"].append(run_arm(hub, "random", seed, args, None))
                save(raw, design, traces, None)
        target = target_of(traces["random"])
        print(f"target = {target:.4f} (median over seeds of random search's best with its whole budget)", flush=True)
        for seed in seeds:
            for arm in ("tpe", "asha+tpe"):
                if (arm, seed) not in done:
                    traces[arm].append(run_arm(hub, arm, seed, args, target))
                    save(raw, design, traces, target)
    plot(png, traces, target, title)
    print(f"\ncurves: {png}  traces: {raw}  ({time.perf_counter() - t0:.0f}s in all)")
    report(traces, target)


if __name__ == "__main__":
    main()
