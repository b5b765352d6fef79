"""The registry's verbs on a :class:`~flotilla.hub.client.Hub`: promote a model to an alias, roll one back."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flotilla.registry.aliases import Alias, AliasTarget, move_alias, rollback_alias
from flotilla.registry.cards import read_card
from flotilla.registry.lookup import resolve

if TYPE_CHECKING:
    from flotilla.hub.client import Hub


def promote(hub: Hub, model: str, alias: str, *, repo: str, into: str = "main", reason: str = "") -> Alias:
    """Point ``<family>@<alias>`` at ``model``'s run (any address); the family is the one its card names.

    The run's models must be on ``into`` already (an alias points at what main holds, so every
    reader of main can load it).
    """
    loc = resolve(hub, model, repo)
    r = hub.repo(loc.repo)
    family = str(read_card(r, loc).config.get("name", ""))
    return move_alias(r, family, alias, loc.run_id, into=into, reason=reason)


def rollback(hub: Hub, family: str, alias: str, *, repo: str, into: str = "main", reason: str = "") -> tuple[AliasTarget, Alias]:
    """Move ``family@alias`` back to the model it named before; return the target it left and the alias now."""
    return rollback_alias(hub.repo(repo), family, alias, into=into, reason=reason)
