"""Removing samples from a dataset — not a face, a duplicate — as a change with its reasons, never a rewrite.

A removal is a ``remove`` delta (:mod:`flotilla.data.deltas`): the removed samples' label rows as
they were, a reason per sample, and who asked (the audit, the reviewer). Readers fold it in — the
samples leave the labels, the manifest's counts follow, the loader and the gate skip their images —
while the image shards stay byte-identical (and cached). Each removed sample is claimed, so a
concurrent relabel of the same sample conflicts instead of resurrecting it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from flotilla.data import deltas, layout
from flotilla.data.deltas import Delta
from flotilla.errors import SpecError
from flotilla.hub.repo import Repo

_SHOWN = 10


@dataclass(frozen=True)
class Removal:
    """A checked removal, not yet written: the rows that go and why each goes."""

    rows: pa.Table  # the removed samples' label rows, as they were
    reasons: Mapping[str, str]  # sample id → reason

    @property
    def samples(self) -> int:
        return self.rows.num_rows

    def per_reason(self) -> dict[str, int]:
        return dict(Counter(self.reasons.values()))


def plan_removal(labels: pa.Table, reasons: Mapping[str, str], dataset: str = "") -> Removal:
    """Check ``{sample_id: reason}`` against ``labels`` (the dataset as readers see it); one SpecError lists every problem."""
    if not reasons:
        raise SpecError(f"no samples to remove from dataset {dataset!r}", hint="pass {sample_id: reason}")
    have = set(labels.column("sample_id").to_pylist())
    problems = []
    unknown = [sid for sid in reasons if sid not in have]
    if unknown:
        shown = ", ".join(map(repr, unknown[:_SHOWN])) + (f" and {len(unknown) - _SHOWN} more" if len(unknown) > _SHOWN else "")
        problems.append(f"{len(unknown)} sample id(s) not in the dataset (or removed already): {shown}")
    problems += [f"sample {sid!r}: a removal needs a reason" for sid, why in reasons.items() if not str(why or "").strip()]
    if problems:
        raise SpecError(f"removal from dataset {dataset!r} is invalid; nothing was changed:", problems)
    rows = labels.filter(pc.is_in(labels.column("sample_id"), pa.array(list(reasons), pa.string())))
    return Removal(rows, {sid: str(why).strip() for sid, why in reasons.items()})


def stage_removal(
    repo: Repo, branch: str, dataset: str, removal: Removal, *, reason: str = "", source: Mapping[str, str] | None = None
) -> Delta:
    """Write ``removal`` on ``branch`` as a remove delta plus one claim per sample (uncommitted)."""
    listing = [o.path for o in repo.list(branch, deltas.deltas_prefix(dataset))]
    delta = deltas.new_delta("remove", removal.rows, listing, dataset, reason=reason, reasons=removal.reasons, source=source)
    repo.put(branch, delta.labels_path(dataset), layout.encode_labels(removal.rows))
    for sid in removal.reasons:
        repo.put(branch, *deltas.claim(dataset, sid, delta))
    repo.put(branch, delta.path(dataset), delta.to_json())
    return delta
