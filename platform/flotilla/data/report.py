"""The validation gate's data model and its presentation.

:class:`Issue`, :class:`ValidationReport` (JSON, a rich table, a PNG of the
label distributions, ``raise_if_failed``), the :class:`Thresholds` a report is
judged against and :data:`CHECKS`, the catalogue of per-sample checks.
:func:`flotilla.data.validate.validate` runs the checks and builds the report;
nothing here inspects data, so a report read back with
``ValidationReport.from_json`` renders and plots like a fresh one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from flotilla.data import layout
from flotilla.data.config import Config, Number, Whole
from flotilla.data.schema import FACE_SCHEMA
from flotilla.errors import DataValidationError

SEVERITIES = ("error", "warning", "info")

# check -> (severity, reason) for the per-sample checks; table- and group-level
# checks (schema.missing_column, images.size, missing.*, representativeness.*) word their own reasons.
CHECKS: dict[str, tuple[str, str]] = {
    "schema.empty_sample_id": ("error", "empty or null sample_id"),
    "schema.duplicate_sample_id": ("error", "sample_id occurs more than once in a table"),
    "schema.split": ("error", f"split must be one of {', '.join(layout.SPLITS)}"),
    "schema.format": ("error", "image format must be one of png, jpeg"),
    "schema.image_without_label": ("error", "image has no row in the labels table"),
    "schema.label_without_image": ("error", "label row has no image in any shard"),
    # labels.<column> of any other declared column words its reason from the schema (LabelColumn.rule)
    **{f"labels.{c.name}": ("error", c.rule()) for c in FACE_SCHEMA},
    "labels.no_labels": ("error", "no labels: every label column is null"),
    "images.decode": ("error", "image bytes cannot be decoded (corrupt)"),
    "images.truncated": ("error", "image file is truncated"),
    "images.sha256": ("error", "sha256 column does not match the image bytes (corrupted in transit?)"),
    "images.empty": ("error", "image is empty (no bytes, or zero width/height)"),
    "images.format_mismatch": ("error", "format column does not match the encoded bytes"),
    "duplicates.conflicting_labels": ("error", "identical images with conflicting labels"),
    "duplicates.same_labels": ("warning", "identical images with the same labels: keep one copy"),
    "duplicates.cross_split": ("warning", "identical images in different splits (evaluation leaks into training)"),
}

_HINTS = {
    "schema": "write the tables with flotilla.data.layout (labels_table/encode_labels, encode_shard) so that"
    " columns, types, splits and formats match the layout and every sample has one image and one label row",
    "labels": "fix or null out the out-of-range labels",
    "images": "re-export the broken images from the source (or drop those samples)",
    "duplicates": "keep one sample per identical image and resolve its conflicting labels",
    "missing": "fill in the missing labels, or raise Thresholds.max_missing if they are expected",
    "representativeness": "add samples for the under-represented groups, or, if the imbalance is intended,"
    " lower Thresholds.min_group_count/min_group_fraction, declare the population it should match"
    " (Thresholds.target) or use Thresholds(representativeness='warning')",
}


@dataclass
class Issue:
    check: str  # "<family>.<problem>", e.g. "labels.age"
    severity: str  # "error" | "warning" | "info"
    reason: str
    count: int = 0  # affected samples (shards for image-shard schema problems, rows for table-wide ones)
    sample_ids: list[str] = field(default_factory=list)  # the smallest affected ids, capped
    details: dict[str, str] = field(default_factory=dict)  # shown id -> what is wrong with it

    def examples(self, n: int = 3) -> str:
        shown = [f"{s} ({self.details[s]})" if s in self.details else s for s in self.sample_ids[:n]]
        more = self.count - len(shown) if self.sample_ids else 0
        return ", ".join(shown) + (f" and {more} more" if more > 0 and shown else "")


@dataclass
class ValidationReport:
    issues: list[Issue]
    counts: dict[str, Any]  # samples, images, shards, image_bytes, splits, labels (non-null per column)
    group_counts: dict[str, dict[str, int]]  # age_band, gender, emotion, gender_x_age_band (present labels)
    missing: dict[str, dict[str, Any]]  # column -> null, fraction, present
    image_stats: dict[str, Any]  # sizes "WxH", modes, formats (as decoded) -> counts
    histograms: dict[str, Any]  # age: 5-year bins (edges, counts)
    thresholds: dict[str, Any]
    name: str = ""

    @property
    def passed(self) -> bool:
        """True when no issue has error severity (warnings do not fail the gate)."""
        return not self.errors

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    def by_check(self, check: str) -> list[Issue]:
        """Issues of one check (``"labels.age"``) or of a family (``"labels"``)."""
        return [i for i in self.issues if i.check == check or i.check.startswith(check + ".")]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        d["summary"] = {s: sum(i.severity == s for i in self.issues) for s in SEVERITIES}
        return d

    def to_json(self, indent: int | None = 2) -> str:
        """Stable JSON: sorted keys, issues ordered by severity, check, reason; ids sorted."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ValidationReport:
        keep = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        keep["issues"] = [Issue(**i) for i in d.get("issues", [])]
        return cls(**keep)

    @classmethod
    def from_json(cls, text: str | bytes) -> ValidationReport:
        return cls.from_dict(json.loads(text))

    def summary(self) -> str:
        what = f"dataset {self.name!r}" if self.name else "dataset"
        return (
            f"{what}: {'PASSED' if self.passed else 'FAILED'} - {self.counts.get('samples', 0)} samples,"
            f" {self.counts.get('images', 0)} images, {len(self.errors)} error(s),"
            f" {len(self.warnings)} warning(s)"
        )

    def to_rich_table(self, examples: int = 3):
        """A ``rich.table.Table``: check, severity, count, example ids, reason."""
        return rich_table(self, examples)

    def render(self, console=None) -> None:
        """Print the issue table and the label/group counts to a rich console (stdout by default)."""
        render(self, console)

    def plot(self, path: str | Path) -> Path:
        """Save a small PNG of the label distributions (age, gender, emotion, split); returns the path."""
        return plot(self, Path(path))

    def raise_if_failed(self, hint: str | None = None) -> None:
        """Raise :class:`DataValidationError` naming failing checks, counts and example ids."""
        if not self.passed:
            raise DataValidationError(failure_message(self), hint=hint or failure_hint(self), report=self)


class Thresholds(Config):
    """Knobs of the gate. ``max_missing``: one fraction for every label column the
    dataset has (absent labels are exempt), or ``{column: fraction}`` (columns the dataset declares); None = no limit.

    The same class is an ingest job's ``thresholds:`` (:mod:`flotilla.jobs.specs`)."""

    min_group_count: Whole = Field(default=20, ge=0)
    min_group_fraction: Number = Field(default=0.1, ge=0, le=1)  # of the uniform share total / n_groups
    representativeness: Literal["error", "warning"] = "error"
    max_missing: float | Mapping[str, float] | None = None
    max_examples: Whole = Field(default=10, ge=1)  # sample ids kept per issue
    # the population the data should represent: {group: {slice: share}}, e.g. {"gender": {"female": 0.5, "male": 0.5}};
    # groups as in ValidationReport.group_counts (a label column, age_band, gender_x_age_band). A group with a target
    # is judged against it (|actual - target| above max_target_gap) instead of against a uniform share
    target: Mapping[str, Mapping[str, Number]] | None = None
    max_target_gap: Number = Field(default=0.05, ge=0, le=1)

    @field_validator("max_missing", mode="before")
    @classmethod
    def _fractions_of_label_columns(cls, mm: Any) -> Any:
        # checked whole, before pydantic tries each member of the union: one problem in our words, not one per member
        # the columns are the dataset's (its label schema): validate() refuses a key the dataset does not declare
        if isinstance(mm, Mapping) and not all(isinstance(k, str) and k.isidentifier() for k in mm):
            raise ValueError(f"keys must be label column names, got {sorted(map(str, mm))}")
        fracs = mm.values() if isinstance(mm, Mapping) else [] if mm is None else [mm]
        if not all(isinstance(f, (int, float)) and not isinstance(f, bool) and 0 <= f <= 1 for f in fracs):
            raise ValueError(f"must be a fraction in [0, 1] or {{column: fraction}}, got {mm!r}")
        return mm

    @field_validator("target", mode="before")
    @classmethod
    def _shares_that_sum_to_one(cls, target: Any) -> Any:
        if target is None:
            return target
        if not isinstance(target, Mapping) or not all(isinstance(v, Mapping) and v for v in target.values()):
            raise ValueError(f"must be {{group: {{slice: share}}}}, e.g. {{gender: {{female: 0.5, male: 0.5}}}}, got {target!r}")
        for group, shares in target.items():
            values = list(shares.values())
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x <= 1 for x in values):
                raise ValueError(f"{group}: shares must be fractions in [0, 1], got {dict(shares)!r}")
            if abs(sum(values) - 1) > 0.01:
                raise ValueError(f"{group}: shares must sum to 1, they sum to {sum(values):g}")
        return target

    def missing_limit(self, column: str, present: bool) -> float | None:
        if isinstance(self.max_missing, Mapping):
            return self.max_missing.get(column)
        return self.max_missing if present else None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


class Affected:
    """Collects the samples one problem affects: exact count, the ``cap`` smallest ids (with details).

    Keeping the smallest ids (not the first seen) makes reports independent of shard order.
    """

    def __init__(self, cap: int) -> None:
        self.cap, self.count = cap, 0
        self.items: list[tuple[str, str]] = []

    def add(self, sid: str, detail: str = "") -> None:
        self.count += 1
        self.items.append((sid, detail))
        if len(self.items) > 4 * self.cap + 64:
            self.items.sort()
            del self.items[self.cap :]

    def merge(self, other: Affected) -> Affected:
        self.count += other.count
        self.items += other.items
        return self

    def issue(self, check: str, severity: str, reason: str) -> Issue:
        shown = sorted(self.items)[: self.cap]
        return Issue(check, severity, reason, self.count, [s for s, _ in shown], {s: d for s, d in shown if d})


def failure_message(report: ValidationReport, max_issues: int = 20, examples: int = 5) -> str:
    errors = report.errors
    checks: dict[str, int] = {}
    for i in errors:
        checks[i.check] = checks.get(i.check, 0) + i.count
    what = f"dataset {report.name!r}" if report.name else "dataset"
    lines = [f"{what} failed validation: {len(errors)} error(s) in " + ", ".join(f"{c} ({n})" for c, n in checks.items())]
    for i in errors[:max_issues]:
        ex = i.examples(examples)
        lines.append(f"  - {i.check}: {i.count} affected: {i.reason}" + (f"; e.g. {ex}" if ex else ""))
    if len(errors) > max_issues:
        lines.append(f"  ... and {len(errors) - max_issues} more error(s) (see the full report)")
    return "\n".join(lines)


def failure_hint(report: ValidationReport, next_step: str | None = None) -> str:
    """The fix for each failing check family, then ``next_step`` (where to fix it and how to re-run)."""
    families = dict.fromkeys(i.check.split(".")[0] for i in report.errors)
    fixes = "; ".join(_HINTS[f] for f in families if f in _HINTS)
    return f"{fixes}. " + (
        next_step or "Fix the data on the ingest branch and re-run `flotilla data validate` (nothing was merged)"
    )


_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def rich_table(report: ValidationReport, examples: int = 3):
    from rich.table import Table

    style = "green" if report.passed else "red"
    table = Table(title=f"[{style}]{report.summary()}[/]", show_lines=False, expand=False)
    table.add_column("check", no_wrap=True)
    table.add_column("severity")
    table.add_column("count", justify="right")
    table.add_column("example ids")
    table.add_column("reason")
    for i in report.issues:
        table.add_row(i.check, f"[{_STYLE.get(i.severity, '')}]{i.severity}[/]", str(i.count), i.examples(examples), i.reason)
    if not report.issues:
        table.add_row("all checks", "[green]ok[/]", "0", "", "no issues found")
    return table


def render(report: ValidationReport, console=None) -> None:
    from rich.console import Console

    console = console or Console()
    console.print(rich_table(report))
    c = report.counts
    console.print(
        "splits: "
        + ", ".join(f"{k}={v}" for k, v in c.get("splits", {}).items())
        + " | labels non-null: "
        + ", ".join(f"{k}={v}" for k, v in c.get("labels", {}).items())
        + " | missing: "
        + ", ".join(f"{k}={m['fraction']:.1%}" for k, m in report.missing.items())
    )
    for group, counts in report.group_counts.items():
        console.print(f"{group}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    sizes = report.image_stats.get("sizes", {})
    if sizes:
        console.print("image sizes: " + ", ".join(f"{k}={v}" for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])))


def _low(report: ValidationReport, counts: list[int]) -> list[bool]:
    t, total = report.thresholds, sum(counts)
    share = total / len(counts) if counts else 0
    return [c < t.get("min_group_count", 0) or c < t.get("min_group_fraction", 0) * share for c in counts]


def target_shares(group_counts: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, float]]:
    """Each group's slice shares in a report's ``group_counts``: a reference dataset as the target population,
    e.g. ``Thresholds(target=target_shares(validate_ref(repo, reference_commit, name).group_counts))``."""
    out = {}
    for group, counts in group_counts.items():
        total = sum(counts.values())
        if total:
            out[group] = {k: round(c / total, 6) for k, c in counts.items()}
    return out


def plot(report: ValidationReport, path: Path) -> Path:
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend (renders with Agg)

    fig = Figure(figsize=(9, 6), dpi=80, layout="constrained")
    (ax_age, ax_gender), (ax_emotion, ax_split) = fig.subplots(2, 2)
    fig.suptitle(report.summary(), fontsize=10, color="tab:green" if report.passed else "tab:red")
    age = report.histograms.get("age")
    if age:
        edges = age["edges"]
        ax_age.bar(
            edges[:-1],
            age["counts"],
            width=[b - a for a, b in pairwise(edges)],
            align="edge",
            color="tab:blue",
            edgecolor="white",
        )
        ax_age.set_xlabel("age (years)")
    else:
        ax_age.text(0.5, 0.5, "no age labels", ha="center", va="center", transform=ax_age.transAxes)
    ax_age.set_title("age", fontsize=10)
    for ax, group in ((ax_gender, "gender"), (ax_emotion, "emotion")):
        counts = report.group_counts.get(group)
        ax.set_title(f"{group} (red: under-represented)", fontsize=10)
        if not counts:
            ax.text(0.5, 0.5, f"no {group} labels", ha="center", va="center", transform=ax.transAxes)
            continue
        face = FACE_SCHEMA[group].classes  # a report read back from JSON has its keys sorted: the face order again
        names = [k for k in face if k in counts] + [k for k in counts if k not in face]
        values = [counts[k] for k in names]
        ax.bar(names, values, color=["tab:red" if low else "tab:blue" for low in _low(report, values)])
        if report.thresholds.get("min_group_count"):
            ax.axhline(report.thresholds["min_group_count"], color="grey", linestyle="--", linewidth=1)
        ax.tick_params(axis="x", labelrotation=30 if group == "emotion" else 0, labelsize=8)
    splits = report.counts.get("splits", {})
    keys = [s for s in layout.SPLITS if s in splits] + sorted(set(splits) - set(layout.SPLITS))
    ax_split.bar(keys, [splits[k] for k in keys], color="tab:gray")
    ax_split.set_title("split", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
