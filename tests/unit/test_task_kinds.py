"""The kind and backbone registries: one list of names each, one object per task kind, checked without torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from flotilla.errors import SpecError
from flotilla.models import KINDS, REFERENCE_TASKS, TaskKind, task_kind
from flotilla.models.backbone_names import BACKBONE_NAMES, DEFAULT_BACKBONE, check_backbone_name
from flotilla.models.kinds import Kind
from flotilla.models.tasks import task_from_dict
from flotilla.specs import FamilySpec, ModelSpec, parse_spec

ROOT = Path(__file__).resolve().parents[2]


def test_the_kind_literal_names_the_registry() -> None:
    assert get_args(Kind) == tuple(KINDS) == ("regression", "binary", "multiclass")
    assert all(isinstance(k, TaskKind) and k.name == name for name, k in KINDS.items())


def test_an_unknown_kind_lists_the_known_ones() -> None:
    with pytest.raises(SpecError, match="unknown task kind 'ordinal'; known kinds: regression, binary, multiclass"):
        task_kind("ordinal")
    with pytest.raises(SpecError) as err:
        task_from_dict({"name": "x", "kind": ["binary"]})  # YAML can give a list: a problem, not a TypeError
    assert err.value.problems == ["kind: ['binary'] is not one of regression, binary, multiclass"]


@pytest.mark.parametrize(
    ("spec", "head", "loss", "primary", "mode"),
    [
        ({"kind": "regression"}, 1, "l1", "mae", "min"),
        ({"kind": "regression", "metrics": ["rmse"]}, 1, "l1", "rmse", "min"),
        ({"kind": "binary"}, 1, "bce", "accuracy", "max"),
        ({"kind": "binary", "metrics": ["auc"]}, 1, "bce", "auc", "max"),
        ({"kind": "multiclass", "num_classes": 5}, 5, "ce", "macro_f1", "max"),
        ({"kind": "multiclass", "num_classes": 3, "metrics": ["accuracy"]}, 3, "ce", "accuracy", "max"),
    ],
)
def test_each_kind_decides_head_loss_and_primary_metric(spec: dict, head: int, loss: str, primary: str, mode: str) -> None:
    task = task_from_dict({"name": "t", **spec})
    assert task.behaviour is KINDS[spec["kind"]]
    assert (task.out_dim, task.loss, task.primary_metric, task.mode) == (head, loss, primary, mode)
    assert task.loss == task.behaviour.default_loss and set(task.metrics) <= set(task.behaviour.metrics)


def test_reference_tasks_use_the_kind_singletons() -> None:
    assert [t.behaviour.name for t in REFERENCE_TASKS.values()] == ["regression", "binary", "multiclass"]


def test_only_regression_is_scaled_and_only_multiclass_takes_num_classes() -> None:
    assert [k.scaled for k in KINDS.values()] == [True, False, False]
    assert KINDS["binary"].num_classes_problems(2) == []
    assert KINDS["regression"].num_classes_problems(2)[0].startswith("num_classes: only multiclass")
    assert KINDS["multiclass"].num_classes_problems(None) == ["num_classes: required for a multiclass task"]


def test_the_backbone_builders_are_the_names_registry() -> None:
    from flotilla.models.backbones import BACKBONES

    assert tuple(BACKBONES) == BACKBONE_NAMES and DEFAULT_BACKBONE in BACKBONE_NAMES
    assert ModelSpec().backbone == DEFAULT_BACKBONE
    assert all(ModelSpec(backbone=name).backbone == name for name in BACKBONE_NAMES)


def test_an_unknown_backbone_in_a_spec_lists_the_known_ones() -> None:
    with pytest.raises(SpecError, match="unknown backbone 'vit'; choose one of: small_cnn, resnet"):
        check_backbone_name("vit")
    with pytest.raises(SpecError) as err:
        parse_spec(FamilySpec, {"name": "f", "model": {"backbone": "vit"}})
    assert err.value.problems == ["model.backbone: unknown backbone 'vit'; choose one of: small_cnn, resnet"]


def test_validating_a_spec_does_not_import_torch() -> None:
    """The CLI's --check and start-up read specs; importing torch there costs seconds for nothing."""
    code = (
        "import sys\n"
        "from flotilla.specs import load_family_spec\n"
        "spec = load_family_spec(sys.argv[1], {'model': {'backbone': 'resnet'}})\n"
        "assert [t.out_dim for t in spec.task_specs()] == [1, 1, 7]\n"
        "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not loaded, loaded\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "platform")}
    run = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "jobs/face_family.yaml")], capture_output=True, text=True, env=env, timeout=120
    )
    assert run.returncode == 0, run.stderr
