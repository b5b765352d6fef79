"""The registry end to end, on really trained models: a parent, a child transferred from it through
an alias, a label fix in the data; then list, aliases, rollback, lineage, stale and reproduce as a user
runs them (the CLI in its own process, against the same hub)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from tests.integration.helpers import tiny

from flotilla import registry
from flotilla.data import generate, read_labels, relabel
from flotilla.data.validate import Thresholds
from flotilla.training import train

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
REPO = "registry-e2e"


@pytest.fixture(scope="module")
def data_repo(hub):
    hub.ensure_repo(REPO)
    generate(hub, REPO, "faces", 600, seed=7, thresholds=Thresholds(min_group_count=3))
    yield hub.repo(REPO)
    hub.delete_repo(REPO)


def spec(**over):
    """One worker, no W&B: what is under test is what the registry makes of the models, not how they trained."""
    one = {"scaling": {"workers": 1}, "tracking": {"wandb": False}}
    return tiny("fam", data={"repo": REPO}, epochs=1, merge_into="main", alias="production", **one, **over)


@pytest.fixture(scope="module")
def family_tree(hub, data_repo, local_ray):
    parent = train(spec(), hub=hub)
    child = train(spec(transfer={"source": "fam@production", "load_heads": True}), hub=hub)
    return parent, child


@pytest.fixture
def flotilla_cli(hub_settings):
    env = {**os.environ, "FLOTILLA_HOME": str(hub_settings.home), "FLOTILLA_HUB_PORT": str(hub_settings.hub_port),
           "COLUMNS": "250"}  # fmt: skip

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "flotilla.cli", *args], env=env, capture_output=True, text=True, timeout=300)

    return run


def test_a_child_transferred_through_an_alias_takes_it_and_rollback_restores_the_parent(
    family_tree, hub, data_repo, flotilla_cli
):
    parent, child = family_tree
    assert parent.alias == child.alias == "fam@production"
    alias = registry.get_alias(data_repo, "fam", "production")
    assert [t.run_id for t in alias.history] == [parent.run_id, child.run_id]
    child_card = registry.show(hub, f"{child.run_id}", REPO).card
    assert child_card.parent is not None and child_card.parent.path == f"models/{parent.run_id}/family/model.pt"
    # the user's view: both models, the alias on the child
    listed = flotilla_cli("models", "list", "--repo", REPO, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["model"]: r for r in json.loads(listed.stdout)}
    assert rows[f"{child.run_id}/family"]["aliases"] == ["fam@production"]
    assert rows[f"{parent.run_id}/family"]["aliases"] == [] and rows[f"{child.run_id}/family"]["parent"]
    table = flotilla_cli("models", "list", "--repo", REPO)
    assert table.returncode == 0 and "fam@production" in table.stdout and parent.run_id[:20] in table.stdout
    # rollback: the alias names the parent again, and the command says which data it was trained on
    rolled = flotilla_cli("models", "rollback", "fam@production", "--repo", REPO)
    assert rolled.returncode == 0, rolled.stderr
    assert parent.run_id in rolled.stdout and parent.data.commit in rolled.stdout
    assert registry.resolve(hub, "fam@production", REPO).run_id == parent.run_id
    again = flotilla_cli("models", "rollback", "fam@production", "--repo", REPO)
    assert again.returncode == 1 and "no earlier model to roll back to" in again.stderr


def test_a_label_fix_makes_the_parent_and_its_child_stale(family_tree, hub, data_repo, flotilla_cli):
    parent, child = family_tree
    labels = read_labels(data_repo, "main", "faces")
    ids, genders = labels.column("sample_id").to_pylist(), labels.column("gender").to_pylist()
    fixes = {sid: {"gender": 1 - g} for sid, g in zip(ids, genders, strict=True) if g is not None}
    fix = relabel(hub, REPO, "faces", dict(list(fixes.items())[:25]), reason="25 genders were flipped at import")
    out = flotilla_cli("models", "stale", "--since", fix.merge_commit, "--repo", REPO, "--json")
    assert out.returncode == 0, out.stderr
    stale = {m["model"]: m for m in json.loads(out.stdout)["stale"]}
    p, c = f"{parent.run_id}/family", f"{child.run_id}/family"
    assert set(stale) == {p, c}
    assert stale[p]["change"]["labels_changed"] == {"gender": 25} and stale[p]["data_commit"] == parent.data.commit
    assert c in stale[p]["descendants"]  # the child is stale through its parent too


def test_the_childs_lineage_shows_its_parent_and_both_data_commits(family_tree, hub, flotilla_cli, tmp_path):
    parent, child = family_tree
    g = registry.lineage_graph(hub, child.run_id, repo=REPO)
    assert [m.location.run_id for m in g.models(registry.Role.ANCESTOR)] == [parent.run_id]
    assert {d.commit for d in g.data()} == {parent.data.commit, child.data.commit} and parent.data.commit != child.data.commit
    assert {r.run_id for r in g.runs()} == {parent.run_id, child.run_id}
    assert [
        m.location.run_id for m in registry.lineage_graph(hub, parent.run_id, repo=REPO).models(registry.Role.DESCENDANT)
    ] == [child.run_id]
    out = flotilla_cli("models", "lineage", child.run_id, "--repo", REPO, "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / f"lineage-{child.run_id}-family.html").read_text().count(parent.data.commit) >= 1
    assert (tmp_path / f"lineage-{child.run_id}-family.png").read_bytes()[:4] == b"\x89PNG"
