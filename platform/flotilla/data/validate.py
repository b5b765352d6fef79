"""The validation gate every dataset passes before it reaches ``main``.

``validate(labels, image_shards)`` streams the image shards once (one shard in
memory at a time, each image decoded and dropped) and returns a
:class:`ValidationReport`. Nothing raises on bad *data*: a wrong schema, a
broken image or an odd label is an :class:`Issue` in the report, so one run
lists every problem. ``report.raise_if_failed()`` turns error-severity issues
into a :class:`~flotilla.errors.DataValidationError`.

Checks (``Issue.check`` is ``<family>.<problem>``):

* ``schema.*``: columns and types of both tables, empty/duplicate sample ids,
  splits, image formats, images without a label row and label rows without an image;
* ``labels.<column>``: each label column the dataset declares (:mod:`flotilla.data.schema`; the face
  schema by default) checked by its kind: a regression value finite and within its range, a binary or
  categorical code an integer 0..n-1 (age in ``AGE_RANGE``, gender in {0, 1}, emotion in 0..6), a null
  in a non-nullable column; no row with all labels null (a single null label is fine: it means "unknown") — unless the
  dataset says it is unlabelled (``labelled=False``, the manifest's flag: incoming data for
  inference), which also lifts the ``missing.*`` limits; labels it does have are still checked;
* ``images.*``: undecodable, truncated or CRC-broken bytes, ``sha256`` column not
  matching the bytes, empty images, format column not matching the bytes; sizes
  and modes that differ from the majority are warnings;
* ``duplicates.*``: identical bytes with conflicting labels (error), with the same
  labels or across splits (warnings);
* ``missing.*``: null fraction of a label column above ``Thresholds.max_missing``;
* ``representativeness.*``: the classes of every binary and categorical column, age bands (a
  regression column named ``age``) and gender x age-band cells below ``min_group_count`` or
  ``min_group_fraction`` of a uniform share, for the labels the dataset has at all; a group given a
  target population (``Thresholds.target``) is judged by each slice's gap to its target share instead.
  By default a group too small to have ``min_group_count`` samples in every slice reports them as
  warnings (:meth:`Thresholds.representativeness_severity`).

Issues are ordered by :func:`~flotilla.data.report.issue_order`: errors first, and within a severity
the problems of the data itself (schema, images, labels, duplicates, missing) before representativeness.

One module over the ~400-line guide on purpose: the checks share one streaming pass over the
shards (the ``_Gate`` accumulators fill as each image is decoded once), so splitting them by family
would either decode every image once per module or thread the same accumulators through all of them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flotilla.data import layout
from flotilla.data.imagecheck import ImageFacts, ShardFacts, compatible, inspect_shard, usable
from flotilla.data.report import CHECKS, SEVERITIES, Affected, Issue, Thresholds, ValidationReport, issue_order
from flotilla.data.schema import FACE_SCHEMA, LabelSchema
from flotilla.errors import SpecError

__all__ = ["AGE_BANDS", "CHECKS", "FORMATS", "SEVERITIES", "Issue", "Thresholds", "ValidationReport", "validate"]

FORMATS = ("png", "jpeg")
AGE_BANDS = (*(f"{10 * i}-{10 * i + 9}" for i in range(8)), "80+")


def _fmt(v: float) -> str:
    return str(v) if not np.isfinite(v) else str(int(v)) if v == int(v) else f"{v:g}"


class _Gate:
    def __init__(self, t: Thresholds, labelled: bool = True, schema: LabelSchema = FACE_SCHEMA) -> None:
        self.t = t
        self.labelled = labelled
        self.schema = schema
        self.reasons = {f"labels.{c.name}": ("error", c.rule()) for c in schema}
        self.ids: dict[str, Affected] = defaultdict(lambda: Affected(t.max_examples))
        self.issues: list[Issue] = []
        self.label_row: dict[str, int] = {}
        self.values: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # col -> (v, null, valid)
        self.splits: list[Any] = []
        self.image_ids: set[str] = set()
        self.first_of_hash: dict[bytes, str] = {}
        self.dup_groups: dict[bytes, list[str]] = {}
        self.shard_problems: dict[tuple[str, str], list[int]] = defaultdict(list)
        self.sizes: dict[str, Affected] = defaultdict(lambda: Affected(t.max_examples))
        self.modes: dict[str, Affected] = defaultdict(lambda: Affected(t.max_examples))
        self.formats: Counter[str] = Counter()
        self.n_images = self.n_bytes = self.shards = 0
        self.skipped_shard = False
        self.names: list[str] | None = None
        self.n_labels = 0

    def issue(self, check: str, severity: str, reason: str, count: int = 0) -> None:
        self.issues.append(Issue(check, severity, reason, count))

    # -- labels ------------------------------------------------------------
    def labels(self, table: pa.Table) -> None:
        n, names = table.num_rows, table.column_names
        cols: dict[str, pa.ChunkedArray] = {}
        for f in self.schema.arrow:
            if f.name not in names:
                self.issue("schema.missing_column", "error", f"labels table has no {f.name!r} column", n)
                continue
            col = table.column(names.index(f.name))
            if not compatible(col.type, f.type):
                self.issue(
                    "schema.type",
                    "error",
                    f"labels column {f.name!r} is {col.type}, expected {f.type}"
                    " (write labels with layout.labels_table / encode_labels)",
                    n,
                )
            if (cast := usable(col, f.type)) is not None:
                cols[f.name] = cast
        for c, k in sorted(Counter(names).items()):
            if c not in self.schema.arrow.names:
                self.issue("schema.unknown_column", "error", f"labels table has an unknown column {c!r}", n)
            elif k > 1:
                self.issue("schema.duplicate_column", "error", f"labels table has {k} columns named {c!r}", n)
        sids = cols["sample_id"].to_pylist() if "sample_id" in cols else [None] * n
        for i, sid in enumerate(sids if "sample_id" in cols else []):
            if sid is None or not sid.strip():
                self.ids["schema.empty_sample_id"].add(f"<labels row {i}>", f"sample_id={sid!r}")
            elif sid in self.label_row:
                self.ids["schema.duplicate_sample_id"].add(sid, "more than one label row")
            else:
                self.label_row[sid] = i
        name = [s if s and s.strip() else f"<labels row {i}>" for i, s in enumerate(sids)]
        if "split" in cols:
            self.splits = cols["split"].to_pylist()
            for i, s in enumerate(self.splits):
                if s not in layout.SPLITS:
                    self.ids["schema.split"].add(name[i], f"split={s!r}")
        for column in self.schema:
            col = column.name
            if col not in cols:
                continue
            null = pc.is_null(cols[col]).to_numpy(zero_copy_only=False).astype(bool)
            v = pc.fill_null(cols[col], 0.0).to_numpy(zero_copy_only=False).astype(np.float64)
            ok = column.valid(v)
            for row in np.flatnonzero(~null & ~ok):
                self.ids[f"labels.{col}"].add(name[row], f"{col}={_fmt(v[row])}")
            if not column.nullable and self.labelled:
                for row in np.flatnonzero(null):
                    self.ids[f"labels.{col}"].add(name[row], f"{col} is null (the column is not nullable)")
            self.values[col] = (v, null, ~null & ok)
        if self.values and self.labelled:
            none = np.logical_and.reduce([nl for _, nl, _ in self.values.values()])
            for row in np.flatnonzero(none):
                self.ids["labels.no_labels"].add(name[row], f"{', '.join(self.schema.names)}: all null")
        self.names, self.n_labels = (name if "sample_id" in cols else None), n

    # -- images ------------------------------------------------------------
    def shard(self, k: int, table: Any) -> None:
        """Shard ``k``: its :class:`ShardFacts` (inspected where its bytes were in hand) or the shard itself."""
        facts = table if isinstance(table, ShardFacts) else inspect_shard(k, table)
        self.shards += 1
        for problem in facts.problems:
            self.shard_problems[problem].append(k)
        self.skipped_shard |= facts.skipped
        for image in facts.images:
            self.image(image, facts.has_fmt, facts.has_sha)

    def image(self, f: ImageFacts, has_fmt: bool, has_sha: bool) -> None:
        ids, self.n_images, sid = self.ids, self.n_images + 1, f.sample_id
        if sid.startswith("<shard "):
            ids["schema.empty_sample_id"].add(sid, "image row with an empty sample_id")
        elif sid in self.image_ids:
            ids["schema.duplicate_sample_id"].add(sid, "more than one image row")
        self.image_ids.add(sid)
        want = f.fmt.lower() if isinstance(f.fmt, str) else None
        if has_fmt and want not in FORMATS:
            ids["schema.format"].add(sid, f"format={f.fmt!r}")
        if not f.n_bytes:
            ids["images.empty"].add(sid, "no image bytes")
            return
        self.n_bytes += f.n_bytes
        if has_sha and (f.sha or "").lower() != f.hexdigest:
            ids["images.sha256"].add(sid, f"column {str(f.sha)[:12]}.. != bytes {f.hexdigest[:12]}..")
        if (first := self.first_of_hash.setdefault(f.digest, sid)) != sid:
            self.dup_groups.setdefault(f.digest, [first]).append(sid)
        if f.problem is not None:
            ids[f"images.{f.problem[0]}"].add(sid, f.problem[1])
            return
        size = f.size or (0, 0)
        if 0 in size:
            ids["images.empty"].add(sid, f"size {size[0]}x{size[1]}")
            return
        self.sizes[f"{size[0]}x{size[1]}"].add(sid, f"{size[0]}x{size[1]}")
        self.modes[f.mode].add(sid, f"mode {f.mode}")
        self.formats[f.got] += 1
        if want in FORMATS and f.got != want:
            ids["images.format_mismatch"].add(sid, f"format column says {want}, bytes are {f.got}")

    # -- checks that need everything ----------------------------------------
    def finish(self, name: str) -> ValidationReport:
        t, ids = self.t, self.ids
        if not self.n_labels or not self.n_images:
            self.issue(
                "schema.empty_dataset", "error", f"the dataset has {self.n_labels} label rows and {self.n_images} images", 0
            )
        for (check, why), shards in sorted(self.shard_problems.items()):
            shown = ", ".join(map(str, shards[:10])) + (" ..." if len(shards) > 10 else "")
            self.issue(check, "error", f"image shard(s) {shown}: {why}", len(shards))
        if self.names is not None:
            for sid in self.image_ids - self.label_row.keys():
                if not sid.startswith("<"):
                    ids["schema.image_without_label"].add(sid, "no label row")
            if not self.skipped_shard:  # else ids of unreadable shards are unknown
                for sid in self.label_row.keys() - self.image_ids:
                    ids["schema.label_without_image"].add(sid, "no image")
        groups = self.duplicates()
        for check, b in sorted(ids.items()):
            severity, reason = CHECKS[check] if check in CHECKS else self.reasons[check]
            n_groups = f" ({groups[check]} group(s) of identical images)" if check in groups else ""
            self.issues.append(b.issue(check, severity, reason + n_groups))
        for kind, buckets in (("size", self.sizes), ("mode", self.modes)):
            if len(buckets) > 1:
                major = max((b.count, k) for k, b in buckets.items())[1]
                odd = Affected(t.max_examples)
                for k in sorted(buckets.keys() - {major}):
                    odd.merge(buckets[k])
                self.issues.append(
                    odd.issue(
                        f"images.{kind}",
                        "warning",
                        f"image {kind} differs from the majority {major} ({buckets[major].count} images)",
                    )
                )
        missing = self.missing()
        group_counts, hist = self.representativeness()
        splits = Counter("null" if s is None else str(s) for s in self.splits)
        counts = {
            "samples": self.n_labels,
            "images": self.n_images,
            "shards": self.shards,
            "image_bytes": self.n_bytes,
            "splits": {s: splits.get(s, 0) for s in layout.SPLITS} | splits,
            "labels": {c: self.n_labels - m["null"] for c, m in missing.items()},
        }
        stats = {
            "sizes": {k: b.count for k, b in self.sizes.items()},
            "modes": {k: b.count for k, b in self.modes.items()},
            "formats": dict(self.formats),
        }
        self.issues.sort(key=issue_order)
        return ValidationReport(self.issues, counts, group_counts, missing, stats, hist, t.to_dict(), name)

    def duplicates(self) -> dict[str, int]:
        """Groups of identical bytes: conflicting labels, same labels, across splits."""
        n_groups: Counter[str] = Counter()
        for group in self.dup_groups.values():
            group = list(dict.fromkeys(group))  # one id twice = duplicate_sample_id, reported already
            rows = {s: self.label_row[s] for s in group if s in self.label_row}
            if len(group) < 2:
                continue
            conflict = any(len({_fmt(v[r]) for r in rows.values() if not null[r]}) > 1 for v, null, _ in self.values.values())
            splits = {self.splits[r] for r in rows.values()} if self.splits else set()
            kinds = ["duplicates.conflicting_labels" if conflict else "duplicates.same_labels"]
            kinds += ["duplicates.cross_split"] * (len(splits) > 1)
            for s in group:
                others = ", ".join(x for x in group[:6] if x != s) + (" ..." if len(group) > 6 else "")
                r = rows.get(s)
                labels = (
                    "no label row"
                    if r is None
                    else ", ".join(f"{c}={'null' if null[r] else _fmt(v[r])}" for c, (v, null, _) in self.values.items())
                )
                where = f"split={self.splits[r]}; " if r is not None and self.splits else ""
                for kind in kinds:
                    self.ids[kind].add(s, f"same bytes as {others}; {where}{labels}")
            n_groups.update(kinds)
        return n_groups

    def check_target(self, codes: Mapping[str, tuple[np.ndarray, tuple[str, ...]]]) -> None:
        """A target naming a group or a slice the data cannot have is a typo: refused, not silently ignored."""
        problems = []
        for group, shares in (self.t.target or {}).items():
            keys = codes[group][1] if group in codes else None
            if keys is None:
                known = sorted(codes) or ["(none: the dataset has no grouped labels)"]
                problems.append(f"target group {group!r} is not a group of this dataset (its groups: {', '.join(known)})")
            elif unknown := sorted(set(shares) - set(keys)):
                problems.append(f"target {group}: no slice(s) {', '.join(map(repr, unknown))} (its slices: {', '.join(keys)})")
        if problems:
            raise SpecError(
                "the gate's thresholds 'target:' does not fit the dataset:",
                problems,
                hint="name groups and slices as the report's group_counts does",
            )

    def missing(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        n = self.n_labels
        for col in self.schema.names:
            null = self.values[col][1] if col in self.values else np.ones(n, bool)
            k = int(null.sum())
            frac = k / n if n else 0.0
            present = col in self.values and k < n
            out[col] = {"null": k, "fraction": round(frac, 6), "present": present}
            limit = self.t.missing_limit(col, present) if self.labelled else None
            if limit is not None and frac > limit:
                b = Affected(self.t.max_examples)
                names = self.names or []
                for i in np.flatnonzero(null) if names else []:
                    b.add(names[i], f"{col} is null")
                b.count = k
                self.issues.append(
                    b.issue(f"missing.{col}", "error", f"{frac:.1%} of the {col} labels are null, above max_missing={limit:.1%}")
                )
        return out

    def representativeness(self) -> tuple[dict[str, dict[str, int]], dict[str, Any]]:
        codes: dict[str, tuple[np.ndarray, tuple[str, ...]]] = {}
        for column in self.schema:
            col = column.name
            banded = col == "age" and column.kind == "regression"  # other numbers have no natural groups
            if col in self.values and self.values[col][2].any() and (banded or column.kind != "regression"):
                v, _, ok = self.values[col]
                v = np.where(ok, v, -10.0)  # invalid values (NaN, inf) never reach the groups
                c = np.minimum(v // 10, len(AGE_BANDS) - 1) if banded else v
                keys = AGE_BANDS if banded else column.classes
                codes["age_band" if banded else col] = (np.where(ok, c, -1).astype(np.int64), keys)
        if "age_band" in codes and "gender" in codes:
            (a, bands), (g, genders) = codes["age_band"], codes["gender"]
            cell = np.where((a >= 0) & (g >= 0), g * len(bands) + a, -1)
            codes["gender_x_age_band"] = (cell, tuple(f"{x}/{y}" for x in genders for y in bands))
        t, out = self.t, {}
        self.check_target(codes)
        for gname, (code, keys) in codes.items():
            counts = np.bincount(code[code >= 0], minlength=len(keys))
            out[gname] = dict(zip(keys, map(int, counts), strict=True))
            total, share = int(counts.sum()), counts.sum() / len(keys)
            target = (t.target or {}).get(gname)
            wanted = len(keys) if target is None else sum(target.get(key, 0.0) > 0 for key in keys)
            severity = t.representativeness_severity(total, wanted)
            small = (
                f" (a warning: {total} samples are too few for {wanted} slices of min_group_count={t.min_group_count}; "
                f"an error from {wanted * t.min_group_count})"
                if severity == "warning" and t.representativeness == "auto"
                else ""
            )
            for k, key in enumerate(keys):
                c, why = int(counts[k]), []
                if c < t.min_group_count and (target is None or target.get(key, 0.0) > 0):  # none wanted: none needed
                    why.append(f"below min_group_count={t.min_group_count}")
                if target is None and c < t.min_group_fraction * share:
                    why.append(f"below {t.min_group_fraction:.0%} of the uniform share {share:.1f}")
                if target is not None and total and abs(gap := c / total - target.get(key, 0.0)) > t.max_target_gap:
                    why.append(
                        f"{c / total:.1%} of the samples against a target share of {target.get(key, 0.0):.1%} "
                        f"(gap {gap:+.1%}, above max_target_gap={t.max_target_gap:.1%})"
                    )
                if why:
                    b = Affected(t.max_examples)
                    for i in np.flatnonzero(code == k):
                        b.add(self.names[i] if self.names else f"<labels row {i}>", f"{gname}={key}")
                    reason = f"{gname} {key!r}: {c} of {total} samples, {'; '.join(why)}{small}"
                    self.issues.append(replace(b.issue(f"representativeness.{gname}", severity, reason), key=key))
        hist = {}
        if "age" in self.values and not self.values["age"][1].all():
            hist["age"] = age_histogram(*self.values["age"][:2], self.schema["age"].range)
        return out, hist


def age_histogram(v: np.ndarray, null: np.ndarray, valid: tuple[float, float] | None) -> dict[str, Any]:
    """5-year bins over the valid range, plus what lies outside it: the out-of-range values are the ones to see.

    Values below or above ``valid`` are counted (with the most extreme one) rather than binned, so an age of
    1e9 still draws one bar, not 2e8 empty bins; NaN and inf are counted apart.
    """
    given = ~null
    finite = given & np.isfinite(v)
    lo, hi = valid if valid is not None else (0.0, float(v[finite].max()) if finite.any() else 0.0)
    inside = finite & (v >= lo) & (v <= hi)
    below, above = finite & (v < lo), finite & (v > hi)
    start = 5 * np.floor(lo / 5)
    counts, edges = np.histogram(v[inside], bins=np.arange(start, hi + 5, 5))
    return {
        "edges": [int(e) for e in edges],
        "counts": [int(c) for c in counts],
        "range": [float(lo), float(hi)],
        "below": int(below.sum()),
        "below_min": _fmt(float(v[below].min())) if below.any() else None,
        "above": int(above.sum()),
        "above_max": _fmt(float(v[above].max())) if above.any() else None,
        "not_finite": int((given & ~np.isfinite(v)).sum()),
    }


def validate(
    labels: pa.Table,
    image_shards: Iterable[pa.Table | pa.RecordBatch | bytes | ShardFacts] | pa.Table,
    thresholds: Thresholds | None = None,
    *,
    name: str = "",
    on_shard: Callable[[int, int], None] | None = None,
    labelled: bool = True,
    schema: LabelSchema = FACE_SCHEMA,
) -> ValidationReport:
    """Run every check; ``image_shards`` is consumed once, one shard at a time.

    ``labelled=False``: the dataset is unlabelled on purpose, so rows without any label pass.
    ``schema``: the label columns the dataset declares (its ``Manifest.label_schema``).

    Shards are ``pyarrow`` tables/batches with ``layout.IMAGE_SCHEMA`` columns, their Parquet bytes, or
    the :class:`~flotilla.data.imagecheck.ShardFacts` an ingest worker took from them while it had the
    bytes (the same report, without decoding twice); ``on_shard(index, images_so_far)`` reports progress.
    """
    t = thresholds or Thresholds()
    if isinstance(t.max_missing, Mapping) and (unknown := sorted(set(t.max_missing) - set(schema.names))):
        raise SpecError(
            f"the gate's thresholds 'max_missing:' names label column(s) the dataset does not declare: {', '.join(unknown)}",
            hint=f"its label columns: {schema.describe()}",
        )
    gate = _Gate(t, labelled, schema)
    gate.labels(labels)
    if isinstance(image_shards, (pa.Table, pa.RecordBatch, bytes)):
        image_shards = [image_shards]
    for k, shard in enumerate(image_shards):
        gate.shard(k, shard)
        if on_shard is not None:
            on_shard(k, gate.n_images)
    return gate.finish(name)
