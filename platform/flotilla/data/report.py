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
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from flotilla.data import gateplot, layout
from flotilla.data.config import Config, Number, Whole
from flotilla.data.schema import FACE_SCHEMA
from flotilla.errors import DataValidationError, brief

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
    "missing": "fill in the missing labels, or, if they are expected, allow them: --max-missing F on the command"
    " line, 'max_missing: F' in the ingest job's thresholds: block",
    "representativeness": "add samples for the under-represented groups, or, if the imbalance is intended,"
    " pass --allow-underrepresented (report them as warnings) or --min-per-group N to 'flotilla data"
    " import/generate/validate', or set 'representativeness: warning', 'min_group_count: N' or a 'target:'"
    " population in the ingest job's thresholds: block (or a --thresholds FILE.yaml)",
}


@dataclass
class Issue:
    check: str  # "<family>.<problem>", e.g. "labels.age"
    severity: str  # "error" | "warning" | "info"
    reason: str
    count: int = 0  # affected samples (shards for image-shard schema problems, rows for table-wide ones)
    sample_ids: list[str] = field(default_factory=list)  # the smallest affected ids, capped
    details: dict[str, str] = field(default_factory=dict)  # shown id -> what is wrong with it
    key: str = ""  # the group's slice a representativeness issue is about ("female", "male/80+"): what the plot marks

    def examples(self, n: int = 3) -> str:
        shown = [f"{s} ({self.details[s]})" if s in self.details else s for s in self.sample_ids[:n]]
        more = self.count - len(shown) if self.sample_ids else 0
        return ", ".join(shown) + (f" and {more} more" if more > 0 and shown else "")


# the order of a report: what is wrong with the data itself first, representativeness (a judgement on the
# mix of otherwise good samples) after it, so real problems are never buried under group counts
FAMILIES = ("schema", "images", "labels", "duplicates", "missing", "representativeness")


def issue_order(issue: Issue) -> tuple[int, int, int, str, str]:
    """Sort key of a report's issues: severity, then real problems before representativeness, then family."""
    family = issue.check.split(".")[0]
    rank = FAMILIES.index(family) if family in FAMILIES else len(FAMILIES) - 1
    return (
        SEVERITIES.index(issue.severity) if issue.severity in SEVERITIES else len(SEVERITIES),
        family == "representativeness",
        rank,
        issue.check,
        issue.reason,
    )


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
        """Save a PNG of the label distributions with what failed drawn red (:mod:`flotilla.data.gateplot`)."""
        return gateplot.plot(self, Path(path))

    def raise_if_failed(self, hint: str | None = None) -> None:
        """Raise :class:`DataValidationError` naming failing checks, counts and example ids."""
        if not self.passed:
            raise DataValidationError(failure_message(self), hint=hint or failure_hint(self), report=self)


class Thresholds(Config):
    """Knobs of the gate. ``max_missing``: one fraction for every label column the
    dataset has (absent labels are exempt), or ``{column: fraction}`` (columns the dataset declares); None = no limit.

    ``representativeness``: the severity of an under-represented group. ``"auto"`` (the default) judges
    a group as an error only once it has ``min_group_count`` samples for each of its slices (2 x 20 = 40
    labelled samples for gender, 9 x 20 = 180 for the age bands, 18 x 20 = 360 for gender x age band) and
    as a warning below that: a smaller dataset leaves some slice short *whatever* its mix, so an error
    would only say that the dataset is small, never that it is skewed. ``"error"`` / ``"warning"``: always.

    The same class is an ingest job's ``thresholds:`` (:mod:`flotilla.jobs.specs`), a
    ``--thresholds FILE.yaml`` of ``flotilla data import/generate/validate``, and what their
    ``--min-per-group``, ``--allow-underrepresented`` and ``--max-missing`` set."""

    min_group_count: Whole = Field(default=20, ge=0)
    min_group_fraction: Number = Field(default=0.1, ge=0, le=1)  # of the uniform share total / n_groups
    representativeness: Literal["auto", "error", "warning"] = "auto"
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
            raise ValueError(f"keys must be label column names, got {brief(sorted(map(str, mm)))}")
        fracs = mm.values() if isinstance(mm, Mapping) else [] if mm is None else [mm]
        if not all(isinstance(f, (int, float)) and not isinstance(f, bool) and 0 <= f <= 1 for f in fracs):
            raise ValueError(f"must be a fraction in [0, 1] or {{column: fraction}}, got {brief(mm)}")
        return mm

    @field_validator("target", mode="before")
    @classmethod
    def _shares_that_sum_to_one(cls, target: Any) -> Any:
        if target is None:
            return target
        if not isinstance(target, Mapping) or not all(isinstance(v, Mapping) and v for v in target.values()):
            raise ValueError(
                f"must be {{group: {{slice: share}}}}, e.g. {{gender: {{female: 0.5, male: 0.5}}}}, got {brief(target)}"
            )
        for group, shares in target.items():
            values = list(shares.values())
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x <= 1 for x in values):
                raise ValueError(f"{str(group)[:80]}: shares must be fractions in [0, 1], got {brief(dict(shares))}")
            if abs(sum(values) - 1) > 0.01:
                raise ValueError(f"{str(group)[:80]}: shares must sum to 1, they sum to {sum(values):g}")
        return target

    def representativeness_severity(self, samples: int, slices: int) -> Literal["error", "warning"]:
        """How a short slice of a group with ``samples`` labelled samples over ``slices`` wanted slices counts."""
        if self.representativeness != "auto":
            return self.representativeness
        return "error" if samples >= slices * self.min_group_count else "warning"

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
    if warnings := report.warnings:
        families = ", ".join(dict.fromkeys(i.check for i in warnings))
        lines.append(f"  ({len(warnings)} warning(s), which do not fail the gate: {families})")
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

    console = console or Console(emoji=False)
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


def target_shares(group_counts: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, float]]:
    """Each group's slice shares in a report's ``group_counts``: a reference dataset as the target population,
    e.g. ``Thresholds(target=target_shares(validate_ref(repo, reference_commit, name).group_counts))``."""
    out = {}
    for group, counts in group_counts.items():
        total = sum(counts.values())
        if total:
            out[group] = {k: round(c / total, 6) for k, c in counts.items()}
    return out
