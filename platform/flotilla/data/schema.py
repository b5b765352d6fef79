"""Label schemas: what label columns a dataset declares, so nothing downstream hard-wires them.

A dataset's manifest declares its label columns (``Manifest.label_schema``): each a
:class:`LabelColumn` with a *kind* — ``regression`` (a number in ``range``), ``binary`` (code 0 or 1,
two class names) or ``categorical`` (codes ``0..n-1``, one class name each). Importers fill it from
what their format has (UTKFace's ethnicity, FER2013's usage); the gate checks each column by its
declaration; the loader gives every declared column to training with its ``mask_<name>``; a family
spec may train a task on any declared column (checked against the data when training starts).

:data:`FACE_SCHEMA` (age, gender, emotion) is the default: the synthetic generator writes it, and a
manifest written before schemas existed reads as it, so old data stays readable.
"""

from __future__ import annotations

import difflib
import math
import numbers
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np
import pyarrow as pa

from flotilla.errors import SpecError

ColumnKind = Literal["regression", "binary", "categorical"]
KINDS: tuple[ColumnKind, ...] = ("regression", "binary", "categorical")
_NAME = re.compile(r"\A[a-z][a-z0-9_]{0,63}\Z")
# columns of the labels table that are no labels, and batch columns the loader owns
RESERVED = ("sample_id", "split", "image")
_KEYS = ("name", "kind", "classes", "range", "nullable")
_HINT = (
    "a label column is {name, kind: regression|binary|categorical, classes: [..] (binary: 2, categorical: 2 or more), "
    "range: [lo, hi] (regression), nullable: true|false}"
)


@dataclass(frozen=True)
class LabelColumn:
    """One declared label column. Codes of a binary or categorical column index ``classes``.

    ``range`` bounds a regression column (inclusive; None: any finite number). ``nullable=False``
    makes a missing value an error of the gate (by default null means "unknown", as for every face label).
    """

    name: str
    kind: ColumnKind
    classes: tuple[str, ...] = ()
    range: tuple[float, float] | None = None
    nullable: bool = True

    def __post_init__(self) -> None:
        if problems := _column_problems(self):
            raise SpecError(f"label column {self.name!r} is invalid:", problems, hint=_HINT)

    @property
    def arrow_type(self) -> pa.DataType:
        # int16, not int8: an out-of-range code (gender 300) must reach the gate to be reported
        return pa.float32() if self.kind == "regression" else pa.int16()

    @property
    def num_classes(self) -> int | None:
        return None if self.kind == "regression" else len(self.classes)

    def rule(self) -> str:
        """What a valid value is, in the words the gate's reports use."""
        if self.kind == "regression":
            if self.range is None:
                return f"{self.name} must be a finite number"
            return f"{self.name} must be finite and within [{self.range[0]:g}, {self.range[1]:g}]"
        if self.kind == "binary":
            return f"{self.name} must be 0 ({self.classes[0]}) or 1 ({self.classes[1]})"
        return f"{self.name} must be an integer 0..{len(self.classes) - 1} ({', '.join(self.classes)})"

    def valid(self, values: np.ndarray) -> np.ndarray:
        """Which of ``values`` (float64, nulls filled with anything) are valid values of this column."""
        if self.kind == "regression":
            lo, hi = self.range or (-math.inf, math.inf)
            return cast(np.ndarray, np.isfinite(values) & (values >= lo) & (values <= hi))
        return cast(np.ndarray, (values == np.floor(values)) & (values >= 0) & (values < len(self.classes)))

    def coerce(self, value: Any) -> tuple[Any, str | None]:
        """A user's value (a number, a code or a class name) → what the labels table stores, or why it cannot be."""
        if value is None:
            return None, None if self.nullable else f"{self.name} may not be null"
        if isinstance(value, bool):
            return None, f"{self.name} {value!r} is a boolean, not a label"
        if self.kind == "regression":
            number = float(value) if isinstance(value, numbers.Real) else math.nan
            if not self.valid(np.array([number]))[0]:  # NaN and inf are out too
                bounds = f"in {self.range[0]:g}..{self.range[1]:g}" if self.range else "finite"
                return None, f"{self.name} {value!r} is not a number {bounds}" + (" (or null)" if self.nullable else "")
            return float(pa.scalar(number, pa.float32()).as_py()), None
        names = [c.lower() for c in self.classes]
        if isinstance(value, str) and value.lower() in names:
            return names.index(value.lower()), None
        code = int(value) if isinstance(value, numbers.Integral) else -1
        if 0 <= code < len(self.classes):
            return code, None
        coded = ", ".join(f"{i} {n}" for i, n in enumerate(self.classes))
        return None, f"{self.name} {value!r} is not one of {coded} (a code or a name)" + (", or null" if self.nullable else "")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "kind": self.kind, "nullable": self.nullable}
        if self.classes:
            d["classes"] = list(self.classes)
        if self.range is not None:
            d["range"] = list(self.range)
        return d

    @classmethod
    def from_dict(cls, raw: Any) -> LabelColumn:
        """Build one from a manifest's or a user's mapping; a SpecError lists every problem (with a did-you-mean)."""
        if isinstance(raw, LabelColumn):
            return raw
        if not isinstance(raw, Mapping):
            raise SpecError(f"a label column must be a mapping, got {type(raw).__name__}: {raw!r}", hint=_HINT)
        problems = [f"{k!r}: unknown key{_did_you_mean(str(k), _KEYS)}" for k in raw if k not in _KEYS]
        problems += [f"{k!r}: required" for k in ("name", "kind") if k not in raw]
        classes, rng = raw.get("classes", ()), raw.get("range")
        if isinstance(classes, str) or not isinstance(classes, Sequence):
            problems.append(f"classes: must be a list of class names, got {classes!r}")
        if rng is not None and not (isinstance(rng, Sequence) and not isinstance(rng, str) and len(rng) == 2):
            problems.append(f"range: must be [lo, hi], got {rng!r}")
        if not isinstance(raw.get("nullable", True), bool):
            problems.append(f"nullable: must be true or false, got {raw.get('nullable')!r}")
        if problems:
            raise SpecError(f"label column {raw.get('name', '?')!r} is invalid:", problems, hint=_HINT)
        return cls(
            name=raw["name"],
            kind=raw["kind"],
            classes=tuple(classes),
            range=None if rng is None else (rng[0], rng[1]),
            nullable=raw.get("nullable", True),
        )


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _column_problems(c: LabelColumn) -> list[str]:
    problems = []
    if not isinstance(c.name, str) or not _NAME.match(c.name):
        problems.append(f"name: {c.name!r} must be lower-case letters, digits and '_', starting with a letter")
    elif c.name in RESERVED or c.name.startswith("mask_"):
        problems.append(f"name: {c.name!r} is reserved (sample_id, split, image and mask_* are not label columns)")
    if c.kind not in KINDS:
        problems.append(f"kind: {c.kind!r} is not one of {', '.join(KINDS)}{_did_you_mean(str(c.kind), KINDS)}")
        return problems
    if c.kind == "regression":
        if c.classes:
            problems.append("classes: a regression column has no classes")
        if c.range is not None:
            lo, hi = c.range
            ok = all(isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x) for x in (lo, hi))
            if not ok or not lo < hi:
                problems.append(f"range: must be two finite numbers lo < hi, got {list(c.range)!r}")
    else:
        if c.range is not None:
            problems.append(f"range: only a regression column has a range ({c.kind} has classes)")
        want = "exactly 2" if c.kind == "binary" else "2 or more"
        if not all(isinstance(x, str) and x for x in c.classes):
            problems.append(f"classes: must be non-empty strings, got {list(c.classes)!r}")
        elif (c.kind == "binary" and len(c.classes) != 2) or len(c.classes) < 2:
            problems.append(f"classes: a {c.kind} column needs {want} class names, got {len(c.classes)}")
        elif len({x.lower() for x in c.classes}) != len(c.classes):
            problems.append(f"classes: names repeat (case-insensitively): {list(c.classes)!r}")
    return problems


@dataclass(frozen=True)
class LabelSchema:
    """The label columns of a dataset, in table order; the labels table is ``sample_id, split, *columns``."""

    columns: tuple[LabelColumn, ...]
    _by_name: dict[str, LabelColumn] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if not names:
            raise SpecError("a label schema needs at least one label column", hint=_HINT)
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise SpecError(f"label columns declared twice: {', '.join(dupes)}", hint="give each label column once")
        object.__setattr__(self, "_by_name", {c.name: c for c in self.columns})

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def __iter__(self) -> Iterator[LabelColumn]:
        return iter(self.columns)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __getitem__(self, name: str) -> LabelColumn:
        try:
            return self._by_name[name]
        except KeyError:
            raise SpecError(
                f"no label column {name!r}{_did_you_mean(name, self.names)}",
                hint=f"the dataset declares: {self.describe()}",
            ) from None

    def get(self, name: str) -> LabelColumn | None:
        return self._by_name.get(name)

    @property
    def arrow(self) -> pa.Schema:
        """The labels table's Arrow schema: ``sample_id`` and ``split`` strings, then each column's type."""
        return pa.schema(
            [
                pa.field("sample_id", pa.string(), nullable=False),
                pa.field("split", pa.string(), nullable=False),
                *(pa.field(c.name, c.arrow_type) for c in self.columns),
            ]
        )

    def describe(self) -> str:
        """``age (regression), gender (binary: female, male), ...``: for error messages."""
        return ", ".join(f"{c.name} ({c.kind}{': ' + ', '.join(c.classes) if c.classes else ''})" for c in self.columns)

    def to_list(self) -> list[dict[str, Any]]:
        return [c.to_dict() for c in self.columns]

    @classmethod
    def from_list(cls, raw: Any) -> LabelSchema:
        """From a manifest's (or a user's) list of column mappings; one SpecError lists every bad column."""
        if isinstance(raw, LabelSchema):
            return raw
        if isinstance(raw, Mapping):  # {name: {kind: ...}} is the natural YAML spelling too
            raw = [{"name": k, **v} if isinstance(v, Mapping) else v for k, v in raw.items()]
        if isinstance(raw, str) or not isinstance(raw, Sequence):
            raise SpecError(f"a label schema is a list of label columns, got {type(raw).__name__}", hint=_HINT)
        columns, problems = [], []
        for i, item in enumerate(raw):
            try:
                columns.append(LabelColumn.from_dict(item))
            except SpecError as exc:
                where = f"columns[{i}]" + (f" ({item['name']})" if isinstance(item, Mapping) and "name" in item else "")
                problems += [f"{where}: {p}" for p in exc.problems] or [f"{where}: {exc.message}"]
        if problems:
            raise SpecError("invalid label schema:", problems, hint=_HINT)
        return cls(tuple(columns))

    def extended(self, *columns: LabelColumn) -> LabelSchema:
        """This schema plus ``columns`` (an importer adding what its format has to the face columns)."""
        return LabelSchema((*self.columns, *columns))


EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
GENDERS = ("female", "male")
AGE_RANGE = (0.0, 120.0)
FACE_SCHEMA = LabelSchema(
    (
        LabelColumn("age", "regression", range=AGE_RANGE),
        LabelColumn("gender", "binary", classes=GENDERS),
        LabelColumn("emotion", "categorical", classes=EMOTIONS),
    )
)
"""The three face labels: the default schema, and what a manifest without a declared schema has."""
