"""Bad input to a family spec and the CLI is refused up front with the problem and the fix, never a traceback.

Each case here once passed ``--check`` and failed later (in every worker, or on the cluster), or crashed
with a Python exception (a yaml ScannerError, a TypeError) instead of saying what to change.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from typer.testing import CliRunner

from flotilla.cli import app, parse_sets
from flotilla.errors import SpecError
from flotilla.specs import FamilySpec, load_family_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]
FAMILY = str(ROOT / "jobs/face_family.yaml")


def _problems(**fields) -> list[str]:
    with pytest.raises(SpecError) as info:  # as `flotilla train` reads a spec (its --set is covered by the advice)
        parse_spec(FamilySpec, {"name": "f", **fields}, settable=True)
    return info.value.problems


def _flat(output: str) -> str:
    """CLI output as one line: rich wraps at the terminal's width and draws boxes round typer's errors."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


# --set: values YAML cannot read, and keys that go inside another --set's value


@pytest.mark.parametrize(
    ("item", "problem", "quoted"),
    [
        ("name=@nightly", "found character '@' that cannot start any token", "--set \"name='@nightly'\""),
        ("optim.lr=[1", "expected ',' or ']', but got '<stream end>'", "--set \"optim.lr='[1'\""),
        ("x=%x", "expected '<document start>', but found '<stream end>'", "--set \"x='%x'\""),
        ("data.ref=*main", "found undefined alias 'main'", "--set \"data.ref='*main'\""),
        ("name=[it's", "expected ',' or ']', but got '<stream end>'", "--set \"name='[it''s'\""),
    ],
)
def test_a_set_value_yaml_cannot_read_says_to_quote_it(item, problem, quoted):
    with pytest.raises(SpecError) as info:
        parse_sets([item])
    value = item.split("=", 1)[1]
    assert info.value.message == f"--set {item!r}: the value {value!r} is not valid YAML ({problem})"
    assert info.value.hint == f"quote it to pass it as a string: {quoted}"
    # and the quoting the hint gives is read as that very string
    assert parse_sets([quoted.split(" ", 1)[1].strip('"')]) == _nested(item.split("=", 1)[0], value)


def _nested(key: str, value: str) -> dict:
    *parents, leaf = key.split(".")
    out: dict = {leaf: value}
    for part in reversed(parents):
        out = {part: out}
    return out


def test_a_set_inside_another_sets_value_is_a_conflict_naming_both_in_either_order():
    with pytest.raises(SpecError) as info:
        parse_sets(["epochs=3", "epochs.x=1"])  # was TypeError: 'int' object does not support item assignment
    assert info.value.message == (
        "--set 'epochs.x=1' conflicts with --set 'epochs=3': that sets epochs to a number 3, "
        "not a mapping, so epochs.x cannot be set inside it"
    )
    assert info.value.hint == (
        "keep one of the two: a field is set whole (--set KEY=VALUE) or key by key (--set KEY.SUBKEY=VALUE)"
    )
    with pytest.raises(
        SpecError,
        match=r"^--set 'data.ref=main' conflicts with --set 'data=x': that sets data to a "
        r"string 'x', not a mapping",
    ):
        parse_sets(["data=x", "data.ref=main"])
    with pytest.raises(
        SpecError,
        match=r"^--set 'data.ref.y=1' conflicts with --set 'data=\{ref: x\}': that sets "
        r"data.ref to a string 'x'",
    ):
        parse_sets(["data={ref: x}", "data.ref.y=1"])
    # the other order silently dropped data.ref
    with pytest.raises(SpecError) as info:
        parse_sets(["data.ref=dev", "data=3"])
    assert info.value.message == (
        "--set 'data=3' conflicts with --set 'data.ref=dev': that sets a key inside data, "
        "and this sets data to a number 3, not a mapping"
    )


def test_sets_that_agree_still_combine_and_a_repeated_key_takes_the_last():
    assert parse_sets(["data.ref=dev", "data={repo: faces}", "epochs=3", "epochs=4", "optim.lr=0.01"]) == {
        "data": {"ref": "dev", "repo": "faces"},
        "epochs": 4,
        "optim": {"lr": 0.01},
    }
    assert parse_sets(["data={ref: x}", "data={repo: y}"]) == {"data": {"repo": "y"}}
    with pytest.raises(SpecError, match=r"^--set 'optim\.\.lr=1' has an empty key"):
        parse_sets(["optim..lr=1"])


def test_train_check_with_a_bad_set_exits_1_with_the_message_not_a_traceback():
    for sets, says in ((["name=@nightly"], "is not valid YAML"), (["epochs=3", "epochs.x=1"], "conflicts with --set 'epochs=3'")):
        args = ["train", FAMILY, *[a for s in sets for a in ("--set", s)], "--check"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception  # typer.Exit, no traceback
        assert says in _flat(result.output)


def test_a_data_repo_or_dataset_the_hub_would_refuse_is_caught_by_check():
    """Names are checked with the hub's own rules at --check, not when the run first reaches the hub."""
    result = CliRunner().invoke(app, ["train", FAMILY, "--set", "data.repo=Faces_V2", "--set", "data.dataset=a/b", "--check"])
    out = _flat(result.output)
    assert result.exit_code == 1 and "data.repo: invalid repository id 'Faces_V2'" in out, out
    assert "data.dataset: invalid dataset name 'a/b'" in out


# values a spec field cannot take


def test_seed_is_bounded_to_numpys_range():
    # every worker calls np.random.seed(seed), which raised "Seed must be between 0 and 2**32 - 1", retried
    assert _problems(seed=-1) == ["seed: Input should be greater than or equal to 0"]
    assert _problems(seed=5_000_000_000) == ["seed: Input should be less than 4294967296"]
    for seed in (0, 2**32 - 1):
        np.random.seed(parse_spec(FamilySpec, {"name": "f", "seed": seed}).seed)
    with pytest.raises(ValueError):
        np.random.seed(2**32)  # the bound is numpy's, not a stricter one of ours


def test_deepspeed_fp16_needs_a_gpu_and_the_other_dtypes_run_on_cpu():
    from flotilla.training.loop import deepspeed_config

    assert _problems(backend="deepspeed", deepspeed={"dtype": "fp16"}) == [
        "(top level): deepspeed.dtype: fp16 needs scaling.use_gpu: true (DeepSpeed refuses fp16 on CPU workers); "
        "on CPU use dtype: bf16 or fp32 (or auto: fp32 on CPU, bf16 on GPUs that have it)"
    ]
    gpu = parse_spec(
        FamilySpec, {"name": "f", "backend": "deepspeed", "deepspeed": {"dtype": "fp16"}, "scaling": {"use_gpu": True}}
    )
    assert deepspeed_config(gpu, use_gpu=True)["fp16"] == {"enabled": True}
    for dtype in ("auto", "bf16", "fp32"):
        parse_spec(FamilySpec, {"name": "f", "backend": "deepspeed", "deepspeed": {"dtype": dtype}})
    auto = parse_spec(FamilySpec, {"name": "f", "backend": "deepspeed"})
    assert "fp16" not in deepspeed_config(auto, use_gpu=False) and "bf16" not in deepspeed_config(auto, use_gpu=False)
    # ddp ignores the deepspeed block, so its dtype is no problem there
    assert parse_spec(FamilySpec, {"name": "f", "deepspeed": {"dtype": "fp16"}}).backend == "ddp"


def test_a_number_date_or_boolean_where_a_string_belongs_says_how_to_quote_it(tmp_path):
    assert _problems(data={"ref": 2024}) == [
        "data.ref: Input should be a valid string (YAML read 2024 as a number: quote it, '2024'; "
        "with --set, --set \"data.ref='2024'\")"
    ]
    with pytest.raises(SpecError) as info:  # a sweep's base or a job's family: no --set to advise on
        parse_spec(FamilySpec, {"name": "f", "data": {"ref": 2024}}, source="sweep 's' base")
    assert info.value.problems == ["data.ref: Input should be a valid string (YAML read 2024 as a number: quote it, '2024')"]
    spec = tmp_path / "f.yaml"
    spec.write_text("name: 2024\ndata: {ref: 2024-01-01, dataset: yes}\n")
    with pytest.raises(SpecError) as info:
        load_family_spec(spec)
    assert info.value.problems == [
        "name: Input should be a valid string (YAML read 2024 as a number: quote it, '2024'; with --set, --set \"name='2024'\")",
        "data.ref: Input should be a valid string (YAML read 2024-01-01 as a date: quote it, '2024-01-01'; "
        "with --set, --set \"data.ref='2024-01-01'\")",
        "data.dataset: Input should be a valid string (YAML read it as the boolean true, as it reads yes, no, on, off: "
        "quote it as written, e.g. 'yes')",
    ]
    # the --set form the hint gives reaches the spec as the string
    assert load_family_spec(FAMILY, parse_sets(["data.ref='2024'"])).data.ref == "2024"
    with pytest.raises(SpecError, match=r"data\.ref: Input should be a valid string \(YAML read 2024 as a number"):
        load_family_spec(FAMILY, parse_sets(["data.ref=2024"]))
    # a job spec takes no --set: the quoting alone
    from flotilla.jobs.specs import parse_job_spec

    with pytest.raises(SpecError) as info:
        parse_job_spec({"kind": "ingest", "name": 2024, "synthetic": {"n": 5}})
    assert info.value.problems == ["name: Input should be a valid string (YAML read 2024 as a number: quote it, '2024')"]


# CLI bounds, checked before anything starts


class _NoCluster:
    """Stands in for LocalCluster: records what `up` was asked for instead of starting Ray."""

    calls: ClassVar[list[dict]] = []
    token_path = "/nonexistent/auth_token"

    def up(self, **kwargs):
        type(self).calls.append(kwargs)

        class _Status:
            def describe(self) -> str:
                return "stub cluster"

        return _Status()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--num-cpus", "-1"], "Invalid value for '--num-cpus': Input should be greater than or equal to 0"),
        (["--num-cpus", "0"], "Invalid value for '--num-cpus': a head with no CPUs needs worker nodes"),
        (["--workers", "-1"], "Invalid value for '--workers': Input should be greater than or equal to 0"),
        (["--worker-cpus", "0"], "Invalid value for '--worker-cpus': Input should be greater than or equal to 1"),
        (["--port", "70000"], "Invalid value for '--port': Input should be less than or equal to 65535"),
        (["--dashboard-port", "0"], "Invalid value for '--dashboard-port': Input should be greater than or equal to 1"),
    ],
)
def test_cluster_up_refuses_impossible_sizes_before_starting_anything(monkeypatch, args, says):
    import flotilla.cli.jobs

    monkeypatch.setattr(flotilla.cli.jobs, "LocalCluster", _NoCluster)
    _NoCluster.calls = []
    result = CliRunner().invoke(app, ["cluster", "up", *args])
    assert result.exit_code == 2 and says in _flat(result.output), result.output
    assert _NoCluster.calls == []
    # the stub does see a valid request, so an empty list above means nothing was started
    ok = CliRunner().invoke(app, ["cluster", "up", "--num-cpus", "1", "--workers", "0", "--worker-cpus", "1"])
    assert ok.exit_code == 0, ok.output
    assert _NoCluster.calls[0]["num_cpus"] == 1 and _NoCluster.calls[0]["workers"] == 0
    headless = CliRunner().invoke(app, ["cluster", "up", "--num-cpus", "0", "--workers", "1"])  # work on the worker only
    assert headless.exit_code == 0 and _NoCluster.calls[1]["num_cpus"] == 0, headless.output


@pytest.mark.parametrize("n", ["0", "-5"])
def test_data_generate_refuses_fewer_than_one_image(monkeypatch, n):
    import flotilla.cli.data

    def nothing(*a, **k):
        raise AssertionError("data generate went on to the hub")

    monkeypatch.setattr(flotilla.cli.data, "Hub", nothing)
    monkeypatch.setattr(flotilla.cli.data, "generate_dataset", nothing)
    result = CliRunner().invoke(app, ["data", "generate", "--n", n])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--n': Input should be greater than or equal to 1" in _flat(result.output)
