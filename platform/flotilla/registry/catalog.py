"""The model catalog: every model a ref holds, with its card and the aliases that point at it.

``flotilla models list`` and ``show``. The hub is the registry: models are ``models/<run>/<model>/``
folders on main (or any ref) and their cards say the rest, so the catalog is a read of one commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flotilla.errors import FlotillaError
from flotilla.lineage import ModelCard
from flotilla.registry.address import ModelLocation
from flotilla.registry.aliases import list_aliases
from flotilla.registry.cards import model_locations, read_card, read_cards
from flotilla.registry.lookup import resolve

if TYPE_CHECKING:
    from flotilla.hub.client import Hub
    from flotilla.hub.repo import Repo


@dataclass(frozen=True)
class ModelEntry:
    """One model in the catalog: where it is, its card, and the aliases (``family@alias``) naming it."""

    location: ModelLocation
    card: ModelCard
    aliases: tuple[str, ...] = ()

    @property
    def family(self) -> str:
        return str(self.card.config.get("name", ""))

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(str(t.get("name", "")) for t in self.card.tasks)

    @property
    def parent(self) -> str | None:
        return self.card.parent.uri if self.card.parent else None

    def summary(self) -> dict[str, Any]:
        """A flat, JSON-able row (what ``flotilla models list --json`` prints)."""
        return {
            "model": self.location.name,
            "uri": self.location.uri,
            "family": self.family,
            "tasks": list(self.tasks),
            "metrics": dict(self.card.metrics),
            "data_commit": self.card.data.commit,
            "data_ref": self.card.data.ref,
            "trained_at": self.card.created,
            "parent": self.parent,
            "aliases": list(self.aliases),
        }


def aliases_by_run(repo: Repo, ref: str) -> dict[str, list[str]]:
    """run id → the aliases whose current target is that run."""
    out: dict[str, list[str]] = {}
    for a in list_aliases(repo, ref):
        out.setdefault(a.current.run_id, []).append(a.address)
    return out


def list_models(
    hub: Hub, repo: str, ref: str = "main", *, family: str | None = None, task: str | None = None
) -> list[ModelEntry]:
    """Every model on ``ref`` (newest first), optionally of one family or with one task."""
    r = hub.repo(repo)
    commit = r.resolve(ref)
    named = aliases_by_run(r, commit)
    entries = [ModelEntry(loc, card, tuple(named.get(loc.run_id, ()))) for loc, card in read_cards(r, model_locations(r, commit))]
    entries = [e for e in entries if (family is None or e.family == family) and (task is None or task in e.tasks)]
    return sorted(entries, key=lambda e: (e.card.created, e.location.path), reverse=True)


def show(hub: Hub, address: str, repo: str) -> ModelEntry:
    """One model by any address (URI, run id, ``family@alias``), with the aliases main gives it now."""
    loc = resolve(hub, address, repo)
    r = hub.repo(loc.repo)
    try:
        named = aliases_by_run(r, "main")
    except FlotillaError:  # a repository without main still shows the model
        named = {}
    return ModelEntry(loc, read_card(r, loc), tuple(named.get(loc.run_id, ())))
