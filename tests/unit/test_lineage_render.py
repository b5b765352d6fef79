"""The lineage pictures of a hand-built graph: columns, layout, the tree, the page and the PNG (pure logic, no hub)."""

import re
import xml.etree.ElementTree as ET

from rich.console import Console

from flotilla.registry import (
    ChangeNode,
    DataNode,
    Edge,
    EdgeKind,
    LineageGraph,
    ModelLocation,
    ModelNode,
    NodeKind,
    Role,
    RunNode,
    lineage_html,
    lineage_tree,
    write_lineage,
)
from flotilla.registry.render import layout, ranks

A, B = "a" * 64, "b" * 64
INGEST, FIX = "1" * 64, "2" * 64


def model(run: str, role: Role, *, aliases=(), data=A) -> ModelNode:
    loc = ModelLocation("faces", "c" * 64, f"models/{run}/family/model.pt")
    return ModelNode(loc, role, "fam", (("age/mae", 4.25),), tuple(aliases), "2026-12-01T00:00:00Z", data)


def graph() -> LineageGraph:
    """parent (on A) → child (on B, the subject) → grandchild; B is A plus a label fix."""
    ingest = ChangeNode("faces", INGEST, NodeKind.INGEST, "faces", "Merge validated dataset faces", 1_800_000_000, 160)
    fix = ChangeNode("faces", FIX, NodeKind.LABEL_FIX, "faces", "fix [/red] labels", 1_800_000_100)
    da = DataNode("faces", A, "faces", "main", "Merge validated dataset faces", 1_800_000_000)
    db = DataNode("faces", B, "faces", "main", "Merge validated dataset faces", 1_800_000_100)
    r1 = RunNode("faces", "r1", "exp-r1", "f" * 40, "2026-12-01")
    r2 = RunNode("faces", "r2", "exp-r2", "e" * 40, "2026-12-02")
    parent, child, grand = (
        model("r1", Role.ANCESTOR),
        model("r2", Role.SUBJECT, aliases=["fam@production"]),
        model("r3", Role.DESCENDANT),
    )
    edges = [
        Edge(r2.key, child.key, EdgeKind.PRODUCED), Edge(db.key, r2.key, EdgeKind.READ),
        Edge(r1.key, parent.key, EdgeKind.PRODUCED), Edge(da.key, r1.key, EdgeKind.READ),
        Edge(parent.key, child.key, EdgeKind.TRANSFER), Edge(child.key, grand.key, EdgeKind.TRANSFER),
        Edge(ingest.key, da.key, EdgeKind.CHANGED), Edge(da.key, db.key, EdgeKind.THEN), Edge(fix.key, db.key, EdgeKind.CHANGED),
    ]  # fmt: skip
    return LineageGraph(child.key, (child, r2, db, parent, r1, da, grand, ingest, fix), tuple(edges))


def test_columns_follow_the_flow_and_a_change_sits_next_to_its_data_commit():
    g = graph()
    rank = ranks(g)
    key = {n.title.split()[-1] if n.kind is not NodeKind.MODEL else n.location.run_id: n.key for n in g.nodes}
    col = {k: rank[v] for k, v in key.items()}
    assert col[INGEST[:12]] < col[A[:12]] < col["r1"] < col["r2"] < col["r3"]
    assert col[A[:12]] < col[B[:12]] < col["r2"]  # B grew from A
    assert col[FIX[:12]] == col[B[:12]] - 1  # pulled right next to what it changed, not left in column 0
    assert all(rank[e.source] < rank[e.target] for e in g.edges)


def test_layout_boxes_never_overlap_and_every_edge_runs_left_to_right():
    lay = layout(graph())
    boxes = list(lay.boxes.values())
    for i, p in enumerate(boxes):
        assert p.x >= 0 and p.y >= 0 and p.x + p.w <= lay.width and p.y + p.h <= lay.height
        for q in boxes[i + 1 :]:
            apart = p.x + p.w <= q.x or q.x + q.w <= p.x or p.y + p.h <= q.y or q.y + q.h <= p.y
            assert apart, (p.node.title, q.node.title)
    assert all(a[0] < b[0] for _, a, b in lay.edges)
    assert all(len(line) <= 39 for b in boxes for line in b.lines)
    assert min(b.y for b in boxes) >= 40  # below the caption


def test_the_tree_reads_from_the_model_outwards_and_names_a_shared_node_once():
    console = Console(record=True, width=200)
    console.print(lineage_tree(graph()))
    text = console.export_text()
    lines = text.splitlines()
    assert lines[0].startswith("model r2/family ★ fam@production")
    order = [
        next(i for i, line in enumerate(lines) if s in line)
        for s in ("run r2", f"data faces @ {B[:12]}", "label fix", "run r1", "descendants", "model r3/family")
    ]
    assert order == sorted(order), text
    assert "fix [/red] labels" in text  # a commit message is text, not markup
    assert text.count(f"data faces @ {A[:12]}") == 2 and "shown above" in text  # reached twice, drawn once


def test_the_page_is_self_contained_svg_with_every_full_id(tmp_path):
    page = lineage_html(graph())
    svg = re.search(r"<svg.*</svg>", page, re.S)
    assert svg is not None
    root = ET.fromstring(svg.group(0))  # well-formed: every message is escaped
    assert len(root.findall(".//{http://www.w3.org/2000/svg}rect")) == 9
    assert len(root.findall(".//{http://www.w3.org/2000/svg}path")) == 9 + 1  # the edges and the arrow head
    for full in (A, B, INGEST, FIX, "lakefs://faces/" + "c" * 64 + "/models/r2/family/model.pt"):
        assert full in page
    assert "★ fam@production" in page and "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_write_lineage_writes_the_page_and_a_real_png(tmp_path):
    page, png = write_lineage(graph(), tmp_path / "out")
    assert page.name == "lineage-r2-family.html" and png.name == "lineage-r2-family.png"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 1000 and height > 200  # five columns of boxes
