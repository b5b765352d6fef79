"""Which model a transfer source names, against a real lakeFS: run ids, '<run>/<model>', URIs."""

from __future__ import annotations

import pytest

from flotilla.errors import NotFoundError, SpecError
from flotilla.registry import resolve as resolve_model

pytestmark = pytest.mark.integration


def test_a_run_of_several_models_must_be_named_down_to_one(hub, repo):
    for model in ("age", "gender"):  # a promoted run of separate models
        repo.put("main", f"models/r1/{model}/model.pt", model.encode())
    main = repo.commit("main", "r1").id
    with pytest.raises(SpecError) as err:
        resolve_model(hub, "r1", repo.name)
    assert "2 models (age, gender)" in err.value.message and "r1/age" in err.value.hint
    loc = resolve_model(hub, "r1/gender", repo.name)
    assert (loc.commit, loc.path) == (main, "models/r1/gender/model.pt")


def test_an_unpromoted_models_branch_is_found_and_a_shared_run_needs_no_model_name(hub, repo):
    repo.create_branch("exp-r2-age", "main")  # separate models train on exp-<run>-<model>
    repo.put("exp-r2-age", "models/r2/age/model.pt", b"w")
    commit = repo.commit("exp-r2-age", "age").id
    for source in ("r2", "r2/age"):
        loc = resolve_model(hub, source, repo.name)
        assert (loc.commit, loc.path) == (commit, "models/r2/age/model.pt"), source
    repo.create_branch("exp-r3", "main")  # a shared-backbone run: one model, 'family'
    repo.put("exp-r3", "models/r3/family/model.pt", b"w")
    repo.put("exp-r3", "models/r3/family/card.json", b"{}")
    repo.commit("exp-r3", "family")
    assert resolve_model(hub, "r3", repo.name).path == "models/r3/family/model.pt"
    with pytest.raises(NotFoundError, match="no model of run 'r4'"):
        resolve_model(hub, "r4", repo.name)
