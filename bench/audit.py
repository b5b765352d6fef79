"""The data audit on known defects: precision and recall per injected defect, seconds per 10k, and the gain of fixing.

A pool of synthetic faces gets known defects (flipped emotion and gender labels, shifted ages,
near-duplicate images, non-face images); a small face model is trained on the noisy pool; its
embeddings go through the audit's in-memory core (``flotilla.audit.find_issues``: cross-validated
linear probe, one shared kNN graph, cleanlab Datalab per task); each defect kind is scored against
the audit's flags. Then the pool is fixed the way a reviewer accepting the audit's suggestions would
fix it, and a model retrained on it is compared with the noisy-data model (and the clean-data
ceiling) on a held-out clean evaluation set. In one process on CPU, no hub and no Ray (as
``bench/active_learning.py``). The setup and the goals are declared in docs/benchmarks.md; the
goal checks print last.
Run: `.venv/bin/python bench/audit.py [--pool 10000 --seeds 2 --epochs 8]`.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from facebench import BATCH, faces, fit, fresh_model, outputs, scores
from flotilla.audit import find_issues

POOL_SEED, EVAL_SEED = 30, 40
SHARES = {"emotion": 0.05, "gender": 0.05, "age": 0.03, "near_duplicate": 0.01, "non_face": 0.01}
GOALS = {"emotion": 0.8, "gender": 0.8, "near_duplicate": 0.9, "non_face": 0.9}


def non_face(rng: np.random.Generator, size: int, kind: int) -> np.ndarray:
    """Noise, stripes or a flat colour: images a face dataset should not hold."""
    if kind == 0:
        return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    if kind == 1:
        freq, colour = rng.uniform(0.3, 1.2), rng.integers(0, 256, 3)
        wave = (np.sin(np.arange(size) * freq) > 0).astype(np.float32)
        return (wave[None, :, None] * colour[None, None, :] * np.ones((size, 1, 1))).astype(np.uint8)
    return np.broadcast_to(rng.integers(0, 256, 3).astype(np.uint8), (size, size, 3)).copy()


def inject(clean: dict[str, np.ndarray], seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """The noisy pool, the injected rows per defect kind, and each near-duplicate copy's source row."""
    rng = np.random.default_rng([seed, 5])
    n = len(clean["age"])
    noisy = {k: v.copy() for k, v in clean.items()}
    order = rng.permutation(n)
    rows: dict[str, np.ndarray] = {}
    at = 0
    for kind, share in SHARES.items():
        rows[kind] = np.sort(order[at : at + round(share * n)])
        at += len(rows[kind])
    untouched = order[at:]
    e = rows["emotion"]
    noisy["emotion"][e] = (clean["emotion"][e] + rng.integers(1, 7, len(e))) % 7
    noisy["gender"][rows["gender"]] = 1 - clean["gender"][rows["gender"]]
    a = rows["age"]
    shift = rng.uniform(15, 30, len(a)).astype(np.float32)
    up = clean["age"][a] + shift <= 120
    noisy["age"][a] = np.where(up, clean["age"][a] + shift, clean["age"][a] - shift)
    sources = rng.choice(untouched, len(rows["near_duplicate"]), replace=False)
    for copy, src in zip(rows["near_duplicate"], sources, strict=True):
        jitter = rng.normal(0, 2, clean["image"][src].shape)
        noisy["image"][copy] = np.clip(clean["image"][src].astype(np.float32) + jitter, 0, 255).astype(np.uint8)
        for task in ("age", "gender", "emotion"):
            noisy[task][copy] = clean[task][src]
    size = clean["image"].shape[1]
    for i, r in enumerate(rows["non_face"]):
        noisy["image"][r] = non_face(rng, size, i % 3)
    return noisy, rows, sources


def kfold_outputs(pool: dict[str, np.ndarray], folds: int, steps: int, seed: int) -> dict[str, np.ndarray]:
    """Out-of-sample outputs from ``folds`` CNNs, each trained (same recipe) without one fold and predicting it."""
    n = len(pool["age"])
    fold = np.random.default_rng([seed, 77]).permutation(n) % folds
    out = {"age": np.zeros(n), "gender": np.zeros((n, 2)), "emotion": np.zeros((n, 7))}
    for f in range(folds):
        held = np.flatnonzero(fold == f)
        model = fresh_model(seed * 100 + f)
        fit(model, pool, np.flatnonzero(fold != f), steps, [seed, 2, f], "constant")
        o = outputs(model, pool["image"][held])
        p1 = o["gender"].reshape(-1)
        out["age"][held] = o["age"].reshape(-1)
        out["gender"][held] = np.stack([1 - p1, p1], axis=1)
        out["emotion"][held] = o["emotion"]
    return out


def audit(
    model: torch.nn.Module, pool: dict[str, np.ndarray], seed: int, given: dict[str, np.ndarray] | None = None
) -> tuple[dict[str, np.ndarray], float, float]:
    """The audit's flags per kind (boolean per row), the suggested class per classification task, and its timings.

    ``given``: out-of-sample outputs to use instead of the probe (the K-fold CNNs' of ``--kfold``).
    """
    t = time.perf_counter()
    out = outputs(model, pool["image"])
    t_embed = time.perf_counter() - t
    ids = [f"s{i:06d}" for i in range(len(pool["age"]))]
    t = time.perf_counter()
    table = find_issues(
        ids,
        out["embedding"],
        labels={"age": pool["age"].astype(np.float64), "gender": pool["gender"], "emotion": pool["emotion"]},
        kinds={"age": "regression", "gender": "binary", "emotion": "multiclass"},
        images=pool["image"],
        outputs=given,
        seed=seed,
    )
    t_audit = time.perf_counter() - t
    col = {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names if c != "issues"}
    position = {sid: i for i, sid in enumerate(ids)}
    order = np.array([position[s] for s in col["sample_id"]])
    flags = {
        "emotion": col["label_issue_emotion"],
        "gender": col["label_issue_gender"],
        "age": col["label_issue_age"],
        "near_duplicate": col["near_duplicate"],
        "non_face": col["outlier"],
        "suggested_emotion": col["suggested_emotion"],
        "suggested_gender": col["suggested_gender"],
        "near_duplicate_of": col["near_duplicate_of"],
    }
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    return {k: v[back] for k, v in flags.items()}, t_embed, t_audit


def precision_recall(flagged: np.ndarray, injected: np.ndarray, also_right: np.ndarray | None = None) -> tuple[float, float, int]:
    hit = np.zeros(len(flagged), bool)
    hit[injected] = True
    right = hit.copy()
    if also_right is not None:
        right[also_right] = True
    n_flag = int(flagged.sum())
    precision = float((flagged & right).sum() / n_flag) if n_flag else math.nan
    return precision, float((flagged & hit).sum() / hit.sum()), n_flag


def fixed_pool(noisy: dict[str, np.ndarray], flags: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """What a reviewer accepting every suggestion leaves: relabelled classes, ages dropped, outliers and copies removed."""
    data = {k: v.copy() for k, v in noisy.items()}
    for task in ("emotion", "gender"):
        f = flags[task]
        data[task][f] = flags[f"suggested_{task}"][f].astype(data[task].dtype)
    data["mask_age"] = ~flags["age"]
    keep = ~flags["non_face"]
    kept: set[str] = set()
    for i in np.flatnonzero(flags["near_duplicate"]):
        partner = flags["near_duplicate_of"][i]
        if partner is not None and partner in kept:
            keep[i] = False
        else:
            kept.add(f"s{i:06d}")
    return data, np.flatnonzero(keep)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--pool", type=int, default=10000)
    ap.add_argument("--eval", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--kfold", type=int, default=0, help="out-of-sample outputs from K CNNs (K-fold), not the probe")
    args = ap.parse_args()
    torch.set_num_threads(1)  # a shared 2-core machine: two threads spin-wait for each other under load
    t0 = time.perf_counter()
    ev = faces(args.eval, EVAL_SEED)
    steps = math.ceil(args.epochs * args.pool / BATCH)
    kinds = list(SHARES)
    pr: dict[str, list[tuple[float, float, int]]] = {k: [] for k in kinds}
    per10k: dict[str, list[float]] = {"embeddings": [], "find_issues": []}
    gains, objs = [], []
    for seed in range(args.seeds):
        clean = faces(args.pool, POOL_SEED + seed)
        base = float(np.abs(np.median(clean["age"]) - ev["age"]).mean())
        noisy, rows, sources = inject(clean, seed)
        model = fresh_model(seed)
        fit(model, noisy, np.arange(args.pool), steps, [seed, 1], "constant")
        given = kfold_outputs(noisy, args.kfold, steps, seed) if args.kfold else None
        flags, t_embed, t_audit = audit(model, noisy, seed, given)
        per10k["embeddings"].append(t_embed * 10000 / args.pool)
        per10k["find_issues"].append(t_audit * 10000 / args.pool)
        for kind in kinds:
            pr[kind].append(precision_recall(flags[kind], rows[kind], sources if kind == "near_duplicate" else None))
            p, r, n = pr[kind][-1]
            print(
                f"[{time.perf_counter() - t0:5.0f}s] seed {seed} {kind:<15} flagged {n:>5}  precision {p:.3f}  recall {r:.3f}",
                flush=True,
            )
        data, keep = fixed_pool(noisy, flags)
        noisy_score = scores(model, ev, base)
        fixed = fresh_model(seed)
        fit(fixed, data, keep, steps, [seed, 1], "constant")
        fixed_score = scores(fixed, ev, base)
        ceiling = fresh_model(seed)
        fit(ceiling, clean, np.arange(args.pool), steps, [seed, 1], "constant")
        clean_score = scores(ceiling, ev, base)
        objs.append((noisy_score["objective"], fixed_score["objective"], clean_score["objective"]))
        gains.append(fixed_score["objective"] - noisy_score["objective"])
        print(
            f"[{time.perf_counter() - t0:5.0f}s] seed {seed} objective: noisy {noisy_score['objective']:.4f}  "
            f"fixed {fixed_score['objective']:.4f} ({len(keep)} rows kept)  clean {clean_score['objective']:.4f}  "
            f"gain {gains[-1]:+.4f}",
            flush=True,
        )
        for name, s in (("noisy", noisy_score), ("fixed", fixed_score), ("clean", clean_score)):
            print("    " + name + ": " + "  ".join(f"{k} {v:.4f}" for k, v in s.items()), flush=True)

    print(f"\npool {args.pool}, {args.seeds} seed(s), {args.epochs} epochs; {time.perf_counter() - t0:.0f}s in all")
    print(f"{'defect':<16}{'injected':>9}{'precision':>11}{'recall':>9}   (mean over seeds)")
    for kind in kinds:
        p = np.nanmean([x[0] for x in pr[kind]])
        r = np.mean([x[1] for x in pr[kind]])
        print(f"{kind:<16}{round(SHARES[kind] * args.pool):>9}{p:>11.3f}{r:>9.3f}")
    print("seconds per 10k samples: " + "  ".join(f"{k} {np.mean(v):.1f}" for k, v in per10k.items()))
    for (noisy_obj, fixed_obj, clean_obj), gain in zip(objs, gains, strict=True):
        print(f"objective noisy {noisy_obj:.4f} -> fixed {fixed_obj:.4f} (gain {gain:+.4f}); clean ceiling {clean_obj:.4f}")

    print("\ngoal checks")
    for kind, goal in GOALS.items():
        worst_p = min(x[0] for x in pr[kind])
        worst_r = min(x[1] for x in pr[kind])
        ok = worst_p >= goal and worst_r >= goal
        print(
            f"{kind}: worst seed precision {worst_p:.3f}, recall {worst_r:.3f}  goal both >= {goal}  {'PASS' if ok else 'FAIL'}"
        )
    print(
        f"fixing pays: gains {', '.join(f'{g:+.4f}' for g in gains)}  goal > 0 on every seed"
        f"  {'PASS' if min(gains) > 0 else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
