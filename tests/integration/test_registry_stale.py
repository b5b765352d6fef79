"""``stale``: which models a label fix (or any data change) leaves behind, against a real lakeFS.

Real datasets (generated, gated, merged) and a real label fix (``relabel``); the models are real
folders on main with real cards but untrained weights, as in ``test_registry_aliases.py``: what is
under test is reading lineage off the hub. The trained path is the registry's e2e test.
"""

from __future__ import annotations

import json

import pytest
from tests.integration.helpers import put_model
from typer.testing import CliRunner

from flotilla import registry
from flotilla.cli import app
from flotilla.data import generate, read_labels, relabel
from flotilla.data.report import Thresholds
from flotilla.errors import NotFoundError, SpecError
from flotilla.specs import FamilySpec, parse_spec

pytestmark = pytest.mark.integration

SMALL = Thresholds(min_group_count=3)


@pytest.fixture
def fixed(hub, repo):
    """Two datasets; parent, child and grandchild models trained before a 37-gender label fix; one after it."""
    generate(hub, repo.name, "faces", 240, seed=2, thresholds=SMALL)
    generate(hub, repo.name, "other", 240, seed=3, thresholds=SMALL)
    before = repo.resolve("main")
    put_model(repo, "p1", data_commit=before)
    put_model(repo, "c1", data_commit=before, parent="p1")  # transfer-learned from p1, same data
    put_model(repo, "g1", data_commit=before, dataset="other", parent="c1")  # another dataset, but p1's knowledge
    put_model(repo, "o1", data_commit=before, dataset="other")  # another dataset: no label fix of faces touches it
    labels = read_labels(repo, "main", "faces")
    genders = labels.column("gender").to_pylist()
    ids = labels.column("sample_id").to_pylist()
    fix = relabel(hub, repo.name, "faces", {sid: {"gender": 1 - genders[i]} for i, sid in enumerate(ids[:37])})
    put_model(repo, "n1", data_commit=fix.merge_commit)  # trained after the fix
    return before, fix


def _names(report):
    return {m.name: m for m in report.models}


def test_a_label_fix_makes_the_models_trained_before_it_and_their_descendants_stale(fixed, hub, repo):
    before, fix = fixed
    report = registry.stale(hub, repo.name, since=fix.merge_commit)
    assert report.mode == "since" and report.commit == fix.merge_commit and report.checked == 5
    got = _names(report)
    assert set(got) == {"p1/family", "c1/family", "g1/family"}  # not n1 (has the fix), not o1 (other data)
    p1, c1, g1 = got["p1/family"], got["c1/family"], got["g1/family"]
    assert p1.change is not None and dict(p1.change.labels_changed) == {"gender": 37}
    assert p1.change.describe() == "+0 samples, 37 labels changed (gender 37), 0 shards replaced"
    assert (p1.change.samples_relabelled, p1.change.samples_removed, p1.change.shards_added) == (37, 0, 0)
    assert p1.stale_ancestor is None and p1.descendants == ("c1/family", "g1/family")
    assert c1.change == p1.change and c1.stale_ancestor == "p1/family" and c1.descendants == ("g1/family",)
    assert g1.inherited and g1.stale_ancestor == "c1/family" and g1.describe() == "via c1/family"
    head = repo.resolve("main")
    assert p1.retrain_data == head == g1.retrain_data  # main has the fix: retrain on main as it is now
    # against main: the same models, the same change
    now = registry.stale(hub, repo.name)
    assert now.mode == "ref" and now.commit == head
    assert {n: (m.change and dict(m.change.labels_changed), m.stale_ancestor) for n, m in _names(now).items()} == {
        n: (m.change and dict(m.change.labels_changed), m.stale_ancestor) for n, m in got.items()
    }
    # against the commit the old models read, only the newer model is behind
    assert set(_names(registry.stale(hub, repo.name, ref=before))) == {"n1/family"}
    assert registry.stale(hub, repo.name, since=before).models == ()  # everyone has it


def test_retraining_a_stale_model_warm_starts_from_it_on_the_fixed_data(fixed, hub, repo, monkeypatch, hub_settings):
    _, fix = fixed
    put_model(repo, "s1", data_commit=fixed[0], strategy="separate")  # one task's model of a separate family
    report = registry.stale(hub, repo.name, since=fix.merge_commit)
    p1, s1 = _names(report)["p1/family"], _names(report)["s1/gender"]
    spec = parse_spec(FamilySpec, registry.retrain_spec(p1), "retrain spec")
    assert spec.data.ref == repo.resolve("main") and spec.data.dataset == "faces" and spec.name == "fam"
    assert spec.transfer is not None and spec.transfer.load_heads and spec.transfer.source == p1.entry.location.uri
    assert spec.tasks == ["age", "gender"]
    assert parse_spec(FamilySpec, registry.retrain_spec(s1, fix.merge_commit), "retrain spec").tasks == ["gender"]
    # the CLI pins and shows each job it would submit (--check: nothing reaches a cluster)
    env = {"FLOTILLA_HOME": str(hub_settings.home), "FLOTILLA_HUB_PORT": str(hub_settings.hub_port), "COLUMNS": "250"}
    out = CliRunner().invoke(
        app, ["models", "stale", "--repo", repo.name, "--since", fix.merge_commit, "--retrain", "--check"], env=env
    )
    assert out.exit_code == 0, out.output
    assert "37 labels changed (gender 37)" in out.output and "via c1/family" in out.output
    assert out.output.count("would submit train-retrain-") == 3  # p1, c1 and s1: their own data is stale
    assert "g1/family" in out.output and "retrain it once" in out.output  # a descendant waits for its ancestor


def test_the_cli_prints_json_and_refuses_unknown_commits_cleanly(fixed, hub, repo, hub_settings):
    _, fix = fixed
    env = {"FLOTILLA_HOME": str(hub_settings.home), "FLOTILLA_HUB_PORT": str(hub_settings.hub_port), "COLUMNS": "250"}
    out = CliRunner().invoke(app, ["models", "stale", "--repo", repo.name, "--json"], env=env)
    assert out.exit_code == 0, out.output
    rows = {r["model"]: r for r in json.loads(out.output)["stale"]}
    assert set(rows) == {"p1/family", "c1/family", "g1/family"}
    assert rows["p1/family"]["change"]["labels_changed"] == {"gender": 37}
    assert rows["p1/family"]["descendants"] == ["c1/family", "g1/family"]
    out = CliRunner().invoke(app, ["models", "stale", "--repo", repo.name], env=env)
    assert out.exit_code == 0 and "+0 samples, 37 labels changed (gender 37), 0 shards replaced" in out.output, out.output
    with pytest.raises(NotFoundError, match=r"no commit 'f{64}' in repository") as err:
        registry.stale(hub, repo.name, since="f" * 64)
    assert "relabel() returns it" in err.value.hint
    out = CliRunner().invoke(app, ["models", "stale", "--repo", repo.name, "--since", "f" * 64], env=env)
    assert out.exit_code == 1 and "error:" in out.output and "Traceback" not in out.output
    with pytest.raises(SpecError, match="not both"):
        registry.stale(hub, repo.name, ref="main", since=fix.merge_commit)


def test_a_new_ingest_counts_samples_and_shards_and_an_unreadable_card_does_not_stop_the_check(hub, repo):
    generate(hub, repo.name, "faces", 240, seed=2, thresholds=SMALL)
    old = repo.resolve("main")
    put_model(repo, "p1", data_commit=old)
    put_model(repo, "x1", data_commit="d" * 64)  # a card pointing at a commit that does not exist
    generate(hub, repo.name, "faces", 300, seed=4, thresholds=SMALL)  # re-ingested: other samples, new shard
    change = registry.compare_dataset(repo, "faces", old, repo.resolve("main"))
    assert change is not None and (change.samples_added, change.samples_removed) == (300, 240)
    assert (change.shards_replaced, change.labels_total) == (1, 0)
    report = registry.stale(hub, repo.name)
    assert [m.name for m in report.models] == ["p1/family"] and report.models[0].change == change
    assert [m for m, _ in report.unreadable] == ["x1/family"]
    assert registry.compare_dataset(repo, "faces", old, old) is None
