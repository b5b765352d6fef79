"""The audit's in-memory part on synthetic embeddings: probe, shared kNN graph, cleanlab's checks, findings table."""

import numpy as np
import pyarrow as pa
import pytest

from flotilla.audit import (
    TaskInput,
    check_method,
    detect_issues,
    exact_duplicates,
    find_issues,
    findings_table,
    knn_graph,
    probe_probabilities,
    probe_values,
)
from flotilla.data.findings import FINDINGS_COLUMNS, task_columns
from flotilla.errors import SpecError

N, DIM, CLASSES, FLIPS = 1400, 16, 7, 70


def _faces(seed: int = 0):
    """A separable 7-class problem in 16 dimensions, 5 % of its labels flipped to another class."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(CLASSES, DIM)) * 4
    truth = rng.integers(0, CLASSES, N)
    x = centres[truth] + rng.normal(size=(N, DIM))
    flipped = rng.choice(N, FLIPS, replace=False)
    given = truth.astype(np.float64)
    given[flipped] = (truth[flipped] + rng.integers(1, CLASSES, FLIPS)) % CLASSES
    return x, truth, given, flipped


def _ids(n: int) -> list[str]:
    return [f"s{i:05d}" for i in range(n)]


def test_flipped_labels_are_found_with_recall_and_precision_of_at_least_0_8():
    x, _, given, flipped = _faces()
    probs = probe_probabilities(x, given, CLASSES, folds=5)
    found = detect_issues(_ids(N), x, [TaskInput("emotion", "multiclass", given, probs)])
    flagged = found.tasks[0].is_issue
    hits = int(flagged[flipped].sum())
    assert hits / FLIPS >= 0.8, f"recall {hits / FLIPS:.2f}"
    assert hits / flagged.sum() >= 0.8, f"precision {hits / flagged.sum():.2f}"
    assert found.counts()["label:emotion"] == int(flagged.sum())


def test_the_probe_is_out_of_sample_and_leaves_unlabelled_rows_empty():
    x, truth, given, flipped = _faces(1)
    given[:50] = np.nan
    probs = probe_probabilities(x, given, CLASSES, folds=4)
    assert np.isnan(probs[:50]).all() and np.allclose(probs[50:].sum(axis=1), 1)
    # a model fit on the flipped labels would vouch for them; out-of-fold, the probe mostly names the true class
    later = flipped[flipped >= 50]
    assert (probs[later].argmax(axis=1) == truth[later]).mean() > 0.8


def test_a_regression_label_far_from_its_prediction_is_flagged():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(600, 8))
    age = 40 + 10 * x[:, 0] + rng.normal(size=600)
    age[:12] += 40
    values = probe_values(x, age, folds=5)
    found = detect_issues(_ids(600), x, [TaskInput("age", "regression", age, values)])
    assert found.tasks[0].is_issue[:12].all()
    assert found.tasks[0].is_issue[12:].sum() <= 6


def test_exact_and_near_duplicates_are_found_and_point_at_each_other():
    x, _, _, _ = _faces(3)
    x[10] = x[11]
    x[20] = x[21] + 1e-4
    sha = [f"h{i}" for i in range(N)]
    sha[11] = sha[10]
    ids = _ids(N)
    found = detect_issues(ids, x, [], sha256=sha)
    assert found.near_duplicate[[10, 11, 20, 21]].all()
    assert found.near_duplicate_of[20] == ids[21] and found.near_duplicate_of[21] == ids[20]
    assert found.exact_duplicate_of[10] == ids[11] and found.exact_duplicate_of[11] == ids[10]
    assert found.counts()["exact_duplicate"] == 2
    assert found.near_duplicate.sum() <= 8


def test_a_far_off_point_is_an_outlier():
    x, _, _, _ = _faces(4)
    x[7] = -x[7] * 10 + 50
    found = detect_issues(_ids(N), x, [])
    assert found.outlier[7]
    assert found.outlier_score[7] == found.outlier_score.min()


def test_the_knn_graph_never_makes_a_sample_its_own_neighbour_and_matches_an_unbatched_search():
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 6))
    x[1] = x[0]
    g = knn_graph(x, 5, batch_rows=64)
    assert g.shape == (300, 300) and (g.getnnz(axis=1) == 5).all()
    assert all(i not in g[i].indices for i in range(300))
    assert g[0].indices[0] == 1 and g[0].data[0] == pytest.approx(0, abs=1e-6)
    norm = x / np.linalg.norm(x, axis=1, keepdims=True)
    ref = NearestNeighbors(n_neighbors=5).fit(norm).kneighbors_graph(mode="distance")
    assert np.allclose(np.sort(g[2:].data), np.sort(ref[2:].data), atol=1e-5)


def test_exact_duplicates_name_another_sample_with_the_same_bytes():
    assert exact_duplicates(["a", "b", "c", "d"], ["1", "2", "1", "1"]) == ["c", None, "a", "a"]


def test_the_findings_table_has_the_contracts_columns_and_types():
    x, _, given, _ = _faces(6)
    gender = (x[:, 0] > 0).astype(np.float64)
    gender[:30] = np.nan
    tasks = [
        TaskInput("emotion", "multiclass", given, probe_probabilities(x, given, CLASSES)),
        TaskInput("gender", "binary", gender, probe_probabilities(x, gender, 2)),
    ]
    found = detect_issues(_ids(N), x, tasks, sha256=[str(i) for i in range(N)])
    table = findings_table(found, ["train"] * N)
    per_task = [c for t in ("emotion", "gender") for c in task_columns(t)]
    assert table.column_names == ["sample_id", "split", *per_task, *FINDINGS_COLUMNS[2:]]
    types = {f.name: f.type for f in table.schema}
    assert types["sample_id"] == types["split"] == types["near_duplicate_of"] == types["exact_duplicate_of"] == pa.string()
    assert types["outlier"] == types["near_duplicate"] == types["label_issue_gender"] == pa.bool_()
    assert (
        types["outlier_score"]
        == types["near_duplicate_score"]
        == types["worst_score"]
        == types["label_score_emotion"]
        == pa.float32()
    )
    assert types["given_gender"] == types["suggested_gender"] == pa.float64()
    assert types["issues"] == pa.list_(pa.string())
    rows = table.to_pylist()
    assert rows[0]["given_gender"] is None and rows[0]["label_score_gender"] is None and rows[0]["label_issue_gender"] is False
    for row in rows:
        scores = {"outlier": row["outlier_score"], "near_duplicate": row["near_duplicate_score"]}
        scores |= {f"label:{t}": row[f"label_score_{t}"] for t in ("emotion", "gender")}
        flags = [f for f in row["issues"]]
        assert ("label:emotion" in flags) == row["label_issue_emotion"] and ("outlier" in flags) == row["outlier"]
        expected = min([scores[f] for f in flags], default=1.0)
        assert row["worst_score"] == pytest.approx(expected, abs=1e-6)
    assert set(found.dataset_issues) >= {"non_iid", "class_imbalance:emotion", "underperforming_group:gender"}


def test_a_check_cleanlab_cannot_run_is_recorded_as_not_computed():
    """Structureless embeddings hold no groups: cleanlab's weak-group check finds no clusters and says so."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 16))
    y = rng.integers(0, 3, 2000).astype(np.float64)
    probs = np.full((2000, 3), 0.1)
    probs[np.arange(2000), y.astype(int)] = 0.8
    found = detect_issues(_ids(2000), x, [TaskInput("emotion", "multiclass", y, probs)])
    weak = found.dataset_issues["underperforming_group:emotion"]
    assert weak["computed"] is False and "cluster" in weak["reason"]


def test_unknown_methods_and_too_few_labels_are_refused_with_a_hint():
    with pytest.raises(SpecError, match="unknown audit method"):
        check_method("kfold-cnn")
    with pytest.raises(SpecError, match="too few"):
        probe_probabilities(np.zeros((6, 2)), np.array([0, 1, 0, np.nan, np.nan, np.nan]), 2, folds=5)


def test_find_issues_on_arrays_probes_every_column_and_returns_the_findings_table():
    """The benchmark's call: labels and kinds per column, no outputs: the probe makes them, the table comes back."""
    x, _, given, flipped = _faces(7)
    gender = (x[:, 1] > 0).astype(np.int64)
    age = 40 + 5 * x[:, 2]
    table = find_issues(
        _ids(N), x, labels={"emotion": given, "gender": gender, "age": age},
        kinds={"emotion": "multiclass", "gender": "binary", "age": "regression"}, sha256=[str(i) for i in range(N)],
    )  # fmt: skip
    assert table.num_rows == N and {"label_issue_age", "suggested_gender", "given_emotion"} <= set(table.column_names)
    flagged = np.asarray(table.column("label_issue_emotion").to_pylist())
    assert flagged[flipped].mean() >= 0.8 and flagged[flipped].sum() / flagged.sum() >= 0.8
    assert set(table.column("split").to_pylist()) == {""}
    with pytest.raises(SpecError, match="kinds"):
        find_issues(_ids(N), x, labels={"emotion": given}, kinds={"emotion": "ordinal"})


def test_output_quality_tells_a_model_too_weak_to_judge_labels_from_a_good_one():
    from flotilla.audit import TaskInput, output_quality, weak_outputs

    rng = np.random.default_rng(9)
    y = rng.integers(0, 7, 2000).astype(float)
    good = np.full((2000, 7), 0.01)
    good[np.arange(2000), y.astype(int)] = 0.94
    guess = rng.dirichlet(np.ones(7), 2000)
    rows = np.arange(2000)
    strong = output_quality(TaskInput("e", "multiclass", y, good), rows)
    weak = output_quality(TaskInput("e", "multiclass", y, guess), rows)
    assert strong["score"] == 1.0 and not weak_outputs(strong)
    assert weak["score"] < 0.25 and abs(weak["chance"] - 1 / 7) < 0.05 and weak_outputs(weak)
    age = rng.uniform(0, 90, 2000)
    assert output_quality(TaskInput("a", "regression", age, age + rng.normal(0, 1, 2000)), rows)["score"] > 0.9
    assert weak_outputs(output_quality(TaskInput("a", "regression", age, np.full(2000, 45.0)), rows))
