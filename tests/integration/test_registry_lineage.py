"""The lineage graph against a real lakeFS: data commits and the ingest and label fix that made them, parents, descendants.

The dataset is real (ingested and gated), and so are the label fixes (``flotilla.data.relabel``, and a
user's own branch merged by ``validate_and_merge`` as ``flotilla data validate --merge`` does). The models are real
folders with real cards but untrained weights, as in ``test_registry_aliases.py``: what is under
test is what the graph reads back from the hub; the trained path is ``test_registry_e2e.py``.
"""

from __future__ import annotations

import uuid

import pyarrow as pa
import pytest
from tests.integration.helpers import put_model
from typer.testing import CliRunner

from flotilla import registry
from flotilla.cli import app
from flotilla.data import layout, relabel
from flotilla.data.api import generate
from flotilla.data.ingest import validate_and_merge
from flotilla.data.store import read_labels
from flotilla.data.validate import Thresholds
from flotilla.registry import EdgeKind, NodeKind, Role

pytestmark = pytest.mark.integration

SMALL = Thresholds(min_group_count=3, representativeness="warning")


@pytest.fixture(scope="module")
def repo(hub):
    """One repository for the module, not one per test: building the family in it is most of the module's time.

    Tests add to main after it (a gated fix, an edit, a model whose parent is gone) but never move what r1-r4
    read or made, which is all the others look at; a test that needs main as the family left it makes its own."""
    name = f"t-lineage-{uuid.uuid4().hex[:8]}"
    yield hub.ensure_repo(name)
    hub.delete_repo(name)


@pytest.fixture(scope="module")
def family(hub, repo, tmp_path_factory):
    """r1 on data A (the ingest); a label fix makes B; r2 transferred from r1 on B; r3 from r2; r4 unrelated."""
    reports = tmp_path_factory.mktemp("reports")
    generate(hub, repo.name, "faces", 160, seed=1, thresholds=SMALL, report_dir=reports)
    a = repo.resolve("main")
    r1_at = put_model(repo, "r1", data_commit=a)
    labels = read_labels(repo, a, "faces")
    swap = {r["sample_id"]: {"gender": 1 - r["gender"]} for r in labels.slice(0, 2).to_pylist()}
    b = relabel(hub, repo.name, "faces", swap, reason="two genders swapped").merge_commit
    r2_at = put_model(repo, "r2", data_commit=b, parent=(r1_at, "r1"))
    put_model(repo, "r3", data_commit=b, parent=(r2_at, "r2"))
    put_model(repo, "r4", data_commit=b)
    registry.promote(hub, "r2", "production", repo=repo.name)
    return a, b


def test_the_child_shows_its_parent_both_data_commits_and_the_label_fix(hub, repo, family):
    a, b = family
    g = registry.lineage_graph(hub, "r2", repo=repo.name)
    assert g.node(g.subject).location.run_id == "r2" and g.node(g.subject).aliases == ("fam@production",)
    assert [m.location.run_id for m in g.models(Role.ANCESTOR)] == ["r1"]
    assert [m.location.run_id for m in g.models(Role.DESCENDANT)] == ["r3"]  # r4 has no parent: not here
    assert {d.commit for d in g.data()} == {a, b}
    da, db = (next(d for d in g.data() if d.commit == c) for c in (a, b))
    assert registry.Edge(da.key, db.key, EdgeKind.THEN) in g.edges  # B's history passes through A
    # the label fix is the gate's merge (it made B), with the edit and the receipt it brought in
    fix = next(c for c in g.changes() if c.kind is NodeKind.LABEL_FIX)
    assert fix.id == b and fix.message == "Merge validated dataset faces"
    assert [v.message for v in fix.via] == ["Validation passed for faces", "Fix 2 label(s) of faces: two genders swapped"]
    assert fix.samples == 2 and fix.labels_changed == (("gender", 2),)
    ingest = next(c for c in g.changes() if c.kind is NodeKind.INGEST)
    assert ingest.id == a and ingest.samples == 160
    changed = {(e.source, e.target) for e in g.edges if e.kind is EdgeKind.CHANGED}
    assert changed == {(fix.key, db.key), (ingest.key, da.key)}  # each change once, by the first data it made
    runs = {r.run_id: r for r in g.runs()}
    assert set(runs) == {"r1", "r2"} and runs["r2"].git_sha.startswith("r2sha") and runs["r2"].branch == "exp-r2"
    assert registry.Edge(da.key, runs["r1"].key, EdgeKind.READ) in g.edges
    assert registry.Edge(db.key, runs["r2"].key, EdgeKind.READ) in g.edges
    r1 = g.models(Role.ANCESTOR)[0]
    assert registry.Edge(r1.key, g.subject, EdgeKind.TRANSFER) in g.edges
    # the same model by alias is the same graph (its location may be pinned at another commit of main)
    by_alias = registry.lineage_graph(hub, "fam@production", repo=repo.name)
    assert by_alias.edges == g.edges and [n.key for n in by_alias.nodes] == [n.key for n in g.nodes]


def test_the_parent_lists_its_descendants_and_only_its_own_data(hub, repo, family):
    a, _ = family
    g = registry.lineage_graph(hub, "r1", repo=repo.name)
    kids = {m.location.run_id: m for m in g.models(Role.DESCENDANT)}
    assert set(kids) == {"r2", "r3"} and kids["r2"].aliases == ("fam@production",)
    assert registry.Edge(g.subject, kids["r2"].key, EdgeKind.TRANSFER) in g.edges
    assert registry.Edge(kids["r2"].key, kids["r3"].key, EdgeKind.TRANSFER) in g.edges  # a grandchild
    assert [d.commit for d in g.data()] == [a] and not g.models(Role.ANCESTOR)
    assert [c.kind for c in g.changes()] == [NodeKind.INGEST]  # the later label fix is not in r1's history


def test_a_fix_through_the_gate_and_a_direct_commit_are_changes_too(hub, repo, family):
    """A user's own branch merged by 'data validate --merge' is a label fix; a plain commit to the data is an edit."""
    _, b = family
    repo.create_branch("mine", "main")
    labels = read_labels(repo, "mine", "faces")
    ages = labels.column("age").to_numpy().copy()
    ages[0] = 33.0
    repo.put(
        "mine",
        layout.labels_path("faces"),
        layout.encode_labels(labels.set_column(labels.schema.get_field_index("age"), "age", pa.array(ages, pa.float32()))),
    )
    _, gated = validate_and_merge(hub, repo.name, "mine", "faces", thresholds=SMALL, merge=True)
    repo.put("main", "datasets/faces/NOTES.txt", b"who labelled what")
    head = repo.commit("main", "a note beside the data").id
    changes = registry.dataset_history(repo, head, "faces")
    assert [(c.kind, c.id) for c in changes] == [
        (NodeKind.EDIT, head), (NodeKind.LABEL_FIX, gated), (NodeKind.LABEL_FIX, b), (NodeKind.INGEST, changes[-1].id)
    ]  # fmt: skip
    assert [v.message for v in changes[1].via] == ["Validation passed for faces", "Changes to faces before validation"]
    assert changes[1].samples is None and changes[2].samples == 2
    assert [c.kind for c in registry.dataset_history(repo, head, "faces", limit=1)] == [NodeKind.EDIT]


def test_cli_prints_the_tree_and_writes_the_page_and_png(hub, repo, hub_settings, family, tmp_path):
    a, b = family
    env = {"FLOTILLA_HOME": str(hub_settings.home), "FLOTILLA_HUB_PORT": str(hub_settings.hub_port), "COLUMNS": "200"}
    out = CliRunner().invoke(app, ["models", "lineage", "r2", "--repo", repo.name, "--out", str(tmp_path / "pics")], env=env)
    assert out.exit_code == 0, out.output
    text = out.output
    assert text.startswith("model r2/family ★ fam@production") and "model r1/family (parent" in text
    assert f"label fix {b[:12]}" in text and f"ingest {a[:12]}" in text and "model r3/family" in text
    page, png = tmp_path / "pics" / "lineage-r2-family.html", tmp_path / "pics" / "lineage-r2-family.png"
    assert str(page) in text.replace("\n", "") and str(png) in text.replace("\n", "")
    html = page.read_text()
    assert a in html and b in html and "models/r1/family/model.pt" in html and "★ fam@production" in html
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    missing = CliRunner().invoke(app, ["models", "lineage", "nope", "--repo", repo.name, "--out", str(tmp_path / "x")], env=env)
    assert missing.exit_code == 1 and "error:" in missing.output and "no model of run 'nope'" in missing.output
    assert "Traceback" not in missing.output and not (tmp_path / "x").exists()


def test_a_parent_whose_card_is_gone_ends_the_chain_with_a_note(hub, repo, family):
    _, b = family
    put_model(repo, "r5", data_commit=b, parent=(b, "gone"))  # its parent was never on the hub (or was deleted)
    g = registry.lineage_graph(hub, "r5", repo=repo.name)
    (gone,) = g.models(Role.ANCESTOR)
    assert gone.location.path == "models/gone/family/model.pt" and "card unreadable" in gone.note
    assert registry.Edge(gone.key, g.subject, EdgeKind.TRANSFER) in g.edges and not g.incoming(gone.key)
    assert "models/gone/family/model.pt" in registry.lineage_html(g)
