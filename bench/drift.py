"""Drift detectors: false-alarm rate at zero shift and power under each Shift knob, at n = 200, 500, 2000.

A small face model is trained in-process on CPU (no hub, no Ray); a held-out reference and a pool of
current faces per setting go through it once (embedding + predictions); each repeat draws n current
samples from the pool and runs embedding MMD, prediction shift (Holm over the tasks) and the
combined verdict at alpha 0.05. Prints the detection rates, then the goal checks last.
Run: `.venv/bin/python bench/drift.py [--repeats 40 --null-repeats 200]`.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from facebench import outputs
from flotilla.data.synthetic import FaceSpec, Shift, generate
from flotilla.loop import mmd_test, prediction_shift, verdict
from flotilla.models import REFERENCE_TASKS, MultiTaskModel, compute_losses

ALPHA = 0.05
SIZES = (200, 500, 2000)
SEVERITIES = {
    "lighting": (0.1, 0.25, 0.5),
    "age_mix": (0.1, 0.25, 0.5),
    "occlusion": (0.05, 0.15, 0.3),
    "noise": (0.01, 0.03, 0.06),
}
LEVELS = ("mild", "moderate", "strong")
DETECTORS = ("embedding MMD", "prediction shift", "combined")
KINDS = {"age": "regression", "gender": "binary", "emotion": "multiclass"}


def faces(n: int, seed: int, shift: Shift | None = None) -> dict[str, np.ndarray]:
    b = generate(n, seed=seed, spec=FaceSpec(shift=shift or Shift()))
    return {"image": b.images, "age": b.age, "gender": b.gender.astype(np.int64), "emotion": b.emotion.astype(np.int64)}


def train(n: int, epochs: int, seed: int) -> MultiTaskModel:
    torch.manual_seed(seed)
    data = faces(n, seed)
    model = MultiTaskModel(list(REFERENCE_TASKS.values()), width=16)
    opt = torch.optim.AdamW(model.param_groups(lr=3e-3, weight_decay=1e-4))
    model.train()
    for epoch in range(epochs):
        order = np.random.default_rng([seed, epoch]).permutation(n)
        for i in range(0, n, 128):
            rows = np.sort(order[i : i + 128])
            batch = {k: torch.as_tensor(v[rows]) for k, v in data.items()}
            loss, per_task = compute_losses(model(batch["image"]), batch, model.tasks, model.loss_weighting)  # type: ignore[misc]
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"  epoch {epoch + 1}/{epochs}: " + "  ".join(f"{k} {v:.3f}" for k, v in per_task.items()), flush=True)
    return model.eval()


def detect(ref: dict[str, np.ndarray], cur: dict[str, np.ndarray], seed: int) -> dict[str, bool]:
    mmd = mmd_test(ref["embedding"], cur["embedding"], permutations=200, seed=seed)
    preds = {t: prediction_shift(ref[t], cur[t], kind) for t, kind in KINDS.items()}  # type: ignore[arg-type]
    return {
        "embedding MMD": mmd.p_value <= ALPHA,
        "prediction shift": verdict(preds, alpha=ALPHA).drifted,
        "combined": verdict({"embedding": mmd, **preds}, alpha=ALPHA).drifted,
    }


def wilson_upper(k: int, n: int, z: float = 1.96) -> float:
    p = k / n
    return (p + z * z / (2 * n) + z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--train", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--reference", type=int, default=2000)
    ap.add_argument("--pool", type=int, default=8000)
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--null-repeats", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    print(f"training a small_cnn (width 16) on {args.train} faces, {args.epochs} epochs, CPU", flush=True)
    model = train(args.train, args.epochs, seed=0)
    ref = outputs(model, faces(args.reference, seed=1)["image"])
    settings = [("none", "zero", Shift())] + [
        (knob, level, Shift(**{knob: value}))
        for knob, values in SEVERITIES.items()
        for level, value in zip(LEVELS, values, strict=True)
    ]
    rates: dict[tuple[str, str, int, str], tuple[int, int]] = {}
    for s, (knob, level, shift) in enumerate(settings):
        pool = outputs(model, faces(args.pool, seed=100 + s, shift=shift)["image"])
        repeats = args.null_repeats if knob == "none" else args.repeats
        for n in SIZES:
            hits = dict.fromkeys(DETECTORS, 0)
            for r in range(repeats):
                rows = np.random.default_rng([s, n, r]).choice(args.pool, n, replace=False)
                for d, alarm in detect(ref, {k: v[rows] for k, v in pool.items()}, seed=r).items():
                    hits[d] += alarm
            for d in DETECTORS:
                rates[(knob, level, n, d)] = (hits[d], repeats)
            shown = "  ".join(f"{d} {hits[d] / repeats:.2f}" for d in DETECTORS)
            print(f"[{time.perf_counter() - t0:5.0f}s] {knob:<9} {level:<8} n={n:<5} {shown}", flush=True)

    print(f"\nalarm rate at alpha {ALPHA} (false alarms at zero shift, power otherwise)")
    print(f"{'setting':<28}{'n':>6}" + "".join(f"{d:>18}" for d in DETECTORS))
    for knob, level, shift in settings:
        label = "zero shift" if knob == "none" else f"{knob}={getattr(shift, knob)} ({level})"
        for n in SIZES:
            print(
                f"{label:<28}{n:>6}"
                + "".join(f"{rates[(knob, level, n, d)][0] / rates[(knob, level, n, d)][1]:>18.2f}" for d in DETECTORS)
            )
    print("\ngoal checks")
    for d in DETECTORS:
        for n in SIZES:
            k, m = rates[("none", "zero", n, d)]
            mark, upper = "PASS" if k / m <= 0.05 else "FAIL", wilson_upper(k, m)
            print(f"false alarms {d:<17} n={n:<5} {k / m:.3f} ({k}/{m}, 95% upper {upper:.3f})  goal <= 0.05  {mark}")
    for knob in SEVERITIES:
        k, m = rates[(knob, "moderate", 500, "combined")]
        print(
            f"power combined at {knob} moderate, n=500: {k / m:.2f} ({k}/{m})  goal >= 0.9  {'PASS' if k / m >= 0.9 else 'FAIL'}"
        )


if __name__ == "__main__":
    main()
