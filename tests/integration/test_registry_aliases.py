"""Aliases and the catalog against a real lakeFS: moves, rollback, concurrent moves, addresses.

The models here are real folders on main with real cards (written through ``ModelCard``) but
untrained weights: what is under test is the registry's bookkeeping; the trained path is
``test_registry_e2e.py``.
"""

from __future__ import annotations

import pytest
from tests.integration.helpers import put_model

from flotilla import registry
from flotilla.errors import ConflictError, NotFoundError, SpecError
from flotilla.lineage import AliasMove, read_commit

pytestmark = pytest.mark.integration


def test_an_alias_moves_rolls_back_and_every_address_names_the_same_model(hub, repo):
    put_model(repo, "r1", data_commit="1" * 64)
    put_model(repo, "r2", data_commit="2" * 64)
    registry.promote(hub, "r1", "production", repo=repo.name, reason="first")
    alias = registry.promote(hub, "r2", "production", repo=repo.name)
    assert [t.run_id for t in alias.history] == ["r1", "r2"] and alias.current.data_commit == "2" * 64
    # one model, three spellings
    by_alias = registry.resolve(hub, "fam@production", repo.name)
    assert (by_alias.path, by_alias.model, by_alias.run_id) == ("models/r2/family/model.pt", "family", "r2")
    assert registry.resolve(hub, "r2", repo.name).path == by_alias.path
    assert registry.resolve(hub, by_alias.uri, repo.name) == by_alias
    # the catalog shows the alias on its model only, newest first
    rows = {e.location.run_id: e for e in registry.list_models(hub, repo.name)}
    assert rows["r2"].aliases == ("fam@production",) and rows["r1"].aliases == ()
    assert registry.show(hub, "fam@production", repo.name).card.run_id == "r2"
    # every move is one commit on main that says what it did
    md = repo.commit_info("main").metadata
    assert read_commit(md) == AliasMove("fam", "production", "r2", "r1", "promote")
    left, now = registry.rollback(hub, "fam", "production", repo=repo.name)
    assert left.run_id == "r2" and now.current.run_id == "r1" and now.current.data_commit == "1" * 64
    assert [t.run_id for t in now.retired] == ["r2"]
    assert read_commit(repo.commit_info("main").metadata).action == "rollback"
    with pytest.raises(ConflictError, match="no earlier model to roll back to"):
        registry.rollback(hub, "fam", "production", repo=repo.name)
    assert not [b for b in repo.branches() if b.startswith("alias-")], "a scratch branch was left behind"


def test_two_concurrent_moves_of_one_alias_one_wins_the_other_is_refused(hub, repo):
    put_model(repo, "r1")
    put_model(repo, "r2")
    put_model(repo, "r3")
    registry.promote(hub, "r1", "staging", repo=repo.name)
    first = registry.AliasChange(repo, "fam", "staging").start()
    second = registry.AliasChange(repo, "fam", "staging").start()  # both read r1 as current
    first.to_run("r2")
    second.to_run("r3")
    first.finish()
    with pytest.raises(ConflictError) as err:
        second.finish()
    assert "moved by someone else" in err.value.message and "retry" in err.value.hint
    assert registry.get_alias(repo, "fam", "staging").current.run_id == "r2"  # the winner, untouched
    assert [t.run_id for t in registry.get_alias(repo, "fam", "staging").history] == ["r1", "r2"]
    assert not [b for b in repo.branches() if b.startswith("alias-")]


def test_bad_alias_requests_are_clear_and_change_nothing(hub, repo):
    put_model(repo, "r1", family="fam")
    put_model(repo, "o1", family="other")
    head = repo.resolve("main")
    with pytest.raises(NotFoundError, match=r"no alias fam@production") as err:
        registry.resolve(hub, "fam@production", repo.name)
    assert "flotilla models promote" in err.value.hint
    with pytest.raises(SpecError, match="trained family 'other', not 'fam'"):
        registry.move_alias(repo, "fam", "production", "o1")
    with pytest.raises(NotFoundError, match="no model of run 'nope'"):
        registry.promote(hub, "nope", "production", repo=repo.name)
    from flotilla.errors import InvalidNameError

    with pytest.raises(InvalidNameError, match="invalid alias name"):
        registry.move_alias(repo, "fam", "../main", "r1")
    assert repo.resolve("main") == head and not [b for b in repo.branches() if b.startswith("alias-")]
