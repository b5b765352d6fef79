"""The branches flotilla made, what state each is in, and pruning the ones nobody needs.

Every flotilla branch comes from :meth:`Repo.transact` with a prefix that says what made it
(``ingest-``, ``exp-``, ``trial-``...). Most are deleted when their work ends; a failed ingest is
kept on purpose (its data waits there to be fixed), and a crash can leave any of them behind.
``flotilla hub branches`` lists them; ``--prune`` deletes the ingest branches whose data is
either refused by the gate or already on the protected branch, and the **orphaned** branches
whose own retention would have deleted them, and nothing else: never the protected branch, never
a branch with uncommitted changes that someone may still be writing, never one with commits the
protected branch lacks other than a failed ingest's own, never one kept on failure (a training
run's checkpoints: ``flotilla train resume`` continues it).

*Orphaned* (:mod:`flotilla.hub.owners`): the process that claimed the branch is gone (killed) while
changes were staged there, or it gave the branch up without being able to delete it (the hub was
down). Nothing will ever commit those changes. A branch with staged changes and no owner record
(a user fixing a failed ingest's labels, a writer on another host) stays ``open``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from flotilla.hub import owners
from flotilla.hub.owners import Owner
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
    "sweep-": "sweep",  # a sweep's state mirrored to the hub (tune/mirror.py): kept, its owner record says so
    "trial-": "trial",
    "alias-": "alias",
    "infer-": "infer",
    "exp-": "experiment",
}
PRUNABLE_KINDS = frozenset({"ingest"})

State = Literal["open", "orphaned", "failed", "merged", "unmerged"]


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
    kept_on_failure: bool = False  # its owner's retention keeps it when its work fails (orphaned: not pruned)

    @property
    def prunable(self) -> bool:
        if self.state == "orphaned":
            return not self.kept_on_failure
        return self.kind in PRUNABLE_KINDS and self.state in ("failed", "merged")


def kind_of_branch(name: str) -> str | None:
    """The kind of a flotilla branch by its prefix; None for a branch flotilla did not make (``main``)."""
    return next((kind for prefix, kind in KINDS.items() if name.startswith(prefix)), None)


def branch_state(
    uncommitted: int, merged: bool, head_metadata: Mapping[str, str], into: str, owner: Owner | None = None
) -> tuple[State, str]:
    """A branch's state from what the hub says about it and its owner record; uncommitted work outranks the
    commits, and a gone owner (killed, or gave it up) outranks uncommitted work: nobody will commit it."""
    if owner is not None and owner.gone() and (uncommitted or owner.abandoned):
        how = "gave it up, unable to delete it" if owner.abandoned else "is gone (killed?)"
        after = (
            "its commits stay for 'flotilla train resume' / 'flotilla sweep resume'" if owner.keep else "nothing will commit it"
        )
        return "orphaned", f"{uncommitted} uncommitted change(s) whose writer ({owner.describe()}) {how}: {after}"
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
    home = repo.hub.settings.home
    out = []
    for name in repo.branches():
        kind = kind_of_branch(name)
        if kind is None or name == into:
            continue
        head = repo.commit_info(name)
        merged = repo.merge_base(name, into) == head.id
        owner = owners.owner_of(home, repo.name, name)
        state, why = branch_state(len(repo.uncommitted(name)), merged, head.metadata, into, owner)
        age = max(0.0, now - head.creation_date)
        out.append(BranchInfo(repo.name, name, kind, head.id, age, state, why, bool(owner and owner.keep)))
    return sorted(out, key=lambda b: (-b.age_s, b.name))


def prune_branches(repo: Repo, into: str = "main", *, dry_run: bool = False) -> list[BranchInfo]:
    """Delete the prunable branches (:attr:`BranchInfo.prunable`) of ``repo``; return them (``dry_run``: only list).

    Owner records of branches that no longer exist (deleted by hand, or by the hub's own tools) go too, once
    their owner is gone (a live one may be about to create its branch: the record comes first).
    """
    listed = flotilla_branches(repo, into)
    doomed = [b for b in listed if b.prunable]
    if not dry_run:
        for b in doomed:
            repo.delete_branch(b.name, missing_ok=True)
            owners.release(repo.hub.settings.home, repo.name, b.name)
        existing = set(repo.branches())
        home = repo.hub.settings.home
        for name in owners.recorded_branches(home, repo.name):
            record = owners.owner_of(home, repo.name, name)
            if name not in existing and (record is None or record.gone()):
                owners.release(home, repo.name, name)
    return doomed
