"""Every sweep spec shipped in tuning/ loads: its own keys, its base family spec and the overrides."""

from pathlib import Path

import pytest

from flotilla.tune.spec import load_sweep_spec

ROOT = Path(__file__).resolve().parents[2]


SHIPPED = sorted((ROOT / "tuning").glob("*.yaml"))


def test_the_shipped_sweep_specs_are_found():  # an empty glob would make the next test a silent skip
    assert {p.name for p in SHIPPED} >= {"face_family.yaml", "face_family_pareto.yaml", "demo.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_sweep_specs_load(path):
    spec = load_sweep_spec(path)
    family = spec.family(ROOT)
    assert family.epochs > spec.scheduler.grace_period or spec.scheduler.type == "none"


def test_the_pareto_example_is_multi_objective():
    spec = load_sweep_spec(ROOT / "tuning" / "face_family_pareto.yaml")
    assert spec.objective.multi and spec.objective.primary == ("val/age/mae", "min")
