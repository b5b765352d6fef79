"""What the in-process face benchmarks share: the data, the model, its training loop, its outputs, its score.

``bench/active_learning.py`` and ``bench/audit.py`` train the same small face model on CPU, in one
process, with no hub and no Ray, and judge it by the same objective; one copy of that recipe keeps
their figures comparable. (``bench/drift.py`` predates this module and keeps its own epoch loop; it
shares the outputs.)
"""

from __future__ import annotations

import math

import numpy as np
import torch

from flotilla.data.synthetic import FaceSpec, generate
from flotilla.models import REFERENCE_TASKS, MultiTaskModel, compute_losses, postprocess

KINDS = {"age": "regression", "gender": "binary", "emotion": "multiclass"}
SPEC = FaceSpec(size=32)
BATCH = 128
LR = 3e-3


def faces(n: int, seed: int) -> dict[str, np.ndarray]:
    b = generate(n, seed=seed, spec=SPEC)
    return {"image": b.images, "age": b.age, "gender": b.gender.astype(np.int64), "emotion": b.emotion.astype(np.int64)}


def fresh_model(seed: int) -> MultiTaskModel:
    torch.manual_seed(seed)
    return MultiTaskModel(list(REFERENCE_TASKS.values()), width=16)


def fit(model: MultiTaskModel, data: dict[str, np.ndarray], rows: np.ndarray, steps: int, seed: list[int], schedule: str) -> None:
    """``steps`` AdamW steps on batches of ``rows`` (reshuffled each pass); a fresh optimiser, as a retrain has.

    ``schedule``: ``constant`` lr 3e-3, or ``cosine`` from 3e-3 to 0 over the ``steps`` (each round ends settled).
    ``data`` may hold ``mask_<task>`` arrays (False = that label is missing): the loss skips those labels.
    """
    opt = torch.optim.AdamW(model.param_groups(lr=LR, weight_decay=1e-4))
    model.train()
    rng = np.random.default_rng(seed)
    order, pos = rng.permutation(rows), 0
    for step in range(steps):
        if schedule == "cosine":
            for group in opt.param_groups:
                group["lr"] = LR * 0.5 * (1 + math.cos(math.pi * step / steps))
        if pos + BATCH > len(order) and pos > 0:
            order, pos = rng.permutation(rows), 0
        take = np.sort(order[pos : pos + BATCH])
        pos += BATCH
        batch = {k: torch.as_tensor(v[take]) for k, v in data.items()}
        loss, _ = compute_losses(model(batch["image"]), batch, model.tasks, model.loss_weighting)  # type: ignore[misc]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


@torch.no_grad()
def outputs(model: MultiTaskModel, images: np.ndarray) -> dict[str, np.ndarray]:
    """The backbone's features ("embedding") and each task's prediction, in batches (as bench/drift.py)."""
    parts: dict[str, list[np.ndarray]] = {"embedding": [], **{t: [] for t in KINDS}}
    for i in range(0, len(images), 512):
        feats = model.backbone(model.prepare(images[i : i + 512]))
        parts["embedding"].append(feats.numpy())
        for task in model.tasks:
            parts[task.name].append(postprocess(task, task.behaviour.head_output(model.heads[task.name](feats))).numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def scores(model: MultiTaskModel, ev: dict[str, np.ndarray], age_baseline: float) -> dict[str, float]:
    """The objective: mean of age skill ``1 − MAE / age_baseline``, gender accuracy and emotion accuracy."""
    out = outputs(model, ev["image"])
    s = {
        "age": 1.0 - float(np.abs(out["age"].reshape(-1) - ev["age"]).mean()) / age_baseline,
        "gender": float(((out["gender"].reshape(-1) > 0.5) == ev["gender"]).mean()),
        "emotion": float((out["emotion"].argmax(axis=1) == ev["emotion"]).mean()),
    }
    return {"objective": float(np.mean(list(s.values()))), **s}
