"""Is a model's card the one that was published? Checked against the commit that published it.

A card is an ordinary file on main: anyone can commit an edit to it. Its data commit is what
``stale`` compares and what ``reproduce`` trains on, so a card edited to point at other data would
make a model look fresh, or "reproduce" a model that never existed. The commit that published the
model is the anchor: it carries the run, the model, the data commit and the git sha in its
metadata (:class:`~flotilla.lineage.ModelCommit`), and commits cannot be edited. lakeFS finds it by
the card's path in the history of the model's commit (through the merge that promoted it), and the
card read now must agree with it and with the card that commit wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flotilla.errors import LineageError, NotFoundError
from flotilla.lineage import ModelCard, ModelCommit, read_commit
from flotilla.registry.address import CARD, ModelLocation
from flotilla.registry.cards import read_card

if TYPE_CHECKING:
    from flotilla.hub.repo import Repo

CARD_EDITS = 50
"""How many later commits to the same card are looked through for the one that published it."""


@dataclass(frozen=True)
class VerifiedCard:
    """A card that agrees with the commit that published it (``published``, on the model's branch)."""

    location: ModelLocation
    card: ModelCard
    published: str
    record: ModelCommit


def verify_card(repo: Repo, location: ModelLocation) -> VerifiedCard:
    """The card at ``location``, checked against the model commit that published it.

    Raises :class:`LineageError` naming both commits when the card's run, model, data (repository,
    commit) or git sha differ from that commit's metadata, or when the card was edited since it was
    published; and when no commit in the model's history published it. Raises ``NotFoundError``
    when the card names a data commit the repository does not have.
    """
    card = read_card(repo, location)
    path = location.directory + CARD
    where = f"{location.repo}/{location.commit[:12]}/{path}"
    if (card.run_id, card.model) != (location.run_id, location.model):
        raise LineageError(
            f"{where} is the card of {card.run_id}/{card.model}, not of the model beside it ({location.name})",
            hint="a card belongs to the folder its model was published in; restore the card from the model's own commit",
        )
    published = _publishing_commit(repo, location, card)
    if published is None:
        raise LineageError(
            f"no commit in the history of {location.commit[:12]} published {where} "
            f"(no model commit of run {card.run_id!r}, model {card.model!r} wrote it)",
            hint="a model is published by flotilla's training, which commits its card with its lineage in the "
            "commit's metadata; a card copied in by hand cannot be verified: train the model again",
        )
    commit_id, record = published
    mismatches = _mismatches(card, record, location.repo)
    if not mismatches and commit_id != location.commit:
        original = read_card(repo, ModelLocation(location.repo, commit_id, location.path))
        mismatches = [f"{key} was edited" for key in _edited(original.to_dict(), card.to_dict())]
    if mismatches:
        raise LineageError(
            f"the card {where} does not match the commit that published the model ({commit_id[:12]}): " + "; ".join(mismatches),
            hint=f"the card was edited after it was published; restore it from {commit_id[:12]} "
            f"(repo.get({commit_id[:12]!r}, {path!r})), or train a new model on the data you meant",
        )
    _require_data_commit(repo, card, where)
    return VerifiedCard(location, card, commit_id, record)


def _publishing_commit(repo: Repo, location: ModelLocation, card: ModelCard) -> tuple[str, ModelCommit] | None:
    """The newest commit that wrote the card and whose metadata is this model's :class:`ModelCommit`."""
    for c in repo.log(location.commit, limit=CARD_EDITS, prefix=location.directory + CARD):
        record = read_commit(c.metadata)
        if isinstance(record, ModelCommit) and (record.run_id, record.model) == (card.run_id, card.model):
            return c.id, record
    return None


def _mismatches(card: ModelCard, record: ModelCommit, repo: str) -> list[str]:
    found = []
    if card.data.repo != repo:
        found.append(f"the card's data repository is {card.data.repo!r}, the model was published in {repo!r}")
    if card.data.commit != record.data_commit:
        found.append(f"the card's data commit is {card.data.commit[:12]}, the model was trained on {record.data_commit[:12]}")
    sha = str(card.code.get("git_sha", ""))
    if sha != record.git_sha:
        found.append(f"the card's git sha is {sha[:12] or '(none)'}, the model was trained by {record.git_sha[:12]}")
    return found


def _edited(original: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """The keys (dotted, one level into nested blocks) whose values differ between two cards."""
    out = []
    for key in sorted(set(original) | set(now)):
        a, b = original.get(key), now.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict) and not prefix:
            out += _edited(a, b, f"{key}.")
        else:
            out.append(prefix + key)
    return out


def _require_data_commit(repo: Repo, card: ModelCard, where: str) -> None:
    """The card's data commit must be a commit id of the repository (not a ref, which moves)."""
    try:
        resolved = repo.resolve(card.data.commit)
    except NotFoundError:
        raise NotFoundError(
            f"the data commit {card.data.commit!r} of {where} does not exist in repository {repo.name!r}",
            hint="the data may have been garbage-collected or the repository recreated; the model cannot be "
            "re-run on the data it read",
        ) from None
    if resolved != card.data.commit:
        raise LineageError(
            f"{where} names its data as {card.data.commit!r}, which is a ref (now at {resolved[:12]}), not a commit id",
            hint="a model's data is pinned by commit id when it trains; restore the card from the model's own commit",
        )
