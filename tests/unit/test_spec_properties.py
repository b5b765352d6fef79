"""Property-based tests of spec parsing (issue 22, deliverable 9): whatever JSON-like value lands in whatever
field of a family spec, a sweep spec or the gate's thresholds, parsing either gives a valid spec or raises
flotilla's :class:`SpecError`, never another exception and never slowly; a parsed spec holds only finite
numbers and parses again to itself from its own dump.

The values are what YAML or a notebook can hand flotilla: null, booleans, integers of any size, floats
(infinities and NaN included), strings (lone surrogates included), and lists and mappings of those.
"""

from __future__ import annotations

import math
from types import UnionType
from typing import Any, Union, get_args, get_origin

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from flotilla.data import Thresholds
from flotilla.errors import SpecError
from flotilla.specs import FamilySpec, parse_overrides, parse_spec
from flotilla.tune import SweepSpec

PROPERTIES = settings(max_examples=100, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
"""Enough examples to reach each field several times, few enough for the unit lane (a second or two per test);
a deadline of a second: a parse that takes longer than that on a small value is a bug of its own."""

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["", "main", "age", "faces", "ddp", "choice", "loguniform", ".inf", "yes", "a\udc80b", "1e30"])
)
json_like = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def annotated_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every field of ``model`` with its type, nested specs walked into (``("optim", "lr")``) and listed themselves."""
    paths = []
    for name, info in model.model_fields.items():
        path = (*prefix, name)
        paths.append((path, info.annotation))
        union = get_origin(info.annotation) in (Union, UnionType)  # ``X | None``; not a dict or list of X
        for sub in get_args(info.annotation) if union else (info.annotation,):
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                paths += annotated_paths(sub, path)
    return paths


def field_paths(model: type[BaseModel]) -> list[tuple[str, ...]]:
    return [p for p, _ in annotated_paths(model)]


def float_paths(model: type[BaseModel]) -> list[tuple[str, ...]]:
    """The fields that take a float (alone or beside None or an int)."""
    return [p for p, a in annotated_paths(model) if a is float or float in get_args(a)]


def with_value(base: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """``base`` with ``value`` at ``path`` (mappings made on the way, a scalar in the way replaced)."""
    out = dict(base)
    node = out
    for part in path[:-1]:
        child = node.get(part)
        node[part] = dict(child) if isinstance(child, dict) else {}
        node = node[part]
    node[path[-1]] = value
    return out


def numbers(value: Any) -> list[float]:
    """Every float inside a dumped spec."""
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [x for v in value.values() for x in numbers(v)]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in numbers(v)]
    return []


def parsed_or_spec_error(model: type[BaseModel], data: Any) -> Any:
    """The parsed spec, or None when flotilla refused it with a SpecError; any other exception fails the test."""
    try:
        return parse_spec(model, data)
    except SpecError as exc:
        assert exc.message and len(str(exc)) < 5000, str(exc)[:300]  # names the problem, never a value whole
        return None


def holds_its_own(model: type[BaseModel], spec: Any) -> None:
    """A parsed spec holds finite numbers only and its dump parses back to the same spec."""
    dumped = spec.model_dump(mode="python")
    assert all(math.isfinite(x) for x in numbers(dumped)), dumped
    assert parse_spec(model, dumped) == spec


FAMILY = {"name": "f", "data": {"repo": "faces", "dataset": "faces"}, "epochs": 2}
SWEEP = {
    "name": "s",
    "base": {"name": "f"},
    "space": {"optim.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1}},
    "objective": {"weights": {"val/age/mae": -1.0}},
}


@PROPERTIES
@given(path=st.sampled_from(field_paths(FamilySpec)), value=json_like)
def test_any_value_in_any_family_field_parses_or_is_a_spec_error(path, value):
    spec = parsed_or_spec_error(FamilySpec, with_value(FAMILY, path, value))
    if spec is not None:
        holds_its_own(FamilySpec, spec)


@PROPERTIES
@given(path=st.sampled_from(field_paths(SweepSpec)), value=json_like)
def test_any_value_in_any_sweep_field_parses_or_is_a_spec_error(path, value):
    spec = parsed_or_spec_error(SweepSpec, with_value(SWEEP, path, value))
    if spec is not None:
        holds_its_own(SweepSpec, spec)


@PROPERTIES
@given(key=st.text(max_size=20), value=json_like)
def test_any_space_entry_parses_or_is_a_spec_error(key, value):
    spec = parsed_or_spec_error(SweepSpec, {**SWEEP, "space": {key: value}})
    if spec is not None:
        holds_its_own(SweepSpec, spec)


@PROPERTIES
@given(path=st.sampled_from(field_paths(Thresholds)), value=json_like)
def test_any_value_in_any_gate_threshold_parses_or_is_a_spec_error(path, value):
    spec = parsed_or_spec_error(Thresholds, with_value({}, path, value))
    if spec is not None:
        holds_its_own(Thresholds, spec)


@PROPERTIES
@given(model=st.sampled_from([FamilySpec, SweepSpec, Thresholds]), data=json_like)
def test_any_whole_document_parses_or_is_a_spec_error(model, data):
    spec = parsed_or_spec_error(model, data)
    if spec is not None:
        holds_its_own(model, spec)


@pytest.mark.parametrize(
    ("model", "base", "path"),
    [(m, b, p) for m, b in ((FamilySpec, FAMILY), (SweepSpec, SWEEP), (Thresholds, {})) for p in float_paths(m)],
)
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_a_non_finite_number_is_refused_in_every_float_field(model, base, path, value):
    with pytest.raises(SpecError, match=r"finite|fraction"):
        parse_spec(model, with_value(base, path, value))


def test_every_spec_has_float_fields_to_check():
    assert {("optim", "lr"), ("optim", "weight_decay"), ("model", "dropout")} <= set(float_paths(FamilySpec))
    assert ("budget", "time_limit_s") in float_paths(SweepSpec) and ("max_missing",) in float_paths(Thresholds)


@PROPERTIES
@given(key=st.from_regex(r"[a-z_]{1,8}(\.[a-z_]{1,8}){0,2}", fullmatch=True), text=st.text(max_size=40))
def test_any_set_value_is_read_or_is_a_spec_error(key, text):
    """``--set KEY=VALUE`` reads VALUE as YAML: whatever was typed, a value or a SpecError saying to quote it."""
    try:
        out = parse_overrides([f"{key}={text}"])
    except SpecError as exc:
        assert exc.message
    else:
        assert isinstance(out, dict) and key.split(".")[0] in out


HUGE = [
    list(range(5_000)),
    {f"k{i}": i for i in range(5_000)},
    {str(i): 0.5 for i in range(5_000)},
    "x" * 100_000,
    {"g": {f"s{i}": 1 for i in range(5_000)}},
]
"""Values far past any bound (a YAML alias expands to 10,000 values at most), small enough to parse quickly."""


@pytest.mark.parametrize(
    ("model", "base", "path"),
    [(m, b, p) for m, b in ((FamilySpec, FAMILY), (SweepSpec, SWEEP), (Thresholds, {})) for p in field_paths(m)],
    ids=lambda v: ".".join(v) if isinstance(v, tuple) else getattr(v, "__name__", "base"),
)
def test_a_huge_value_in_any_field_is_refused_in_a_short_message(model, base, path):
    """A value a YAML alias or a careless notebook made huge is never quoted whole (a 700 KB message once)."""
    for value in HUGE:
        try:
            parse_spec(model, with_value(base, path, value))
        except SpecError as exc:
            assert len(str(exc)) < 12_000, f"{path}: {len(str(exc))} characters: {str(exc)[:200]}"
