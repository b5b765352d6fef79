"""Batch inference's pure pieces: the predictions table, the actors' resources, the job spec and --data."""

from __future__ import annotations

import numpy as np
import pytest

from flotilla.cli.common import parse_data
from flotilla.data.pinning import DataRef
from flotilla.errors import SpecError
from flotilla.jobs.specs import InferJob, parse_job_spec
from flotilla.loop.inference import actor_options, pool_needs, predictions_dir
from flotilla.loop.predictor import output_schema, predictions_table
from flotilla.models.tasks import resolve_tasks
from flotilla.registry import ModelLocation

TASKS = resolve_tasks(["age", "gender", "emotion"])


def test_a_gpu_is_asked_for_only_when_use_gpu():
    assert actor_options(use_gpu=False, cpus_per_actor=0.5) == {"num_cpus": 0.5}
    assert actor_options(use_gpu=True, cpus_per_actor=2) == {"num_cpus": 2, "num_gpus": 1.0}


def test_the_pool_needs_room_for_a_read_beside_it():
    """A pool that takes every CPU starves the reads feeding it (Ray Data then waits for ever): counted up front."""
    assert pool_needs(concurrency=1, cpus_per_actor=2, use_gpu=False) == {"CPU": 2.25}
    assert pool_needs(concurrency=2, cpus_per_actor=0.1, use_gpu=False) == pytest.approx({"CPU": 0.3})
    assert pool_needs(concurrency=2, cpus_per_actor=1, use_gpu=True) == {"CPU": 2.25, "GPU": 2.0}


def test_predictions_table_has_classes_probabilities_that_sum_to_one_and_a_fixed_width_embedding():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 7))
    emotion = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    preds = {"age": rng.uniform(0, 90, 5), "gender": np.array([0.1, 0.9, 0.5, 0.2, 0.7]), "emotion": emotion}
    table = predictions_table([f"s{i}" for i in range(5)], TASKS, preds, rng.normal(size=(5, 16)))
    assert table.schema == output_schema(TASKS, 16)
    d = table.to_pydict()
    assert d["gender"] == [0, 1, 0, 0, 1] and np.allclose(np.array(d["gender_probs"])[:, 1], preds["gender"])
    assert np.allclose(np.array(d["gender_probs"]).sum(axis=1), 1) and np.allclose(np.array(d["emotion_probs"]).sum(axis=1), 1)
    assert d["emotion"] == emotion.argmax(axis=1).tolist() and np.allclose(d["age"], preds["age"])
    assert table.schema.field("embedding").type.list_size == 16 and len(d["embedding"][0]) == 16


def test_predictions_live_under_the_models_name_and_the_input_commit():
    loc = ModelLocation("faces", "c" * 64, "models/run-1/family/model.pt")
    data = DataRef("faces", "ab" * 32, "incoming", "main")
    assert predictions_dir(loc, data, None) == f"predictions/run-1/family/incoming@{'ab' * 6}/all/"
    assert predictions_dir(loc, data, "test").endswith("/test/")


def test_data_is_repo_ref_dataset():
    assert parse_data("faces/main/incoming") == ("faces", "main", "incoming")
    for bad in ("faces/main", "faces//incoming", "a/b/c/d"):
        with pytest.raises(SpecError, match="<repo>/<ref>/<dataset>"):
            parse_data(bad)


def test_infer_job_spec_is_typed_and_checked():
    job = parse_job_spec({"kind": "infer", "name": "i", "model": "fam@production", "dataset": "incoming"})
    assert isinstance(job, InferJob) and not job.use_gpu and job.concurrency == 1 and job.split is None
    with pytest.raises(SpecError) as info:
        parse_job_spec(
            {"kind": "infer", "name": "i", "model": "", "dataset": "in coming", "split": "dev", "concurency": 2, "batch_size": 0}
        )
    text = "\n".join(info.value.problems)
    for word in ("model", "dataset", "split", "concurency: unknown key (did you mean 'concurrency'?)", "batch_size"):
        assert word in text, text
