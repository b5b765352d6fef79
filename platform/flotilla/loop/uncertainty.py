"""How unsure a model is about each pool sample, per task, from the committed predictions table alone.

Active learning asks people to label what the model is least sure of. Every measure here reads
numpy arrays as the predictions table holds them (:mod:`~flotilla.loop.predictor`): a
classification task's ``<task>_probs`` ([N, C], a binary task's ``[P(0), P(1)]``), a regression
task's value, and the ``embedding``. Higher always means "more worth labelling".

- **Classification**: normalised entropy ``H(p) / log C`` (0 = certain, 1 = uniform), or the margin
  ``1 − (p₁ − p₂)`` between the two most probable classes (which ignores how the remaining mass
  is spread; entropy is the default). A binary task is the same with C = 2 (:func:`binary_probs`
  turns a bare ``P(1)`` into the two columns).
- **Regression (age)**: the family has no variance head, and its heads have no dropout by default
  (``MultiTaskModel(dropout=0.0)``), so MC-dropout is not available from a production model.
  The default proxy is the **k-NN committee spread** (:func:`knn_spread`): the root-mean-square
  deviation of the true values of the sample's ``k`` nearest *labelled* samples, in embedding
  space, from the model's own prediction. It is large where the labelled neighbours disagree
  with each other (an ambiguous region) or with the model (the model has not fitted that region),
  and it needs only what a round has: the predictions and the labelled samples' embeddings and
  labels. When a caller does have several predictions per sample — MC-dropout on a model trained
  with head dropout, or a small ensemble — :func:`sample_spread` (their standard deviation) is the
  direct measure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np

from flotilla.errors import ActiveLearningError

Kind = Literal["regression", "binary", "multiclass"]
Measure = Literal["entropy", "margin"]
MEASURES: tuple[Measure, ...] = ("entropy", "margin")
KNN = 10


def finite(name: str, values: np.ndarray) -> np.ndarray:
    """``values`` as float64, or an error naming ``name`` when any entry is NaN or infinite."""
    arr = np.asarray(values, dtype=np.float64)
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise ActiveLearningError(
            f"{name} holds {bad} value(s) that are not finite (NaN or infinite)",
            hint="rerun flotilla infer for this model and pool; a model that predicts NaN needs retraining, not labels",
        )
    return arr


def _probs(name: str, probs: np.ndarray) -> np.ndarray:
    p = finite(name, probs)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ActiveLearningError(f"{name} must be class probabilities [N, C] with C >= 2, got shape {p.shape}")
    if (p < -1e-6).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        raise ActiveLearningError(
            f"{name} are not probabilities (negative, or rows that do not sum to 1)",
            hint="pass the predictions table's <task>_probs column, not logits",
        )
    return np.asarray(np.clip(p, 0.0, 1.0), dtype=np.float64)


def binary_probs(p1: np.ndarray) -> np.ndarray:
    """``P(1)`` [N] → ``[P(0), P(1)]`` [N, 2], the predictions table's layout of a binary task."""
    p = finite("P(1)", p1).reshape(-1)
    if ((p < 0) | (p > 1)).any():
        raise ActiveLearningError("P(1) must lie in [0, 1]", hint="pass probabilities, not logits")
    return np.stack([1.0 - p, p], axis=1)


def normalised_entropy(probs: np.ndarray) -> np.ndarray:
    """``H(p) / log C`` per row: 0 when one class has all the mass, 1 when the classes are equally likely."""
    p = _probs("class probabilities", probs)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    return np.asarray(np.clip(h / np.log(p.shape[1]), 0.0, 1.0), dtype=np.float64)


def margin(probs: np.ndarray) -> np.ndarray:
    """``1 − (p₁ − p₂)`` per row, p₁ ≥ p₂ the two largest probabilities: 1 when the top two tie."""
    p = _probs("class probabilities", probs)
    top = np.sort(p, axis=1)[:, -2:]
    return np.asarray(1.0 - (top[:, 1] - top[:, 0]), dtype=np.float64)


def classification_uncertainty(probs: np.ndarray, measure: Measure = "entropy") -> np.ndarray:
    if measure not in MEASURES:
        raise ActiveLearningError(f"unknown uncertainty measure {measure!r}", hint=f"choose one of: {', '.join(MEASURES)}")
    return normalised_entropy(probs) if measure == "entropy" else margin(probs)


def sample_spread(samples: np.ndarray) -> np.ndarray:
    """Standard deviation over axis 0 of ``samples`` [T, N]: T predictions per sample (MC-dropout passes, ensemble members)."""
    s = finite("prediction samples", samples)
    if s.ndim != 2 or s.shape[0] < 2:
        raise ActiveLearningError(f"prediction samples must be [T, N] with T >= 2, got shape {s.shape}")
    return np.asarray(s.std(axis=0, ddof=1), dtype=np.float64)


def pairwise_sq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances [len(a), len(b)], clipped at 0 against rounding."""
    d2 = np.einsum("ij,ij->i", a, a)[:, None] + np.einsum("ij,ij->i", b, b)[None, :] - 2.0 * a @ b.T
    return np.asarray(np.maximum(d2, 0.0), dtype=np.float64)


def knn_spread(
    prediction: np.ndarray,
    embedding: np.ndarray,
    labelled_embedding: np.ndarray,
    labelled_values: np.ndarray,
    *,
    k: int = KNN,
    chunk: int = 1024,
) -> np.ndarray:
    """Per sample: RMS deviation of its ``k`` nearest labelled samples' true values from the model's prediction (module doc)."""
    pred = finite("regression predictions", prediction).reshape(-1)
    emb = finite("embedding", embedding)
    ref = finite("labelled embedding", labelled_embedding)
    values = finite("labelled values", labelled_values).reshape(-1)
    if len(ref) == 0:
        raise ActiveLearningError(
            "the k-NN spread of a regression task needs labelled samples, and there are none",
            hint="a cold start has no labels: choose the 'random' or 'typicality' strategy for the first round",
        )
    if len(ref) != len(values) or len(pred) != len(emb) or emb.shape[1:] != ref.shape[1:]:
        raise ActiveLearningError(
            f"shapes do not match: {len(pred)} predictions for {len(emb)} embeddings, "
            f"{len(values)} labels for {len(ref)} labelled embeddings, widths {emb.shape[1:]} vs {ref.shape[1:]}"
        )
    kk = max(1, min(k, len(ref)))
    out = np.empty(len(pred))
    for s in range(0, len(pred), chunk):
        d2 = pairwise_sq(emb[s : s + chunk], ref)
        nearest = np.argpartition(d2, kk - 1, axis=1)[:, :kk]
        out[s : s + chunk] = np.sqrt(((values[nearest] - pred[s : s + chunk, None]) ** 2).mean(axis=1))
    return out


def task_uncertainties(
    predictions: Mapping[str, np.ndarray],
    kinds: Mapping[str, Kind],
    *,
    measure: Measure = "entropy",
    labelled_embedding: np.ndarray | None = None,
    labelled_targets: Mapping[str, np.ndarray] | None = None,
    samples: Mapping[str, np.ndarray] | None = None,
    k: int = KNN,
) -> dict[str, np.ndarray]:
    """Each task's uncertainty [N] from the predictions table's columns (``<task>``, ``<task>_probs``, ``embedding``).

    A regression task uses ``samples[task]`` ([T, N]) when given, else the k-NN spread against
    ``labelled_embedding`` and ``labelled_targets[task]``.
    """
    out: dict[str, np.ndarray] = {}
    for task, kind in kinds.items():
        if kind != "regression":
            column = f"{task}_probs"
            if column not in predictions:
                raise ActiveLearningError(
                    f"the predictions have no column {column!r}", hint="pass the predictions table's columns"
                )
            out[task] = classification_uncertainty(predictions[column], measure)
        elif samples is not None and task in samples:
            out[task] = sample_spread(samples[task])
        else:
            if task not in predictions or "embedding" not in predictions:
                raise ActiveLearningError(f"the predictions need columns {task!r} and 'embedding' for the k-NN spread")
            if labelled_embedding is None or labelled_targets is None or task not in labelled_targets:
                raise ActiveLearningError(
                    f"regression task {task!r} needs labelled samples (their embeddings and {task!r} labels) for its k-NN spread",
                    hint="pass labelled_embedding and labelled_targets, or prediction samples (MC-dropout, ensemble)",
                )
            out[task] = knn_spread(predictions[task], predictions["embedding"], labelled_embedding, labelled_targets[task], k=k)
    return out
