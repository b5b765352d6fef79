"""The branches flotilla made, what state each is in, and pruning the ones nobody needs.

Every flotilla branch comes from :meth:`Repo.transact` with a prefix that says what made it
(``ingest-``, ``exp-``, ``trial-``...). Most are deleted when their work ends; a failed ingest is
kept on purpose (its data waits there to be fixed), and a crash can leave any of them behind.
``flotilla hub branches`` lists them; ``--prune`` deletes the ingest branches whose data is
either refused by the gate or already on the protected branch, and nothing else: never the
protected branch, never a branch with uncommitted changes (someone is working there), never one
with commits the protected branch lacks other than a failed ingest's own.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from flotilla.hub.repo import Repo
from flotilla.lineage import IngestCommit, Key, Kind

# prefix -> kind, longest prefix first (review-fix- before any shorter one it could share a start with)
KINDS: dict[str, str] = {
    "gate-install-": "gate-install",
    "review-fix-": "review-fix",
    "receipt-": "receipt",
    "promote-": "promote",
    "relabel-": "relabel",
    "monitor-": "monitor",
    "ingest-": "ingest",
    "append-": "append",
    "audit-": "audit",
    "trial-": "trial",
    "alias-": "alias",
    "infer-": "infer",
    "exp-": "experiment",
}
PRUNABLE_KINDS = frozenset({"ingest"})

State = Literal["open", "failed", "merged", "unmerged"]


@dataclass(frozen=True)
class BranchInfo:
    """One flotilla-made branch: ``age_s`` is the age of its head commit (lakeFS keeps no branch creation time)."""

    repo: str
    name: str
    kind: str
    head: str
    age_s: float
    state: State
    why: str

    @property
    def prunable(self) -> bool:
        return self.kind in PRUNABLE_KINDS and self.state in ("failed", "merged")


def kind_of_branch(name: str) -> str | None:
    """The kind of a flotilla branch by its prefix; None for a branch flotilla did not make (``main``)."""
    return next((kind for prefix, kind in KINDS.items() if name.startswith(prefix)), None)


def branch_state(uncommitted: int, merged: bool, head_metadata: Mapping[str, str], into: str) -> tuple[State, str]:
    """A branch's state from what the hub says about it; uncommitted work outranks everything."""
    if uncommitted:
        return "open", f"{uncommitted} uncommitted change(s): work in progress"
    if merged:
        return "merged", f"nothing on it that {into!r} lacks (merged, or never written)"
    if head_metadata.get(Key.KIND) == Kind.INGEST and not IngestCommit.from_metadata(head_metadata).passed:
        return "failed", f"its dataset failed the validation gate and was not merged into {into!r}"
    return "unmerged", f"commits {into!r} lacks"


def flotilla_branches(repo: Repo, into: str = "main", *, now: float | None = None) -> list[BranchInfo]:
    """The branches of ``repo`` flotilla made, with kind, age and state, oldest first."""
    now = time.time() if now is None else now
    out = []
    for name in repo.branches():
        kind = kind_of_branch(name)
        if kind is None or name == into:
            continue
        head = repo.commit_info(name)
        merged = repo.merge_base(name, into) == head.id
        state, why = branch_state(len(repo.uncommitted(name)), merged, head.metadata, into)
        out.append(BranchInfo(repo.name, name, kind, head.id, max(0.0, now - head.creation_date), state, why))
    return sorted(out, key=lambda b: (-b.age_s, b.name))


def prune_branches(repo: Repo, into: str = "main", *, dry_run: bool = False) -> list[BranchInfo]:
    """Delete the prunable branches (:attr:`BranchInfo.prunable`) of ``repo``; return them (``dry_run``: only list)."""
    doomed = [b for b in flotilla_branches(repo, into) if b.prunable]
    if not dry_run:
        for b in doomed:
            repo.delete_branch(b.name, missing_ok=True)
    return doomed
