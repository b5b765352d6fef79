"""Active-learning selection: per-task uncertainty, combination, diversity, strategies and bad input (pure numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from flotilla.errors import ActiveLearningError, FlotillaError
from flotilla.loop import (
    STRATEGIES,
    binary_probs,
    choose_strategy,
    combine,
    k_center_greedy,
    kmeans_pp,
    knn_spread,
    margin,
    normalised_entropy,
    rank_normalise,
    sample_spread,
    select_samples,
    task_uncertainties,
    typicality,
)

KINDS = {"age": "regression", "gender": "binary", "emotion": "multiclass"}


def clusters(n_per: int = 100, centres: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated Gaussian clusters in 2-D: (points, cluster id)."""
    rng = np.random.default_rng(seed)
    where = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0], [20.0, 20.0], [40.0, 0.0], [0.0, 40.0]])[:centres]
    ids = np.repeat(np.arange(centres), n_per)
    return where[ids] + rng.normal(scale=1.0, size=(len(ids), 2)), ids


# --- per-task uncertainty ------------------------------------------------------------------------


def test_entropy_and_margin_rank_the_near_even_samples_highest():
    p = np.array([[0.98, 0.01, 0.01], [0.4, 0.35, 0.25], [1 / 3, 1 / 3, 1 / 3], [0.7, 0.2, 0.1]])
    h = normalised_entropy(p)
    assert h[2] == pytest.approx(1.0) and h[0] < 0.15
    assert list(np.argsort(-h)) == [2, 1, 3, 0]
    m = margin(p)
    assert m[2] == pytest.approx(1.0) and m[1] == pytest.approx(0.95) and m[0] == pytest.approx(0.03)


def test_binary_uncertainty_is_highest_at_one_half():
    p1 = np.array([0.02, 0.5, 0.45, 0.9, 0.99])
    h = normalised_entropy(binary_probs(p1))
    assert int(np.argmax(h)) == 1 and h[1] == pytest.approx(1.0)
    assert h[2] > h[3] > h[4]


def test_probabilities_that_are_logits_or_nan_are_refused():
    with pytest.raises(ActiveLearningError, match="not probabilities"):
        normalised_entropy(np.array([[2.0, -1.0], [0.3, 0.1]]))
    with pytest.raises(ActiveLearningError, match="not finite"):
        margin(np.array([[np.nan, 0.5], [0.5, 0.5]]))
    with pytest.raises(ActiveLearningError, match=r"\[0, 1\]"):
        binary_probs(np.array([1.5]))


def test_knn_spread_is_large_where_labelled_neighbours_disagree_with_the_prediction():
    rng = np.random.default_rng(0)
    lab = np.concatenate([rng.normal(0, 0.1, (50, 2)), rng.normal(10, 0.1, (50, 2))])
    ages = np.concatenate([np.full(50, 30.0), rng.choice([5.0, 80.0], 50)])  # region 2: neighbours disagree
    pool = np.array([[0.0, 0.0], [10.0, 10.0], [0.0, 0.0]])
    spread = knn_spread(np.array([30.0, 40.0, 70.0]), pool, lab, ages, k=10)
    assert spread[0] == pytest.approx(0.0, abs=1e-9)  # neighbours agree with the model
    assert spread[1] > 25  # neighbours 5 or 80 around a prediction of 40
    assert spread[2] == pytest.approx(40.0)  # neighbours agree with each other, not with the model


def test_sample_spread_is_the_std_over_passes():
    s = np.array([[1.0, 5.0], [1.0, 7.0], [1.0, 9.0]])
    assert sample_spread(s) == pytest.approx([0.0, 2.0])


def test_task_uncertainties_reads_the_predictions_table_columns():
    rng = np.random.default_rng(1)
    n = 30
    preds = {
        "age": rng.uniform(1, 90, n),
        "gender_probs": binary_probs(rng.random(n)),
        "emotion_probs": rng.dirichlet(np.ones(7), n),
        "embedding": rng.normal(size=(n, 4)),
    }
    u = task_uncertainties(
        preds, KINDS, labelled_embedding=rng.normal(size=(10, 4)), labelled_targets={"age": rng.uniform(1, 90, 10)}
    )
    assert set(u) == set(KINDS) and all(v.shape == (n,) for v in u.values())
    with pytest.raises(ActiveLearningError, match="needs labelled samples"):
        task_uncertainties(preds, KINDS)
    mc = task_uncertainties(preds, KINDS, samples={"age": rng.normal(size=(5, n))})
    assert mc["age"].shape == (n,)


# --- combination and diversity -------------------------------------------------------------------


def test_rank_normalise_is_scale_free_and_ties_share_a_rank():
    assert rank_normalise(np.array([10.0, 1000.0, 0.1])) == pytest.approx([0.5, 1.0, 0.0])
    assert rank_normalise(np.array([1.0, 1.0, 2.0])) == pytest.approx([0.25, 0.25, 1.0])
    # a task in years and a task in entropy count alike once ranked
    c = combine({"age": np.array([1.0, 50.0, 3.0]), "emotion": np.array([0.9, 0.1, 0.5])})
    assert c == pytest.approx([0.5, 0.5, 0.5])
    assert combine({"a": np.array([0.0, 1.0]), "b": np.array([1.0, 0.0])}, {"a": 3.0, "b": 1.0}) == pytest.approx([0.25, 0.75])


def test_k_center_greedy_covers_every_cluster_and_respects_existing_centres():
    pts, ids = clusters(centres=4)
    picks = k_center_greedy(pts, 4)
    assert sorted(ids[picks]) == [0, 1, 2, 3]
    # clusters 0-2 already labelled: the one pick goes to cluster 3
    centres = pts[[np.flatnonzero(ids == c)[0] for c in (0, 1, 2)]]
    assert ids[k_center_greedy(pts, 1, centres=centres)[0]] == 3


def test_kmeans_pp_is_seeded_and_spreads():
    pts, ids = clusters(centres=4)
    a, b = kmeans_pp(pts, 4, seed=3), kmeans_pp(pts, 4, seed=3)
    assert list(a) == list(b) and len(set(a)) == 4
    assert len(set(ids[a])) >= 3  # squared-distance sampling: almost surely a new cluster each time


def test_typicality_prefers_dense_regions():
    rng = np.random.default_rng(0)
    dense, sparse = rng.normal(0, 0.1, (200, 2)), rng.normal(5, 3.0, (20, 2))
    t = typicality(np.concatenate([dense, sparse]), k=10)
    assert t[:200].mean() > 5 * t[200:].mean()


# --- strategies ------------------------------------------------------------------------------------


def pool_with_an_uncertain_cluster(seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Four clusters; the model is most unsure in cluster 0, a little unsure in the others' edges."""
    pts, ids = clusters(n_per=100, centres=4, seed=seed)
    rng = np.random.default_rng(seed)
    p1 = np.where(ids == 0, rng.uniform(0.45, 0.55, len(ids)), rng.uniform(0.6, 0.99, len(ids)))
    return pts, ids, {"gender": normalised_entropy(binary_probs(p1))}


def test_uncertainty_picks_the_near_one_half_samples():
    pts, ids, u = pool_with_an_uncertain_cluster()
    sel = select_samples(20, embedding=pts, uncertainty=u, strategy="uncertainty")
    assert (ids[sel.indices] == 0).all()
    assert set(sel.indices) == set(np.argsort(-u["gender"])[:20])
    assert sel.scores["rank"][sel.indices].max() == 19


def test_diversity_spreads_a_batch_that_uncertainty_alone_fills_from_one_cluster():
    # four tight clusters of 8 near-duplicates; cluster c's uncertainty is about 1 - 0.01 c, the rest of the pool is sure
    pts, ids = clusters(n_per=8, centres=4)
    rng = np.random.default_rng(0)
    background = rng.normal(10.0, 1.0, (200, 2))
    emb = np.concatenate([pts, background])
    u = {"emotion": np.concatenate([1.0 - 0.01 * ids - rng.uniform(0, 0.005, len(ids)), rng.uniform(0, 0.5, 200)])}
    plain = select_samples(4, embedding=emb, uncertainty=u, strategy="uncertainty")
    assert set(ids[plain.indices]) == {0}
    spread = select_samples(4, embedding=emb, uncertainty=u, strategy="uncertainty+diversity")  # candidates: top 20
    assert set(ids[spread.indices]) == {0, 1, 2}
    assert spread.indices[0] == plain.indices[0]  # the most uncertain sample is still the first pick
    kpp = select_samples(4, embedding=emb, uncertainty=u, diversity="kmeans++", seed=1)
    assert len(set(ids[kpp.indices])) >= 2


def test_diversity_with_labelled_centres_avoids_what_is_already_labelled():
    pts, ids = clusters(n_per=100, centres=4)
    flat = {"emotion": np.ones(len(ids))}  # no uncertainty signal: coverage decides
    labelled = pts[ids != 3][::10]
    sel = select_samples(3, embedding=pts, uncertainty=flat, candidates=400, labelled_embedding=labelled)
    assert (ids[sel.indices] == 3).all()


def test_quotas_split_the_budget_across_tasks_by_weight():
    rng = np.random.default_rng(0)
    n = 300
    u = {"gender": rng.random(n), "emotion": rng.random(n), "age": rng.random(n)}
    emb = rng.normal(size=(n, 3))
    sel = select_samples(
        10, embedding=emb, uncertainty=u, strategy="uncertainty", quotas=True, weights={"gender": 2, "emotion": 2, "age": 1}
    )
    assert len(sel.indices) == len(set(sel.indices)) == 10
    top = {t: set(np.argsort(-v)[:10]) for t, v in u.items()}
    first4, next4, last2 = sel.indices[:4], sel.indices[4:8], sel.indices[8:]
    assert set(first4) == set(np.argsort(-u["gender"])[:4])
    assert set(next4) <= top["emotion"] and set(last2) <= top["age"]
    # the same sample at the top of two tasks is taken once; the second task takes its next one
    u2 = {"a": np.arange(n, dtype=float), "b": np.arange(n, dtype=float)}
    sel2 = select_samples(4, embedding=emb, uncertainty=u2, strategy="uncertainty", quotas=True)
    assert sorted(sel2.indices) == [n - 4, n - 3, n - 2, n - 1]
    div = select_samples(9, embedding=emb, uncertainty=u, quotas=True)
    assert len(set(div.indices)) == 9


def test_random_is_seeded_and_typicality_and_anomaly_run():
    pts, ids = clusters()
    a = select_samples(10, embedding=pts, strategy="random", seed=4)
    assert list(a.indices) == list(select_samples(10, embedding=pts, strategy="random", seed=4).indices)
    assert list(a.indices) != list(select_samples(10, embedding=pts, strategy="random", seed=5).indices)
    t = select_samples(4, embedding=pts, strategy="typicality")
    assert sorted(ids[t.indices]) == [0, 1, 2, 3] and "typicality" in t.scores
    ref = pts[ids != 2]  # the training commit never saw cluster 2
    an = select_samples(10, embedding=pts, strategy="anomaly", reference_embedding=ref)
    assert (ids[an.indices] == 2).all()


def test_the_selection_carries_every_score_and_its_parameters():
    pts, _, u = pool_with_an_uncertain_cluster()
    sel = select_samples(5, embedding=pts, uncertainty=u, reference_embedding=pts[:50], seed=2)
    assert sel.strategy == "uncertainty+diversity" and sel.budget == 5
    assert {"uncertainty/gender", "combined", "anomaly", "priority", "rank"} <= set(sel.scores)
    assert all(len(v) == len(pts) for v in sel.scores.values())
    assert sel.params["candidates"] == 5 and sel.params["seed"] == 2
    assert sel.chosen().sum() == 5
    table = sel.table([f"s{i}" for i in range(len(pts))])
    assert list(table["sample_id"]) == [f"s{i}" for i in sel.indices] and list(table["order"]) == [0, 1, 2, 3, 4]


# --- cold start and bad input ------------------------------------------------------------------------


def test_a_cold_start_refuses_pure_uncertainty():
    assert choose_strategy(None, labelled=0) == "random"
    assert choose_strategy("typicality", labelled=0) == "typicality"
    assert choose_strategy(None, labelled=200) == "uncertainty+diversity"
    for s in ("uncertainty", "uncertainty+diversity", "anomaly"):
        with pytest.raises(ActiveLearningError, match="cold start") as err:
            choose_strategy(s, labelled=0)
        assert "random" in str(err.value) and "typicality" in str(err.value)
    with pytest.raises(ActiveLearningError, match="cold start"):
        choose_strategy("uncertainty", labelled=500, cold_start=True)
    with pytest.raises(ActiveLearningError, match="unknown selection strategy"):
        choose_strategy("entropy", labelled=5)
    assert set(STRATEGIES) >= {"random", "typicality", "uncertainty", "uncertainty+diversity", "anomaly"}


@pytest.mark.parametrize(
    ("budget", "n", "message"),
    [(0, 10, "positive"), (-3, 10, "positive"), (11, 10, "larger than the pool"), (1, 0, "no unlabelled samples")],
)
def test_bad_budgets_and_empty_pools_are_clear_errors(budget, n, message):
    with pytest.raises(ActiveLearningError, match=message) as err:
        select_samples(budget, embedding=np.zeros((n, 2)), strategy="random")
    assert isinstance(err.value, FlotillaError)


def test_nan_scores_and_missing_inputs_are_clear_errors():
    pts, _ = clusters()
    bad = np.ones(len(pts))
    bad[7] = np.nan
    with pytest.raises(ActiveLearningError, match="not finite"):
        select_samples(3, embedding=pts, uncertainty={"age": bad})
    emb = pts.copy()
    emb[0, 0] = np.inf
    with pytest.raises(ActiveLearningError, match="embedding holds 1 value"):
        select_samples(3, embedding=emb, strategy="random")
    with pytest.raises(ActiveLearningError, match="needs per-task uncertainties"):
        select_samples(3, embedding=pts)
    with pytest.raises(ActiveLearningError, match="training commit"):
        select_samples(3, embedding=pts, strategy="anomaly")
    with pytest.raises(ActiveLearningError, match="same model"):
        select_samples(3, embedding=pts, uncertainty={"age": np.ones(len(pts))}, labelled_embedding=np.ones((4, 3)))
    with pytest.raises(ActiveLearningError, match="unknown diversity"):
        select_samples(3, embedding=pts, uncertainty={"age": np.ones(len(pts))}, diversity="dpp")  # type: ignore[arg-type]
    with pytest.raises(ActiveLearningError, match="values for a pool"):
        select_samples(3, embedding=pts, uncertainty={"age": np.ones(5)})
