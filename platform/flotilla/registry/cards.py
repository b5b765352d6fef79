"""Reading model cards back from the hub: one card, or every card of a run or of a ref.

A model's ``card.json`` (written once, beside its weights, by :mod:`flotilla.training.publish`) is
the registry's record: there is no second database to drift from it. Cards are small, so listing a
ref reads them all, a few at a time in parallel.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from flotilla.errors import NotFoundError, SpecError
from flotilla.lineage import ModelCard
from flotilla.registry.address import CARD, MODELS_PREFIX, WEIGHTS, ModelLocation

if TYPE_CHECKING:
    from flotilla.hub.repo import Repo


def read_card(repo: Repo, location: ModelLocation) -> ModelCard:
    """The card beside ``location``'s weights; a SpecError naming the file when it is not a card."""
    path = location.directory + CARD
    raw = repo.get(location.commit, path)
    try:
        return ModelCard.from_dict(json.loads(raw))
    except (ValueError, KeyError, TypeError) as exc:
        raise SpecError(
            f"{location.repo}/{location.commit[:12]}/{path} is not a readable model card ({type(exc).__name__}: {exc})",
            hint="a card is written by flotilla when it publishes a model; restore it from the model's own commit",
        ) from None


def model_locations(repo: Repo, commit: str, prefix: str = MODELS_PREFIX) -> list[ModelLocation]:
    """Every model (a folder with weights and a card) under ``prefix`` at ``commit``, sorted by path."""
    paths = {o.path for o in repo.list(commit, prefix)}
    return [
        ModelLocation(repo.name, commit, p)
        for p in sorted(paths)
        if p.endswith("/" + WEIGHTS) and p.count("/") == 3 and p[: -len(WEIGHTS)] + CARD in paths
    ]


def read_cards(repo: Repo, locations: list[ModelLocation]) -> list[tuple[ModelLocation, ModelCard]]:
    """The cards of ``locations``, read a few at a time; a model whose card is unreadable is left out."""

    def one(loc: ModelLocation) -> tuple[ModelLocation, ModelCard] | None:
        try:
            return loc, read_card(repo, loc)
        except SpecError:
            return None

    with ThreadPoolExecutor(max_workers=8) as pool:
        return [r for r in pool.map(one, locations) if r is not None]


def run_cards(repo: Repo, commit: str, run_id: str) -> list[tuple[ModelLocation, ModelCard]]:
    """Every model of run ``run_id`` at ``commit``; NotFoundError when the run has none there."""
    found = read_cards(repo, model_locations(repo, commit, f"{MODELS_PREFIX}{run_id}/"))
    if not found:
        raise NotFoundError(
            f"no model of run {run_id!r} at commit {commit[:12]} of {repo.name!r}",
            hint="an alias points at models on its branch (main): merge the run first "
            "(merge_into: main in its spec, or repo.merge('exp-<run>', 'main'))",
        )
    return found
