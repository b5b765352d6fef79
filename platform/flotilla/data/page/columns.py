"""The label columns a report groups by, and how a value falls into a group (a class, an age band).

:func:`_label_columns` is the one place the page learns which columns a dataset has: the label
schema its manifest declares (:mod:`flotilla.data.schema`). Everything else on the page iterates what it returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from flotilla.data.layout import Manifest
from flotilla.data.validate import AGE_BANDS
from flotilla.errors import SpecError

Kind = Literal["regression", "binary", "categorical"]
NULL = "(missing)"
_BINS = 8  # bands of a regression column other than age


@dataclass(frozen=True)
class ReportColumn:
    """A label column as the page shows it: categorical columns by class, regression columns by band."""

    name: str
    kind: Kind
    classes: tuple[str, ...] = ()
    range: tuple[float, float] | None = None

    @property
    def slice_name(self) -> str:
        return f"{self.name} band" if self.kind == "regression" else self.name

    def groups(self) -> tuple[str, ...]:
        """Every group in display order (values outside them show as their own group)."""
        if self.kind != "regression":
            return self.classes
        if self.name == "age":
            return AGE_BANDS
        lo, hi = self.range or (0.0, 1.0)
        step = (hi - lo) / _BINS
        return tuple(f"{lo + i * step:g}-{lo + (i + 1) * step:g}" for i in range(_BINS))

    def group(self, value: float | int | None) -> str:
        """The group ``value`` falls in; :data:`NULL` for a missing label, ``invalid (v)`` for one the gate would refuse."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return NULL
        if self.kind != "regression":
            v = int(value)
            return self.classes[v] if 0 <= v < len(self.classes) and v == value else f"invalid ({value:g})"
        lo, hi = self.range or (0.0, 1.0)
        if not lo <= value <= hi:
            return f"invalid ({value:g})"
        if self.name == "age":
            return AGE_BANDS[min(int(value // 10), len(AGE_BANDS) - 1)]
        return self.groups()[min(int((value - lo) / ((hi - lo) / _BINS)), _BINS - 1)]

    def label(self, value: float | int | None) -> str:
        """A value as a person reads it: the class name, or the number."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return NULL
        if self.kind == "regression":
            return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
        return self.group(value)


def _label_columns(manifest: Manifest) -> tuple[ReportColumn, ...]:
    """The dataset's label columns, with kinds and classes: those its manifest declares (the face three for a
    manifest that predates label schemas)."""
    return tuple(ReportColumn(c.name, c.kind, c.classes, c.range) for c in manifest.label_schema)


def columns_of(manifest: Manifest) -> tuple[ReportColumn, ...]:
    """The label columns of the dataset ``manifest`` describes, as the report and the grid group them."""
    return _label_columns(manifest)


def column_named(columns: tuple[ReportColumn, ...], name: str) -> ReportColumn:
    """``name`` may be a column (``emotion``) or its slice (``age band``, ``age_band``)."""
    wanted = name.replace("_", " ").removesuffix(" band")
    for c in columns:
        if c.name == wanted:
            return c
    raise SpecError(
        f"no label column {name!r} to group by",
        hint="group by one of: " + ", ".join(c.slice_name if c.kind == "regression" else c.name for c in columns),
    )
