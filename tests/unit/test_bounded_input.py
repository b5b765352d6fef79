"""Bounded input (issue 22): an alias bomb, non-finite numbers, booleans for numbers and absurd sizes are refused
quickly, by name, and an error never quotes a huge value whole."""

from __future__ import annotations

import time

import pytest

from flotilla.errors import SpecError, brief
from flotilla.specfiles import MAX_YAML_VALUES, safe_yaml
from flotilla.specs import FamilySpec, load_family_spec, parse_overrides, parse_spec
from flotilla.tune.spec import SweepSpec

# 10 nested anchors, each repeating the last ten times: 3 KB of YAML, 10**10 values expanded
BOMB = 'a: &a ["x","x","x","x","x","x","x","x","x","x"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(9)
)


def test_an_alias_bomb_is_refused_before_it_is_built(tmp_path):
    spec = tmp_path / "bomb.yaml"
    spec.write_text(BOMB + "name: x\ntasks:\n  - {name: age, kind: regression, label: age, weight: *j}\n")
    t = time.perf_counter()
    with pytest.raises(SpecError, match="expand to more than") as info:
        load_family_spec(spec)
    assert time.perf_counter() - t < 1.0  # refused from the node graph, never expanded
    assert len(str(info.value)) < 400


def test_aliases_a_spec_really_uses_still_work_and_self_reference_is_refused():
    assert safe_yaml("base: &b {lr: 0.1}\nother: *b\n") == {"base": {"lr": 0.1}, "other": {"lr": 0.1}}
    assert safe_yaml("") is None
    with pytest.raises(SpecError, match="recursive"):
        safe_yaml("a: &a [1, *a]\n")
    wide = "[" + ",".join(["1"] * (MAX_YAML_VALUES + 5)) + "]"
    with pytest.raises(SpecError, match="expand to more than"):
        safe_yaml(wide)


def test_a_sweep_space_entry_that_is_a_bomb_is_refused_in_a_short_message():
    with pytest.raises(SpecError, match="expand to more than"):
        parse_overrides([f"x={'[' + ','.join(['1'] * (MAX_YAML_VALUES + 1)) + ']'}"])
    huge = list(range(100_000))
    with pytest.raises(SpecError) as info:
        parse_spec(SweepSpec, {"name": "s", "base": {"name": "f"}, "space": {"optim.lr": huge}})
    assert len(str(info.value)) < 1000 and "list of 100000 items" in str(info.value)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"epochs": True}, "not the boolean true"),
        ({"batch_size": False}, "not the boolean false"),
        ({"seed": True}, "not the boolean true"),
        ({"optim": {"weight_decay": float("inf")}}, "finite number"),
        ({"optim": {"lr": float("nan")}}, "finite number"),
        ({"model": {"dropout": float("-inf")}}, "finite number"),
        ({"epochs": 10**30}, "epochs"),
        ({"batch_size": 10**12}, "less than or equal to 65536"),
        ({"model": {"head_hidden": 10**9}}, "less than or equal to 4096"),
        ({"scaling": {"workers": 10**6}}, "less than or equal to 1024"),
        ({"seed": -1}, "greater than or equal to 0"),
        ({"seed": 99999999999999999999}, "seed"),
        ({"optim": {"weight_decay": 5.0}}, "less than or equal to 1"),
    ],
)
def test_a_family_spec_refuses_what_would_train_nonsense(data, words):
    t = time.perf_counter()
    with pytest.raises(SpecError, match=words):
        parse_spec(FamilySpec, {"name": "f", **data})
    assert time.perf_counter() - t < 1.0


def test_sweep_budget_numbers_are_bounded_and_never_booleans():
    base = {"name": "s", "base": {"name": "f"}, "space": {"optim.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1}}}
    cases = (({"trials": True}, "boolean"), ({"concurrency": 10**9}, "1024"), ({"time_limit_s": float("inf")}, "finite"))
    for budget, words in cases:
        with pytest.raises(SpecError, match=words):
            parse_spec(SweepSpec, {**base, "budget": budget})


def test_brief_never_builds_a_huge_repr():
    assert brief("short") == "'short'"
    assert brief(list(range(10**6))) == "<list of 1000000 items>"
    long = brief("x" * 500)
    assert len(long) <= 80 and "502 chars" in long


def test_a_lone_surrogate_in_a_name_or_key_is_a_clean_error():
    from flotilla.errors import InvalidNameError
    from flotilla.names import branch_id, check_object_path

    with pytest.raises(InvalidNameError, match="lone surrogate"):
        branch_id("a\udc80b")
    with pytest.raises(InvalidNameError, match="not valid Unicode"):
        check_object_path("labels/a\udc80b.parquet")


def test_flotilla_home_pointing_at_a_file_names_the_variable(tmp_path, monkeypatch):
    from flotilla.errors import ConfigError
    from flotilla.settings import Settings

    f = tmp_path / "home"
    f.write_text("")
    monkeypatch.setenv("FLOTILLA_HOME", str(f))
    with pytest.raises(ConfigError, match=r"FLOTILLA_HOME=.* is a file, not a folder"):
        Settings.from_env()


def test_quoted_text_is_printed_as_written_not_as_emoji():
    """Rich turned ':x:' in a quoted label file into an emoji: every console of the CLI is made without emoji."""
    import importlib
    import pkgutil

    from rich.console import Console

    import flotilla.cli

    consoles = []
    for info in pkgutil.iter_modules(flotilla.cli.__path__):
        if info.name.startswith("__"):  # __main__ runs the CLI on import
            continue
        module = importlib.import_module(f"flotilla.cli.{info.name}")
        consoles += [v for v in vars(module).values() if isinstance(v, Console)]
    assert len(consoles) >= 10
    for console in consoles:
        with console.capture() as captured:  # the module's console, its output captured (its file untouched)
            console.print("label :x: in a file")
        assert ":x:" in captured.get()
