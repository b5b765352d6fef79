"""Counts a report shows, from the labels table alone: per split, per group of each column, and crossed.

Pure: a labels table in, plain dicts out, so the numbers are tested without a hub.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flotilla.data import layout
from flotilla.data.page.columns import NULL, ReportColumn

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True)
class Distribution:
    """One column's groups counted per split (``"all"`` is every split together)."""

    column: ReportColumn
    groups: tuple[str, ...]
    counts: dict[str, dict[str, int]]  # split -> group -> count


@dataclass(frozen=True)
class Crosstab:
    """How column ``label``'s groups spread within each group of the slice column ``by``."""

    by: ReportColumn
    label: ReportColumn
    rows: tuple[str, ...]
    cols: tuple[str, ...]
    counts: dict[tuple[str, str], int]


def _order(column: ReportColumn, seen: Sequence[str]) -> tuple[str, ...]:
    known = column.groups()
    extra = sorted(set(seen) - set(known) - {NULL})
    return (*known, *extra, *((NULL,) if NULL in seen else ()))


def group_rows(labels: pa.Table, column: ReportColumn) -> list[str]:
    """Each row's group in ``column``."""
    return [column.group(v) for v in labels.column(column.name).to_pylist()]


def split_counts(labels: pa.Table) -> dict[str, int]:
    splits = Counter(labels.column("split").to_pylist())
    return {s: splits.get(s, 0) for s in (*layout.SPLITS, *sorted(set(splits) - set(layout.SPLITS)))}


def distribution(labels: pa.Table, column: ReportColumn) -> Distribution:
    groups = group_rows(labels, column)
    splits = labels.column("split").to_pylist()
    counts: dict[str, dict[str, int]] = {"all": dict(Counter(groups))}
    for s in split_counts(labels):
        counts[s] = dict(Counter(g for g, sp in zip(groups, splits, strict=True) if sp == s))
    return Distribution(column, _order(column, list(counts["all"])), counts)


def crosstab(labels: pa.Table, by: ReportColumn, label: ReportColumn) -> Crosstab:
    rows, cols = group_rows(labels, by), group_rows(labels, label)
    counts = Counter(zip(rows, cols, strict=True))
    return Crosstab(by, label, _order(by, rows), _order(label, cols), dict(counts))


def pick(sample_ids: Sequence[str], groups: Sequence[str], per_group: int) -> dict[str, list[str]]:
    """Up to ``per_group`` sample ids of each group, the same ones on every run: those whose id hashes lowest.

    A hash, not the first ids, so the picks spread over sources and shards rather than the head of one.
    """
    ranked = sorted(zip(groups, sample_ids, strict=True), key=lambda gs: hashlib.blake2b(gs[1].encode(), digest_size=8).digest())
    out: dict[str, list[str]] = {}
    for g, sid in ranked:
        chosen = out.setdefault(g, [])
        if len(chosen) < per_group:
            chosen.append(sid)
    return out
