"""Every sweep spec shipped in tuning/ loads: its own keys, its base family spec and the overrides;
and a bad spec is a SpecError that names the problem and the fix, before anything runs."""

from pathlib import Path

import optuna
import pytest

from flotilla.errors import SpecError
from flotilla.specs import load_yaml, parse_spec
from flotilla.tune.spec import SweepSpec, load_sweep_spec

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


# --- bad input: a clear SpecError before anything runs, never a traceback or a silently wrong sweep ---

BASE = {"name": "fam", "data": {"repo": "rep", "dataset": "d"}, "epochs": 9}


def _spec(**over) -> SweepSpec:
    return parse_spec(
        SweepSpec,
        {
            "name": "s",
            "base": BASE,
            "space": {"optim.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1}},
            "objective": {"metric": "val/age/mae", "mode": "min"},
            **over,
        },
        source="sweep.yaml",
    )


def _refused(**over) -> list[str]:
    """The problems of a sweep, whether its own keys or --check's probes find them."""
    with pytest.raises(SpecError) as err:
        _spec(**over).check()
    return err.value.problems or [err.value.message]


def test_a_uniform_dimension_on_an_integer_field_is_refused_and_told_to_be_type_int():
    # 8.0 and 32.0 are valid ints, so probing the end points passed; every 25.16 a trial draws is not
    for kind, low, high in (("uniform", 8, 32), ("loguniform", 4, 16)):  # middles 20.0 and 8.0: whole, so nudged
        (problem,) = _refused(space={"model.width": {"type": kind, "low": low, "high": high}})
        assert problem.startswith("space.model.width = ") and "valid integer" in problem, problem
        assert problem.endswith(
            f"model.width takes whole numbers and a {kind} dimension draws fractions: use {{type: int, low: {low}, high: {high}}}"
        ), problem
    # the fix it names passes, and a continuous dimension on a float field is untouched
    _spec(
        space={"model.width": {"type": "int", "low": 8, "high": 32}, "model.dropout": {"type": "uniform", "low": 0, "high": 0.5}}
    ).check()


def test_a_fractional_value_a_field_refuses_for_another_reason_gets_no_type_int_advice():
    (problem,) = _refused(space={"model.dropout": {"type": "uniform", "low": 0.5, "high": 1.0}})
    assert problem.startswith("space.model.dropout = 1.0:") and "type: int" not in problem
    (problem,) = _refused(space={"model.dropout": {"type": "uniform", "low": -0.4, "high": 0.5}})  # 0 passes, -1 not
    assert problem.startswith("space.model.dropout = -0.4:") and "type: int" not in problem
    # an end point that is not whole, on an integer field, gets the advice with whole end points
    (problem,) = _refused(space={"model.width": {"type": "uniform", "low": 7.5, "high": 32}})
    assert problem.startswith("space.model.width = 7.5:") and problem.endswith("use {type: int, low: 8, high: 32}")


def test_the_searcher_seed_is_bounded_as_optuna_bounds_it():
    for bad, words in ((-1, "greater than or equal to 0"), (2**32, "less than 4294967296")):
        with pytest.raises(SpecError) as err:
            _spec(searcher={"seed": bad})
        assert err.value.problems == [f"searcher.seed: Input should be {words}"]
        with pytest.raises(ValueError, match="Seed must be between"):  # what a sweep met after --check passed
            optuna.samplers.TPESampler(seed=bad)
    for good in (0, 2**32 - 1):
        assert _spec(searcher={"seed": good}).searcher.seed == good
        optuna.samplers.TPESampler(seed=good)


def test_a_step_must_be_positive_and_belongs_to_int_dimensions_only():
    for step in (-4, 0):  # -4: Optuna refused it when the sweep started; 0 was silently a step of 1
        with pytest.raises(SpecError) as err:
            _spec(space={"model.width": {"type": "int", "low": 8, "high": 32, "step": step}})
        assert err.value.problems == ["space.model.width.step: Input should be greater than 0"]
    for kind, step in (("uniform", 0.001), ("uniform", 2), ("loguniform", 1)):  # the searcher ignored it
        with pytest.raises(SpecError) as err:
            _spec(space={"optim.lr": {"type": kind, "low": 0.001, "high": 0.01, "step": step}})
        assert err.value.problems == [
            f"space.optim.lr: step applies to type: int only; a {kind} dimension takes none "
            "(drop it, or list the values to try with type: choice)"
        ]
    _spec(space={"model.width": {"type": "int", "low": 8, "high": 32, "step": 4}}).check()


def test_a_spec_path_that_is_a_directory_binary_or_a_list_is_a_spec_error_naming_the_file(tmp_path):
    (tmp_path / "demo.yaml").write_text("name: x\n")
    with pytest.raises(SpecError, match=r"is a directory, not a spec file: give the path of one YAML spec in it \(.*demo.yaml\)"):
        load_yaml(tmp_path)
    binary = tmp_path / "model.pt"
    binary.write_bytes(b"\x80\x02\xffbinary")
    with pytest.raises(SpecError, match=r"model.pt is not a text file \(byte 0x80 at offset 0 is not UTF-8\)"):
        load_yaml(binary)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match=r"list.yaml must be a YAML mapping of keys to values .*its top level is a list"):
        load_yaml(listed)
    # as a sweep's base: deep_merge met the list and raised a bare ValueError
    with pytest.raises(SpecError) as err:
        _spec(base=str(listed)).check()
    assert err.value.message.startswith(f"base: {listed} must be a YAML mapping")


def test_sweep_check_on_a_directory_exits_1_with_the_error_not_a_traceback(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from flotilla.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tuning").mkdir()
    result = CliRunner().invoke(app, ["sweep", "tuning", "--check"])
    assert result.exit_code == 1 and not isinstance(result.exception, IsADirectoryError)
    assert "tuning is a directory, not a spec file" in result.output


def test_a_single_metric_needs_its_mode():
    with pytest.raises(SpecError) as err:
        _spec(objective={"metric": "val/age/mae"})  # maximised an error, silently
    assert err.value.problems == [
        "objective: 'mode' is required with 'metric': mode: min to minimise val/age/mae, or mode: max to maximise it"
    ]
    assert _spec(objective={"metric": "val/age/mae", "mode": "min"}).objective.primary == ("val/age/mae", "min")
    # a weighted sum keeps its default, max (its weights carry the signs), as the shipped specs rely on
    assert _spec(objective={"weights": {"val/age/mae": -0.02, "val/gender/accuracy": 1.0}}).objective.mode == "max"


def test_a_condition_on_a_continuous_dimension_is_refused_one_on_an_int_dimension_is_checked():
    (problem,) = _refused(
        space={
            "optim.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
            "weighting": {"type": "choice", "values": ["fixed", "uncertainty"], "when": {"optim.lr": 0.001}},
        }
    )
    assert problem == (
        "space.weighting.when: optim.lr is a loguniform dimension, whose draws are never exactly 0.001, "
        "so weighting would never be sampled: a condition names a choice (or int) dimension; "
        "make optim.lr a choice of the values you mean"
    )
    for never in (10, 33, 8.5, "16"):
        (problem,) = _refused(
            space={
                "model.width": {"type": "int", "low": 8, "high": 32, "step": 4},
                "model.dropout": {"type": "uniform", "low": 0, "high": 0.5, "when": {"model.width": never}},
            }
        )
        assert problem == (
            f"space.model.dropout.when: model.width = {never!r} is never sampled (its values: whole "
            f"numbers from 8 to 32 in steps of 4), so model.dropout never would be"
        )


def test_a_condition_on_an_int_dimension_is_honoured_by_the_searcher():
    """Why an int condition is allowed: the define-by-run space compares the drawn int with ==."""
    from flotilla.tune.space import DefineByRun

    spec = _spec(
        space={
            "model.width": {"type": "int", "low": 8, "high": 12, "step": 4},
            "model.dropout": {"type": "uniform", "low": 0, "high": 0.5, "when": {"model.width": 12}},
        }
    )
    spec.check()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: DefineByRun(spec.space)(t) or 0.0, n_trials=20)
    sampled = [t.params for t in study.trials]
    assert any("model.dropout" in p for p in sampled) and all(("model.dropout" in p) == (p["model.width"] == 12) for p in sampled)


def test_a_fixed_value_or_a_bare_promote_target_says_how_to_write_it():
    for value, words in (
        (
            0.01,
            "must be a dimension like {type: loguniform, low: ..., high: ...}, not a number 0.01; "
            "to fix a value, put it in overrides",
        ),
        (
            [0.01, 0.02],
            "must be a dimension, not a list: to search these values write "
            "{type: choice, values: [0.01, 0.02]}; to fix a value, put it in overrides",
        ),
    ):
        with pytest.raises(SpecError) as err:
            _spec(space={"optim.lr": value})
        assert err.value.problems == [f"space.optim.lr: {words}"]
    with pytest.raises(SpecError) as err:
        _spec(promote="main")
    assert err.value.problems == ["promote: write promote: {into: main} (promote is a mapping)"]
    with pytest.raises(SpecError) as err:  # any other mapping written as a value: no class name either
        _spec(searcher="tpe")
    assert err.value.problems == [
        "searcher: must be a mapping of keys to values (searcher: {key: value, ...}), not a string 'tpe'"
    ]
    assert _spec(promote={"into": None}).promote.into is None


def test_a_base_is_resolved_beside_the_sweep_spec_then_among_the_shipped_ones(tmp_path):
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "face_family.yaml").write_text("name: fam\n")
    with pytest.raises(SpecError) as err:
        _spec(base="jobs/face_famly.yaml").check(tmp_path)
    assert err.value.message == (
        f"base: jobs/face_famly.yaml does not exist under {tmp_path} (did you mean jobs/face_family.yaml?), "
        "nor is it a shipped family spec (face_family)"
    )
    assert err.value.hint == (
        f"a relative path is resolved against {tmp_path}, the folder of the spec that names it, then among the shipped "
        "family specs: face_family (jobs/face_family.yaml)"
    )
    mine = _spec(base="jobs/face_family.yaml", overrides={"data": {"repo": "rep", "dataset": "d"}, "epochs": 9})
    assert mine.check(tmp_path).name == "fam"  # the file beside the spec wins over the shipped one ...
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert mine.check(elsewhere).name == "face-family"  # ... and where there is none, the shipped one is found
    assert Path(mine.anchored(tmp_path).base) == tmp_path / "jobs" / "face_family.yaml"  # absolute once anchored
    with pytest.raises(SpecError) as err:  # an absolute base is not resolved against anything
        _spec(base=str(tmp_path / "jobs" / "nope.yaml")).check(tmp_path)
    assert err.value.message == f"base: {tmp_path / 'jobs' / 'nope.yaml'} does not exist"


def test_an_int_dimension_needs_whole_end_points():
    with pytest.raises(SpecError) as err:  # the searcher cut 7.5 down to 7 with int(): a range nobody wrote
        _spec(space={"model.width": {"type": "int", "low": 7.5, "high": 32}})
    assert err.value.problems == ["space.model.width: an int dimension needs whole numbers for low and high, got 7.5 and 32"]
    assert _spec(space={"model.width": {"type": "int", "low": 8.0, "high": 32}}).space["model.width"].low == 8  # 8.0 is 8


def test_an_alias_needs_a_promotion_target_and_a_valid_name():
    """``alias`` / ``promote.alias`` point a family's alias at what was merged: without a merge there is nothing to point at."""
    from flotilla.specs import FamilySpec
    from flotilla.tune import SweepSpec

    with pytest.raises(SpecError, match="set merge_into too"):
        parse_spec(FamilySpec, {"name": "fam", "alias": "production"})
    with pytest.raises(SpecError, match="invalid alias name"):
        parse_spec(FamilySpec, {"name": "fam", "merge_into": "main", "alias": "prod/uction"})
    assert parse_spec(FamilySpec, {"name": "fam", "merge_into": "main", "alias": "production"}).alias == "production"
    sweep = {
        "name": "s",
        "base": {"name": "fam"},
        "space": {"optim.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
        "objective": {"metric": "val/age/mae", "mode": "min"},
    }
    with pytest.raises(SpecError, match=r"promote\.alias: an alias points at a promoted model"):
        parse_spec(SweepSpec, {**sweep, "promote": {"into": None, "alias": "production"}}).check()
