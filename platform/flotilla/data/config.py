"""The base of the data layer's typed configs: :class:`~flotilla.data.report.Thresholds`,
:class:`~flotilla.data.synthetic.FaceSpec` and :class:`~flotilla.data.synthetic.Shift`.

One class per concern serves Python and YAML alike: the job specs embed these models as
they are (``flotilla.specs.parse_spec`` words their problems like any spec's, with the
path into the YAML), so no spec mirrors them field by field. Like every flotilla spec
they are frozen and refuse unknown keys. Built in Python, a bad one raises
:class:`~flotilla.errors.SpecError` listing every problem, as the rest of flotilla does:
pydantic's ValidationError is no FlotillaError.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from flotilla.errors import SpecError, brief


def _not_bool(value: Any) -> Any:
    # pydantic's lax mode reads True as 1 (and YAML reads yes/on as True): a knob set to a boolean is a slip
    if isinstance(value, bool):
        raise ValueError(f"must be a number, not the boolean {value}")
    return value


def _whole(value: Any) -> Any:
    # lax mode would also take 64.0 as 64; an image size or a count is written as an int
    if isinstance(value, (bool, float)):
        raise ValueError(f"must be an int, got {brief(value)}")
    return value


Number = Annotated[float, BeforeValidator(_not_bool), Field(allow_inf_nan=False)]
"""A finite float that is not a boolean."""
Whole = Annotated[int, BeforeValidator(_whole)]
"""An int that is neither a boolean nor a float."""


class Config(BaseModel):
    """A frozen config that refuses unknown keys; construction errors are one :class:`SpecError`."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    if not TYPE_CHECKING:  # type checkers keep pydantic's typed signature of __init__

        def __init__(self, **data: Any) -> None:
            try:
                super().__init__(**data)
            except ValidationError as exc:
                name = type(self).__name__
                raise SpecError(f"invalid {name}", _problems(exc, type(self)), hint=f"fix the {name}(...) arguments") from None

        # pydantic runs a model's own __init__ for nested values too unless it is marked as the base one, as here:
        # only direct construction converts, so a job spec embedding a config keeps pydantic's errors for
        # parse_spec, each with its path into the YAML (tests/unit/test_job_specs.py checks both ways)
        __init__.__pydantic_base_init__ = True


def _problems(exc: ValidationError, model: type[BaseModel]) -> list[str]:
    """One line per problem: ``field: what is wrong`` (our validators' own words, without pydantic's prefix)."""
    out = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(e["loc"][-1]), list(model.model_fields), n=1)
            out.append(f"{where}: unknown field" + (f" (did you mean {close[0]!r}?)" if close else ""))
        elif e["type"] == "value_error":
            out.append(f"{where}: {e['ctx']['error']}")
        else:
            out.append(f"{where}: {e['msg']} (got {brief(e['input'])})")
    return out
