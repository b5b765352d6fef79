"""The validation report as a PNG: what failed, drawn where it is.

Every slice the gate judged is coloured by its verdict, read from the report's own issues (never
recomputed here, so a plot cannot disagree with the report): red for an error, orange for a warning,
blue for a slice that passed. Age values outside the label schema's range get their own red bars
beside the histogram, with how many there are and the most extreme one, and the report's first
errors are written under the panels. A report read back from JSON plots the same.
Rendered with matplotlib's Agg canvas (no pyplot, no GUI): the PNG opens anywhere, offline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flotilla.data import layout
from flotilla.data.schema import FACE_SCHEMA

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from flotilla.data.report import ValidationReport

COLOURS = {"error": "tab:red", "warning": "tab:orange", None: "tab:blue"}
_BANDS = (*(f"{10 * i}-{10 * i + 9}" for i in range(8)), "80+")  # as validate.AGE_BANDS
_FIRST_ERRORS = 6


def verdicts(report: ValidationReport) -> dict[str, dict[str, str]]:
    """``{group: {slice: severity}}`` of the report's representativeness issues (an error outranks a warning)."""
    out: dict[str, dict[str, str]] = {}
    for i in report.issues:
        family, _, group = i.check.partition(".")
        if family == "representativeness" and i.key and i.severity in ("error", "warning"):
            slices = out.setdefault(group, {})
            if slices.get(i.key) != "error":
                slices[i.key] = i.severity
    return out


def _ordered(group: str, counts: Mapping[str, int]) -> list[str]:
    """A report read back from JSON has its keys sorted: the schema's class order again where there is one."""
    face = FACE_SCHEMA[group].classes if group in FACE_SCHEMA.names else ()
    return [k for k in face if k in counts] + [k for k in counts if k not in face]


def _age(ax: Axes, report: ValidationReport, bands: Mapping[str, str]) -> None:
    age = report.histograms.get("age")
    ax.set_title("age (red: out of range or an under-represented band)", fontsize=9)
    if not age:
        ax.text(0.5, 0.5, "no age labels", ha="center", va="center", transform=ax.transAxes)
        return
    edges, counts = age["edges"], age["counts"]
    colours = [COLOURS[bands.get(_BANDS[min(max(int(e // 10), 0), len(_BANDS) - 1)])] for e in edges[:-1]]
    ax.bar(edges[:-1], counts, width=5, align="edge", color=colours, edgecolor="white")
    lo, hi = age.get("range", [edges[0], edges[-1]])
    ax.axvline(lo, color="grey", linestyle=":", linewidth=1)
    ax.axvline(hi, color="grey", linestyle=":", linewidth=1)
    top = max([*counts, age.get("below", 0), age.get("above", 0), 1])
    for side, x, n, extreme in (
        ("below", edges[0] - 10, age.get("below", 0), age.get("below_min")),
        ("above", edges[-1] + 5, age.get("above", 0), age.get("above_max")),
    ):
        if n:
            ax.bar([x], [n], width=5, align="edge", color=COLOURS["error"], hatch="//", edgecolor="black")
            word = "min" if side == "below" else "max"
            ax.annotate(
                f"{n} {side} {lo if side == 'below' else hi:g}\n({word} {extreme})",
                (x + 2.5, n),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                fontsize=8,
                color=COLOURS["error"],
            )
    if age.get("not_finite"):
        ax.text(0.02, 0.95, f"{age['not_finite']} not finite (NaN/inf)", transform=ax.transAxes, color="tab:red", fontsize=8)
    ax.set_ylim(0, top * 1.25)
    ax.set_xlabel(f"age (years; valid {lo:g}..{hi:g})", fontsize=8)


def _group(ax: Axes, report: ValidationReport, group: str, failed: Mapping[str, str]) -> None:
    counts = report.group_counts[group]
    names = _ordered(group, counts)
    ax.bar(names, [counts[k] for k in names], color=[COLOURS[failed.get(k)] for k in names])
    minimum = report.thresholds.get("min_group_count")
    if minimum:
        ax.axhline(minimum, color="grey", linestyle="--", linewidth=1)
    n_err, n_warn = sum(v == "error" for v in failed.values()), sum(v == "warning" for v in failed.values())
    marks = [f"{n_err} failing"] * bool(n_err) + [f"{n_warn} warned"] * bool(n_warn)
    ax.set_title(group + (f" ({', '.join(marks)})" if marks else ""), fontsize=9)
    many = len(names) > 4
    ax.tick_params(axis="x", labelrotation=60 if many else 0, labelsize=6 if len(names) > 9 else 8)


def _split(ax: Axes, report: ValidationReport) -> None:
    splits = report.counts.get("splits", {})
    keys = [s for s in layout.SPLITS if s in splits] + sorted(set(splits) - set(layout.SPLITS))
    ax.bar(keys, [splits[k] for k in keys], color="tab:gray")
    ax.set_title("split", fontsize=9)


def _first_errors(report: ValidationReport) -> str:
    errors = report.errors
    lines = [f"{i.check}: {i.count} affected - {i.reason}"[:150] for i in errors[:_FIRST_ERRORS]]
    if len(errors) > _FIRST_ERRORS:
        lines.append(f"... and {len(errors) - _FIRST_ERRORS} more error(s): see the JSON report")
    return "\n".join(lines)


def plot(report: ValidationReport, path: Path) -> Path:
    """Save the PNG: the age histogram, one bar chart per judged group, the splits; returns ``path``."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend (renders with Agg)

    failed = verdicts(report)
    groups = [g for g in report.group_counts if g != "age_band"]  # age bands are coloured on the histogram
    panels: list[Any] = ["age", *groups, "split"]
    rows = math.ceil(len(panels) / 2)
    notes = _first_errors(report)
    fig = Figure(figsize=(10, 3 * rows + 0.2 * notes.count("\n") + 0.6), dpi=80, layout="constrained")
    axes = fig.subplots(rows, 2, squeeze=False).ravel()
    colour = "tab:green" if report.passed else "tab:red"
    fig.suptitle(f"{report.summary()}\nred: error, orange: warning, blue: passed", fontsize=10, color=colour)
    for ax, panel in zip(axes, panels, strict=False):
        if panel == "age":
            _age(ax, report, failed.get("age_band", {}))
        elif panel == "split":
            _split(ax, report)
        else:
            _group(ax, report, panel, failed.get(panel, {}))
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    if notes:
        fig.supxlabel(notes, fontsize=8, color="tab:red", ha="center")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
