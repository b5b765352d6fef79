"""Pinning: the one step that turns the refs a spec names into commit ids, before anything runs.

Training, sweeps and job submission all read data by commit id (a branch moves; a commit never does),
and all three pin here: a sweep pins every ``data.ref`` variant it may pick, a job pins on the
driver before it is submitted, a run pins once and hands the :class:`DataRef` to every worker.
Each ref is resolved once and the dataset is checked to exist at that commit, so a typo in a ref or a
dataset fails before a branch, a worker or a trial exists.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flotilla.data.store import read_manifest


@dataclass(frozen=True)
class DataRef:
    """A dataset pinned to an immutable commit."""

    repo: str
    commit: str
    dataset: str
    ref: str = ""  # what the user asked for (branch/tag), for lineage only

    def uri(self, path: str = "") -> str:
        return f"lakefs://{self.repo}/{self.commit}/{path}"


def pin(hub: Any, repo: str, dataset: str, refs: Iterable[str]) -> dict[str, DataRef]:
    """Each of ``refs`` (branch, tag or commit id) → its commit id, with ``dataset`` checked to be there.

    Returned in the order given (duplicates once). Raises the hub's ``NotFoundError`` naming the ref
    or the dataset that is missing.
    """
    r = hub.repo(repo)
    pinned: dict[str, DataRef] = {}
    for ref in refs:
        if ref in pinned:
            continue
        commit = r.resolve(ref)
        read_manifest(r, commit, dataset)
        pinned[ref] = DataRef(repo, commit, dataset, ref)
    return pinned


def resolve_data(hub: Any, repo: str, ref: str, dataset: str) -> DataRef:
    """:func:`pin` for one ref: the :class:`DataRef` a run hands to its workers."""
    return pin(hub, repo, dataset, [ref])[ref]
