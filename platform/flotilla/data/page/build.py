"""``data_report`` and ``data_grid``: read a dataset at a ref once, then write the page or the PNG grid.

The labels (with every delta folded in) come from :mod:`flotilla.data.store`; images are read only
for the few samples shown; the report pins the ref to its commit first, so every part of the page
describes the same data even if the branch moves meanwhile.
"""

from __future__ import annotations

import datetime
import itertools
from pathlib import Path
from typing import TYPE_CHECKING

from flotilla.data import layout
from flotilla.data.page import sources
from flotilla.data.page.columns import NULL, ReportColumn, column_named, columns_of
from flotilla.data.page.html import ReportData, Thumb, render
from flotilla.data.page.stats import crosstab, distribution, group_rows, pick, split_counts
from flotilla.data.page.thumbs import data_uri, grid_png, thumbnail
from flotilla.data.store import read_dataset
from flotilla.errors import SpecError

if TYPE_CHECKING:
    import pyarrow as pa

    from flotilla.hub.client import Hub

REPORTS = Path("artifacts/reports")


def _check_split(split: str | None) -> None:
    if split is not None and split not in layout.SPLITS:
        raise SpecError(f"unknown split {split!r}", hint=f"use one of {', '.join(layout.SPLITS)}")


def _only(labels: pa.Table, split: str | None) -> pa.Table:
    import pyarrow.compute as pc

    return labels if split is None else labels.filter(pc.equal(labels.column("split"), split))


def _picks(labels: pa.Table, column: ReportColumn, per_group: int) -> dict[str, list[str]]:
    groups = group_rows(labels, column)
    chosen = pick(labels.column("sample_id").to_pylist(), groups, per_group)
    order = [g for g in (*column.groups(), *sorted(set(chosen) - set(column.groups()))) if g in chosen and g != NULL]
    return {g: chosen[g] for g in order}


def data_report(
    hub: Hub,
    repo: str,
    ref: str,
    dataset: str,
    *,
    out: Path | None = None,
    split: str | None = None,
    per_group: int = 6,
    worst: int = 24,
) -> Path:
    """Write one self-contained HTML page about ``dataset`` at ``ref`` (opens offline) and return its path.

    Counts and label distributions per split and slice, sample grids per class and band, the gate's
    validation result, the latest audit's worst examples and the commits that made the data.
    ``split`` limits distributions and grids to one split; ``out`` defaults to
    ``artifacts/reports/<dataset>-<commit>.html``.
    """
    _check_split(split)
    r = hub.repo(repo)
    commit = r.resolve(ref)
    manifest, labels = read_dataset(r, commit, dataset)
    columns = columns_of(manifest)
    shown = _only(labels, split)
    picks = {c.slice_name: _picks(shown, c, per_group) for c in columns}
    audit = sources.latest_audit_rows(r, dataset, worst)
    wanted = {sid for groups in picks.values() for ids in groups.values() for sid in ids}
    images = sources.load_images(r, commit, manifest, wanted)
    audit_thumbs: dict[str, str] = {}
    if audit is not None and audit.rows:
        ids = [str(row["sample_id"]) for row in audit.rows]
        found = sources.load_images(r, commit, manifest, ids)
        if set(ids) - found.keys():  # removed since the audit: its own branch still has them
            old, _ = read_dataset(r, audit.branch, dataset)
            found |= sources.load_images(r, audit.branch, old, set(ids) - found.keys())
        audit_thumbs = {sid: data_uri(thumbnail(img)) for sid, img in found.items()}
    by_id = {sid: i for i, sid in enumerate(labels.column("sample_id").to_pylist())}

    def caption(sid: str) -> str:
        row = labels.slice(by_id[sid], 1).to_pylist()[0]
        return " · ".join(c.label(row[c.name]) for c in columns)

    grids = [
        (
            title,
            {
                g: [Thumb(s, data_uri(thumbnail(images[s])) if s in images else "", caption(s)) for s in ids]
                for g, ids in groups.items()
            },
        )
        for title, groups in picks.items()
    ]
    data = ReportData(
        repo=repo,
        ref=ref,
        commit=commit,
        dataset=dataset,
        split=split,
        generated=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        columns=columns,
        splits=split_counts(labels),
        distributions=[distribution(shown, c) for c in columns],
        crosstabs=[crosstab(shown, a, b) for a, b in itertools.combinations(columns, 2)],
        grids=grids,
        validation=sources.read_validation(r, commit, dataset),
        audit=audit,
        audit_thumbs=audit_thumbs,
        audit_command=f"flotilla data audit {repo}/{ref}/{dataset} --model <model>",
        history=sources.history(r, commit, dataset),
    )
    path = out or REPORTS / f"{dataset}-{commit[:12]}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(data), encoding="utf-8")
    return path


def data_grid(
    hub: Hub,
    repo: str,
    ref: str,
    dataset: str,
    *,
    out: Path,
    by: str = "emotion",
    per_group: int = 8,
    split: str | None = None,
    thumb: int = 64,
) -> Path:
    """Write a PNG grid of ``dataset`` at ``ref``: one row per group of column ``by`` (``age`` groups by band),
    ``per_group`` thumbnails each, the same samples every time; return ``out``."""
    _check_split(split)
    r = hub.repo(repo)
    commit = r.resolve(ref)
    manifest, labels = read_dataset(r, commit, dataset)
    column = column_named(columns_of(manifest), by)
    picks = _picks(_only(labels, split), column, per_group)
    images = sources.load_images(r, commit, manifest, {s for ids in picks.values() for s in ids})
    png = grid_png({g: [images[s] for s in ids if s in images] for g, ids in picks.items()}, per_group, thumb)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(png)
    return out
