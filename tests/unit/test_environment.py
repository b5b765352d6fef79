"""The environment block of a model card: what it records, and that it survives card.json's round trip."""

import json
import platform
from importlib import metadata

from flotilla.lineage import DataLineage, ModelCard
from flotilla.training.environment import PACKAGES, Environment, capture_environment, package_version


def test_the_environment_names_the_versions_the_device_and_the_run_shape():
    env = capture_environment(3, "deepspeed", "cpu")
    d = env.to_dict()
    assert set(d) == {
        "python",
        "packages",
        "cuda",
        "cuda_available",
        "device",
        "gpus",
        "platform",
        "machine",
        "workers",
        "backend",
    }
    assert set(d["packages"]) == set(PACKAGES) >= {"torch", "ray", "deepspeed", "optuna", "lakefs"}
    assert d["packages"]["torch"] == metadata.version("torch") and d["packages"]["ray"] == metadata.version("ray")
    assert d["python"] == platform.python_version() and d["machine"] == platform.machine()
    assert d["device"] == "cpu" and d["workers"] == 3 and d["backend"] == "deepspeed"
    assert json.loads(json.dumps(d)) == d  # JSON-native: lists, not tuples
    assert Environment.from_dict(d) == env


def test_a_library_that_is_not_installed_reads_none():
    assert package_version("flotilla-no-such-distribution") is None
    assert package_version("torch") == metadata.version("torch")


def test_the_card_carries_the_environment_through_json():
    env = capture_environment(2, "ddp", "cpu").to_dict()
    card = ModelCard(
        run_id="r",
        model="family",
        created="2026-12-06T00:00:00Z",
        tasks=({"name": "age", "kind": "regression"},),
        metrics={"age/mae": 4.0},
        best_epoch=0,
        epochs_run=1,
        data=DataLineage("faces", "abc", "faces", "main"),
        branch="exp-r",
        code={"git_sha": "g", "dirty": False, "flotilla_version": "0.1.0", "diff_sha256": None, "diff": None},
        config={"name": "fam"},
        environment=env,
    )
    d = json.loads(json.dumps(card.to_dict()))
    assert d["environment"] == env and d["environment"]["packages"]["ray"] == metadata.version("ray")
    assert ModelCard.from_dict(d) == card
    old = {k: v for k, v in d.items() if k != "environment"}  # a card written before the block existed
    assert ModelCard.from_dict(old).environment == {}
