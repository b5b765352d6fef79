"""Aliases: ``production``, ``staging`` or any name, per family, that every reader of the hub agrees on.

An alias is a small committed file, ``registry/aliases/<family>/<alias>.json``, on the branch it
serves (main), not a lakeFS tag, for three reasons: a tag is immutable (moving one is a delete and
a create, two calls with a window between them in which readers see no alias, and no way to refuse
a concurrent move); a tag names a commit, while an alias names a run's models at a commit; and a
tag keeps no history to roll back through. The file keeps its history (a stack: a move pushes, a
rollback pops), and every move is one merge commit on main whose metadata is a
:class:`~flotilla.lineage.AliasMove`, so ``lakectl log`` and the web UI show who moved what, when.

A move is atomic and safe under concurrent writers because it is a lakeFS merge: the move is
written on a scratch branch cut from main's commit at the moment the alias was read, and merged.
If another writer moved the same alias after that commit, both sides changed the same file and
lakeFS refuses the second merge as a conflict: main never sees a move computed from a stale read,
and the loser gets a :class:`~flotilla.errors.ConflictError` saying to read again and retry.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from flotilla.errors import ConflictError, FlotillaError, MergeConflictError, NotFoundError, SpecError
from flotilla.hub.experiment import SCRATCH
from flotilla.lineage import AliasMove
from flotilla.names import check_registry_name
from flotilla.registry.address import ModelLocation, model_dir
from flotilla.registry.cards import run_cards

if TYPE_CHECKING:
    from flotilla.hub.experiment import Experiment
    from flotilla.hub.repo import Repo

ALIASES_PREFIX = "registry/aliases/"


def alias_path(family: str, alias: str) -> str:
    return f"{ALIASES_PREFIX}{check_registry_name('family', family)}/{check_registry_name('alias', alias)}.json"


@dataclass(frozen=True)
class AliasTarget:
    """What an alias points to: every model of one run, at a commit of the branch the alias serves."""

    run_id: str
    repo: str
    commit: str
    models: tuple[str, ...]
    data_commit: str  # the data commit the run's models were trained on
    set_at: str
    action: Literal["promote", "rollback"] = "promote"
    reason: str = ""

    def location(self, model: str = "") -> ModelLocation:
        """One model of the run: ``model`` may be left out when the run has only one."""
        if not model:
            if len(self.models) != 1:
                raise SpecError(
                    f"run {self.run_id!r} has {len(self.models)} models ({', '.join(self.models)}); name one",
                    hint=f"add it to the address: <family>@<alias>/{self.models[0]}",
                )
            model = self.models[0]
        if model not in self.models:
            raise NotFoundError(f"run {self.run_id!r} has no model {model!r}", hint=f"its models: {', '.join(self.models)}")
        return ModelLocation(self.repo, self.commit, model_dir(self.run_id, model) + "model.pt")


@dataclass(frozen=True)
class Alias:
    """One alias of one family, with every target it had (oldest first; the last is current)."""

    family: str
    name: str
    history: tuple[AliasTarget, ...]
    retired: tuple[AliasTarget, ...] = ()  # targets a rollback moved away from, newest last

    @property
    def current(self) -> AliasTarget:
        return self.history[-1]

    @property
    def previous(self) -> AliasTarget | None:
        return self.history[-2] if len(self.history) > 1 else None

    @property
    def address(self) -> str:
        return f"{self.family}@{self.name}"

    def location(self, model: str = "") -> ModelLocation:
        return self.current.location(model)

    def to_json(self) -> str:
        return json.dumps(
            {"family": self.family, "alias": self.name, "history": [asdict(t) for t in self.history],
             "retired": [asdict(t) for t in self.retired]},
            indent=2, sort_keys=True,
        )  # fmt: skip

    @classmethod
    def from_json(cls, raw: bytes | str) -> Alias:
        d = json.loads(raw)

        def target(t: dict[str, Any]) -> AliasTarget:
            return AliasTarget(**{**t, "models": tuple(t["models"])})

        return cls(d["family"], d["alias"], tuple(map(target, d["history"])), tuple(map(target, d.get("retired", []))))


def read_alias(repo: Repo, family: str, alias: str, ref: str = "main") -> Alias | None:
    """The alias as ``ref`` holds it; None when it was never set there."""
    path = alias_path(family, alias)
    if not repo.exists(ref, path):
        return None
    return Alias.from_json(repo.get(ref, path))


def get_alias(repo: Repo, family: str, alias: str, ref: str = "main") -> Alias:
    """:func:`read_alias`, with a NotFoundError that lists the aliases there are."""
    found = read_alias(repo, family, alias, ref)
    if found is None:
        known = [a.address for a in list_aliases(repo, ref)]
        raise NotFoundError(
            f"no alias {family}@{alias} in {repo.name!r} at {ref!r}",
            hint=(f"aliases there: {', '.join(known)}" if known else "no alias is set yet")
            + f"; set one with 'flotilla models promote <model> --alias {alias}'",
        )
    return found


def list_aliases(repo: Repo, ref: str = "main") -> list[Alias]:
    """Every alias ``ref`` holds, by family then name."""
    commit = repo.resolve(ref)
    return [Alias.from_json(repo.get(commit, o.path)) for o in repo.list(commit, ALIASES_PREFIX) if o.path.endswith(".json")]


class AliasChange:
    """One move (or rollback) of one alias, in two steps: :meth:`start` pins the read, :meth:`finish` lands it.

    Used as a context manager by :func:`move_alias` and :func:`rollback_alias`. A change started
    before another change of the same alias landed is refused by lakeFS at :meth:`finish` (see the
    module docstring); nothing reaches ``into`` then, and the scratch branch is deleted.
    """

    def __init__(self, repo: Repo, family: str, alias: str, *, into: str = "main") -> None:
        self.repo, self.family, self.alias, self.into = repo, family, alias, into
        self.path = alias_path(family, alias)
        self.before: Alias | None = None
        self.after: Alias | None = None
        self.base_commit = ""
        self._exp: Experiment | None = None

    def start(self) -> AliasChange:
        self._exp = self.repo.transact(
            f"{self.family}-{self.alias}-{secrets.token_hex(3)}", self.into, prefix="alias-", retention=SCRATCH
        ).start()
        self.base_commit = self._exp.base_commit or ""
        self.before = read_alias(self.repo, self.family, self.alias, self.base_commit)
        return self

    def __enter__(self) -> AliasChange:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if et is None:
            self.finish()
        else:
            self.abort()

    def abort(self) -> None:
        """Give up the change: the scratch branch goes, nothing reaches ``into``."""
        if self._exp:
            self._exp.abort()

    def to_run(self, run_id: str, *, reason: str = "") -> Alias:
        """Point the alias at every model of ``run_id`` as ``into`` holds it (checked: the run's family)."""
        cards = run_cards(self.repo, self.base_commit, run_id)
        families = {card.config.get("name", "") for _, card in cards}
        if families != {self.family}:
            raise SpecError(
                f"run {run_id!r} trained family {', '.join(sorted(families))!r}, not {self.family!r}",
                hint=f"an alias of {self.family!r} points at runs of that family; pick one of its runs "
                "('flotilla models list --family ...')",
            )
        if self.before and self.before.current.run_id == run_id:
            raise ConflictError(f"{self.family}@{self.alias} already points at run {run_id!r}", hint="nothing to do")
        target = AliasTarget(
            run_id, self.repo.name, self.base_commit, tuple(loc.model for loc, _ in cards), cards[0][1].data.commit,
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "promote", reason,
        )  # fmt: skip
        prior = self.before or Alias(self.family, self.alias, ())
        self.after = replace(prior, history=(*prior.history, target))
        return self.after

    def back(self, *, reason: str = "") -> Alias:
        """Move the alias back to the target it had before the current one (a stack: rollback twice goes back twice)."""
        if self.before is None or self.before.previous is None:
            raise ConflictError(
                f"{self.family}@{self.alias} has no earlier model to roll back to"
                + ("" if self.before else " (it was never set)"),
                hint=f"point it at a model instead: 'flotilla models promote <model> --alias {self.alias}'",
            )
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        retired = replace(self.before.current, action="rollback", reason=reason or "rolled back", set_at=stamp)
        self.after = replace(self.before, history=self.before.history[:-1], retired=(*self.before.retired, retired))
        return self.after

    def finish(self) -> Alias:
        """Commit the change on the scratch branch and merge it into ``into``; the branch goes either way."""
        exp, after = self._exp, self.after
        if exp is None or after is None:
            raise FlotillaError("an alias change must be started and given a target before it finishes")
        rollback = self.before is not None and len(after.history) < len(self.before.history)
        record = AliasMove(
            self.family, self.alias, after.current.run_id,
            self.before.current.run_id if self.before else None, "rollback" if rollback else "promote",
        )  # fmt: skip
        what = f"{'Roll back' if rollback else 'Move'} {after.address} to run {after.current.run_id}"
        try:
            exp.put(self.path, after.to_json())
            exp.commit(what, record.to_metadata())
            self.repo.merge(exp.branch, self.into, what, record.to_metadata())
        except MergeConflictError:
            raise ConflictError(
                f"{after.address} was moved by someone else since it was read (at commit {self.base_commit[:12]}); "
                "this change was not applied",
                hint="read it again ('flotilla models list') and retry if the move still makes sense",
            ) from None
        finally:
            exp.delete()
        return after


def move_alias(repo: Repo, family: str, alias: str, run_id: str, *, into: str = "main", reason: str = "") -> Alias:
    """Point ``family@alias`` at run ``run_id``'s models on ``into``, atomically (see the module docstring)."""
    change = AliasChange(repo, family, alias, into=into).start()
    try:
        change.to_run(run_id, reason=reason)
    except BaseException:
        change.abort()
        raise
    return change.finish()


def rollback_alias(repo: Repo, family: str, alias: str, *, into: str = "main", reason: str = "") -> tuple[AliasTarget, Alias]:
    """Move ``family@alias`` back to its previous target; return the target it left and the alias now."""
    change = AliasChange(repo, family, alias, into=into).start()
    try:
        change.back(reason=reason)
    except BaseException:
        change.abort()
        raise
    left = change.before.current if change.before else None
    after = change.finish()
    assert left is not None  # back() refused an alias without a current target
    return left, after
