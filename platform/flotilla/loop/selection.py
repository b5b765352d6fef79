"""Which pool samples to label next: strategies over per-task uncertainty, embeddings and atypicality.

A round has a budget K. What the literature teaches (see the continuous-training notes):

- Uncertainty alone fills a batch with near-duplicates (the model is unsure about one region, and
  every sample there scores alike), so the default, ``uncertainty+diversity``, takes the top
  ``candidates × K`` uncertain samples and picks K of them by **k-center greedy** on the
  embeddings (each pick is the candidate farthest from everything already labelled or picked;
  Sener & Savarese 2018), or by k-means++ seeding (``diversity="kmeans++"``).
- A multi-task model has one uncertainty per task on different scales (entropy vs years), so each
  is **rank-normalised** to [0, 1] and the ranks summed with per-task weights; or, with
  ``quotas=True``, K is split across the tasks by weight and each task fills its share with its
  own most uncertain samples (deduplicated).
- At a **cold start** uncertainty sampling loses to random (Hacohen et al. 2022): the first round
  is ``random`` or ``typicality`` (dense, representative samples — inverse mean k-NN distance
  within the pool — one per k-center cell, :func:`typical_cover`). :func:`choose_strategy` enforces it.
- ``anomaly`` picks the samples farthest from the training commit's embeddings
  (:func:`~flotilla.loop.examples.atypicality`): what the model never saw.

Everything is numpy over arrays of one pool (the predictions table's columns); the result,
:class:`Selection`, holds every score so that the round can commit why each sample was chosen.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from flotilla.errors import ActiveLearningError
from flotilla.loop.examples import atypicality
from flotilla.loop.uncertainty import finite, pairwise_sq

Strategy = Literal["random", "typicality", "uncertainty", "uncertainty+diversity", "anomaly"]
Diversity = Literal["k-center", "kmeans++"]
DIVERSITY: tuple[Diversity, ...] = ("k-center", "kmeans++")
STRATEGIES: tuple[Strategy, ...] = ("random", "typicality", "uncertainty", "uncertainty+diversity", "anomaly")
COLD_START: tuple[Strategy, ...] = ("random", "typicality")
DEFAULT_STRATEGY: Strategy = "uncertainty+diversity"
CANDIDATES = 5
"""Diversity picks K among the top ``CANDIDATES × K`` by priority: wide enough to spread, narrow enough to stay uncertain."""
TYPICALITY_K = 20
MAX_TYPICALITY_REFERENCE = 5000


@dataclass(frozen=True)
class Selection:
    """One round's choice: ``indices`` into the pool in pick order, and every per-sample score.

    ``scores`` maps a name to an array over the whole pool: ``uncertainty/<task>`` (each task's raw
    uncertainty), ``combined`` (the rank-normalised weighted sum, in [0, 1]), ``anomaly``,
    ``typicality`` (when computed), ``priority`` (what the strategy ranked by) and ``rank`` (0 = the
    strategy's first choice by priority). ``params`` are the strategy's parameters as given.
    """

    strategy: Strategy
    budget: int
    indices: np.ndarray
    scores: Mapping[str, np.ndarray] = field(repr=False)
    params: Mapping[str, Any]

    def chosen(self) -> np.ndarray:
        """A boolean mask over the pool."""
        mask = np.zeros(len(self.scores["rank"]), dtype=bool)
        mask[self.indices] = True
        return mask

    def table(self, sample_ids: np.ndarray | list[str]) -> dict[str, np.ndarray]:
        """The chosen samples as columns (``sample_id``, ``order``, then every score): what a round commits."""
        ids = np.asarray(sample_ids, dtype=object)
        if len(ids) != len(self.scores["rank"]):
            raise ActiveLearningError(f"{len(ids)} sample ids for a pool of {len(self.scores['rank'])}")
        return {
            "sample_id": ids[self.indices],
            "order": np.arange(len(self.indices)),
            **{k: v[self.indices] for k, v in self.scores.items()},
        }


def choose_strategy(requested: str | None, *, labelled: int, cold_start: bool = False) -> Strategy:
    """The strategy a round runs: ``requested`` (default ``uncertainty+diversity``), checked against a cold start.

    A cold start — no labelled samples yet from this pool's model, or ``cold_start`` set — runs
    ``random`` unless ``typicality`` is asked for; an uncertainty or anomaly strategy there is an
    error, because a model that has seen no labels ranks its own noise.
    """
    cold = cold_start or labelled <= 0
    if requested is None:
        return "random" if cold else DEFAULT_STRATEGY
    if requested not in STRATEGIES:
        raise ActiveLearningError(f"unknown selection strategy {requested!r}", hint=f"choose one of: {', '.join(STRATEGIES)}")
    if cold and requested not in COLD_START:
        raise ActiveLearningError(
            f"the first round of a cold start cannot use {requested!r}: with no labels yet the model's "
            "uncertainty ranks its own noise, and uncertainty sampling then does worse than random (Hacohen et al. 2022)",
            hint="choose --strategy random or --strategy typicality for this round; uncertainty strategies from round 2 on",
        )
    return requested


def rank_normalise(scores: np.ndarray) -> np.ndarray:
    """Average ranks scaled to [0, 1] (ties share a rank; 1 = the highest score): scale-free across tasks."""
    s = np.asarray(scores, dtype=np.float64)
    if len(s) < 2:
        return np.ones(len(s))
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_s)) + 1]
    ends = np.r_[starts[1:], len(s)]
    ranks = np.empty(len(s))
    ranks[order] = np.repeat((starts + ends - 1) / 2.0, ends - starts)
    return ranks / (len(s) - 1)


def combine(uncertainty: Mapping[str, np.ndarray], weights: Mapping[str, float] | None = None) -> np.ndarray:
    """Weighted mean of each task's rank-normalised uncertainty (weights default to equal), in [0, 1]."""
    w = _weights(uncertainty, weights)
    total = sum(w.values())
    return np.asarray(np.sum([w[t] * rank_normalise(u) for t, u in uncertainty.items()], axis=0) / total, dtype=np.float64)


def typicality(embedding: np.ndarray, *, k: int = TYPICALITY_K, seed: int = 0) -> np.ndarray:
    """Inverse mean distance to the ``k`` nearest pool neighbours (TypiClust's typicality; a seeded subsample above 5,000)."""
    emb = np.asarray(embedding, dtype=np.float64)
    ref = emb
    if len(ref) > MAX_TYPICALITY_REFERENCE:
        ref = emb[np.random.default_rng(seed).choice(len(emb), MAX_TYPICALITY_REFERENCE, replace=False)]
    kk = max(1, min(k, len(ref) - 1))
    out = np.empty(len(emb))
    for s in range(0, len(emb), 1024):
        d = np.sqrt(pairwise_sq(emb[s : s + 1024], ref))
        nearest = np.partition(d, kk, axis=1)[:, : kk + 1]
        nearest.sort(axis=1)
        out[s : s + 1024] = nearest[:, 1:].mean(axis=1)  # the nearest is the sample itself (or a twin: harmless)
    return 1.0 / np.maximum(out, 1e-12)


def typical_cover(embedding: np.ndarray, typical: np.ndarray, k: int) -> np.ndarray:
    """``k`` representative samples: k-center cells over the denser half of the pool, the most typical of each cell.

    A cheap TypiClust (Hacohen et al. 2022): the top-k typical samples alone crowd into the densest
    mode, and k-center alone picks cell borders; the k-center centres partition the dense half into
    k cells and each cell gives its most typical member, so a cold start covers the pool with
    faces that stand for many others.
    """
    emb = np.asarray(embedding, dtype=np.float64)
    order = np.argsort(-typical, kind="stable")
    cand = order[: max(k, len(order) // 2)]
    centres = k_center_greedy(emb, k, candidates=cand)
    cell = np.argmin(pairwise_sq(emb[cand], emb[centres]), axis=1)
    # cand is in typicality order, so each cell's first member is its most typical
    picks = cand[np.sort(np.unique(cell, return_index=True)[1])]
    if len(picks) < k:  # exact duplicates can leave a cell empty: top up with the most typical others
        picks = np.concatenate([picks, order[~np.isin(order, picks)][: k - len(picks)]])
    return picks


def k_center_greedy(
    embedding: np.ndarray, k: int, *, candidates: np.ndarray | None = None, centres: np.ndarray | None = None
) -> np.ndarray:
    """``k`` indices among ``candidates`` (default: all), each the one farthest from ``centres`` and the picks so far.

    With no centres the first pick is ``candidates[0]`` (callers order candidates by priority).
    """
    emb = np.asarray(embedding, dtype=np.float64)
    cand = np.arange(len(emb)) if candidates is None else np.asarray(candidates, dtype=np.int64)
    k = min(k, len(cand))
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    pts = emb[cand]
    nearest = np.full(len(cand), np.inf)
    if centres is not None and len(centres):
        c = np.asarray(centres, dtype=np.float64)
        for s in range(0, len(c), 2048):
            nearest = np.minimum(nearest, pairwise_sq(pts, c[s : s + 2048]).min(axis=1))
    picks: list[int] = []
    for _ in range(k):
        i = int(np.argmax(nearest)) if picks or np.isfinite(nearest).any() else 0
        picks.append(i)
        nearest = np.minimum(nearest, pairwise_sq(pts, pts[i : i + 1])[:, 0])
        nearest[picks] = -1.0
    return cand[np.asarray(picks, dtype=np.int64)]


def kmeans_pp(
    embedding: np.ndarray, k: int, *, candidates: np.ndarray | None = None, centres: np.ndarray | None = None, seed: int = 0
) -> np.ndarray:
    """k-means++ seeding over ``candidates``: each pick drawn with probability ∝ squared distance to the nearest centre."""
    emb = np.asarray(embedding, dtype=np.float64)
    cand = np.arange(len(emb)) if candidates is None else np.asarray(candidates, dtype=np.int64)
    k = min(k, len(cand))
    rng = np.random.default_rng(seed)
    pts = emb[cand]
    nearest = np.full(len(cand), np.inf)
    if centres is not None and len(centres):
        nearest = pairwise_sq(pts, np.asarray(centres, dtype=np.float64)).min(axis=1)
    picks: list[int] = []
    for _ in range(k):
        if not np.isfinite(nearest).any():
            i = 0  # no centre yet: the first candidate, as k-center greedy starts
        else:
            w = nearest.copy()
            w[picks] = 0.0
            rest = np.setdiff1d(np.arange(len(cand)), picks)
            i = int(rng.choice(len(cand), p=w / w.sum())) if w.sum() > 0 else int(rng.choice(rest))
        picks.append(i)
        nearest = np.minimum(nearest, pairwise_sq(pts, pts[i : i + 1])[:, 0])
    return cand[np.asarray(picks, dtype=np.int64)]


def _weights(uncertainty: Mapping[str, np.ndarray], weights: Mapping[str, float] | None) -> dict[str, float]:
    if not uncertainty:
        raise ActiveLearningError("no task uncertainties were given", hint="compute them with flotilla.loop.task_uncertainties")
    w = {t: float((weights or {}).get(t, 1.0)) for t in uncertainty}
    unknown = sorted(set(weights or {}) - set(uncertainty))
    if unknown:
        raise ActiveLearningError(f"weights name tasks without uncertainties: {', '.join(unknown)}")
    if any(v < 0 or not np.isfinite(v) for v in w.values()) or sum(w.values()) <= 0:
        raise ActiveLearningError(f"task weights must be finite, non-negative and not all zero, got {w}")
    return w


def _split(budget: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Largest-remainder split of ``budget`` across tasks by weight."""
    total = sum(weights.values())
    exact = {t: budget * w / total for t, w in weights.items()}
    share = {t: int(np.floor(v)) for t, v in exact.items()}
    for t in sorted(exact, key=lambda t: share[t] - exact[t])[: budget - sum(share.values())]:
        share[t] += 1
    return share


def _check(budget: int, pool: int) -> None:
    if pool == 0:
        raise ActiveLearningError(
            "the pool has no unlabelled samples to select from", hint="add data to the pool, or stop: everything is labelled"
        )
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget <= 0:
        raise ActiveLearningError(f"the budget must be a positive number of samples, got {budget!r}")
    if budget > pool:
        raise ActiveLearningError(
            f"a budget of {budget} is larger than the pool's {pool} unlabelled samples",
            hint=f"use --budget {pool} or less",
        )


def select_samples(
    budget: int,
    *,
    embedding: np.ndarray,
    uncertainty: Mapping[str, np.ndarray] | None = None,
    strategy: Strategy = DEFAULT_STRATEGY,
    weights: Mapping[str, float] | None = None,
    quotas: bool = False,
    candidates: int = CANDIDATES,
    diversity: Diversity = "k-center",
    labelled_embedding: np.ndarray | None = None,
    reference_embedding: np.ndarray | None = None,
    seed: int = 0,
) -> Selection:
    """Pick ``budget`` pool samples by ``strategy`` (module doc); every score is returned, chosen or not.

    ``embedding`` [N, D] is the pool's; ``uncertainty`` maps each task to its [N] uncertainty
    (:func:`~flotilla.loop.uncertainty.task_uncertainties`); ``labelled_embedding`` (samples
    already labelled) are the initial centres of the diversity step, so a round does not re-cover
    what earlier rounds labelled; ``reference_embedding`` (the training commit's) gives the anomaly
    score. The strategy is used as given: call :func:`choose_strategy` first to respect a cold start.
    """
    if strategy not in STRATEGIES:
        raise ActiveLearningError(f"unknown selection strategy {strategy!r}", hint=f"choose one of: {', '.join(STRATEGIES)}")
    emb = finite("embedding", embedding)
    if emb.ndim != 2:
        raise ActiveLearningError(f"the embedding must be [N, D], got shape {emb.shape}")
    n = len(emb)
    _check(budget, n)
    if candidates < 1:
        raise ActiveLearningError(f"candidates must be at least 1 (× the budget), got {candidates}")
    if diversity not in DIVERSITY:
        raise ActiveLearningError(f"unknown diversity method {diversity!r}", hint=f"choose one of: {', '.join(DIVERSITY)}")
    scores: dict[str, np.ndarray] = {}
    if uncertainty:
        for task, u in uncertainty.items():
            scores[f"uncertainty/{task}"] = finite(f"uncertainty of {task!r}", u).reshape(-1)
            if len(scores[f"uncertainty/{task}"]) != n:
                raise ActiveLearningError(f"uncertainty of {task!r} has {len(u)} values for a pool of {n}")
        scores["combined"] = combine({t: scores[f"uncertainty/{t}"] for t in uncertainty}, weights)
    elif strategy in ("uncertainty", "uncertainty+diversity"):
        raise ActiveLearningError(f"strategy {strategy!r} needs per-task uncertainties", hint="pass uncertainty=...")
    centres = None if labelled_embedding is None else finite("labelled embedding", labelled_embedding)
    for name, other in (("labelled", centres), ("reference", reference_embedding)):
        if other is not None and (np.ndim(other) != 2 or np.shape(other)[1] != emb.shape[1]):
            raise ActiveLearningError(
                f"the {name} embedding has shape {np.shape(other)}, the pool's is {emb.shape}",
                hint="all embeddings must come from the same model",
            )
    if reference_embedding is not None:
        scores["anomaly"] = atypicality(finite("reference embedding", reference_embedding), emb, seed=seed)
    elif strategy == "anomaly":
        raise ActiveLearningError(
            "strategy 'anomaly' needs the training commit's embeddings", hint="pass reference_embedding=..."
        )
    rng = np.random.default_rng(seed)

    def diverse(priority: np.ndarray, k: int, taken: np.ndarray | None) -> np.ndarray:
        order = np.argsort(-priority, kind="stable")
        if taken is not None and len(taken):
            order = order[~np.isin(order, taken)]
        cand = order[: min(len(order), candidates * k)]
        c = centres if taken is None or not len(taken) else np.concatenate([x for x in (centres, emb[taken]) if x is not None])
        if diversity == "kmeans++":
            return kmeans_pp(emb, k, candidates=cand, centres=c, seed=seed)
        return k_center_greedy(emb, k, candidates=cand, centres=c)

    if strategy == "random":
        priority = rng.random(n)
        indices = np.argsort(-priority, kind="stable")[:budget]
    elif strategy == "typicality":
        priority = scores["typicality"] = typicality(emb, seed=seed)
        indices = typical_cover(emb, priority, budget)
    elif strategy == "anomaly":
        priority = scores["anomaly"]
        indices = np.argsort(-priority, kind="stable")[:budget]
    elif quotas:
        assert uncertainty is not None
        share = _split(budget, _weights(uncertainty, weights))
        picked = np.empty(0, dtype=np.int64)
        for task in uncertainty:
            u = scores[f"uncertainty/{task}"]
            if strategy == "uncertainty":
                order = np.argsort(-u, kind="stable")
                new = order[~np.isin(order, picked)][: share[task]]
            else:
                new = diverse(u, share[task], picked)
            picked = np.concatenate([picked, new])
        priority, indices = scores["combined"], picked
    else:
        priority = scores["combined"]
        indices = np.argsort(-priority, kind="stable")[:budget] if strategy == "uncertainty" else diverse(priority, budget, None)
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(-priority, kind="stable")] = np.arange(n)
    scores["priority"], scores["rank"] = priority, rank
    params = {
        "weights": dict(_weights(uncertainty, weights)) if uncertainty else None,
        "quotas": quotas,
        "candidates": candidates,
        "diversity": diversity,
        "seed": seed,
        "pool": n,
        "labelled_centres": 0 if centres is None else len(centres),
    }
    return Selection(strategy, int(budget), np.asarray(indices, dtype=np.int64), scores, params)
