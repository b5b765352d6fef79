"""Three pictures of one :class:`~flotilla.registry.graph.LineageGraph`: a terminal tree, an HTML page, a PNG.

The tree reads from the model outwards (what it came from, then what came from it), which is how a
person asks. The page and the PNG draw the whole graph left to right in the direction things flowed
(data changes → data commits → runs → models → descendants), from one layout, so they show the same
boxes in the same places. The page is a single file with inline SVG (no scripts, no CDN: it opens
offline and can be attached to a ticket); it lists every node's full ids below the picture.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from graphlib import TopologicalSorter
from pathlib import Path

from rich.markup import escape
from rich.tree import Tree

from flotilla.errors import ConfigError
from flotilla.registry.graph import EdgeKind, LineageGraph, ModelNode, Node, NodeKind, Role

BOX_W = 290.0
LINE_H = 14.0
PAD = 8.0
COL_GAP = 90.0
ROW_GAP = 16.0
MARGIN = 24.0
TITLE_H = 26.0  # a caption above the boxes, so the PNG says what it is on its own
MAX_CHARS = 39  # of an 11px monospace line in a BOX_W box, with room to spare
MAX_LINES = 7

FILL: Mapping[NodeKind, str] = {
    NodeKind.DATA: "#dbeafe",
    NodeKind.INGEST: "#dcfce7",
    NodeKind.LABEL_FIX: "#fef3c7",
    NodeKind.EDIT: "#f3f4f6",
    NodeKind.RUN: "#ede9fe",
    NodeKind.MODEL: "#ffe4e6",
}
RICH: Mapping[NodeKind, str] = {
    NodeKind.DATA: "blue",
    NodeKind.INGEST: "green",
    NodeKind.LABEL_FIX: "yellow",
    NodeKind.EDIT: "white",
    NodeKind.RUN: "magenta",
    NodeKind.MODEL: "red",
}
ALIAS_COLOR = "#15803d"
# upstream first the changes that made a data commit, then the data commit it grew from
_ORDER = {EdgeKind.PRODUCED: 0, EdgeKind.READ: 1, EdgeKind.CHANGED: 2, EdgeKind.THEN: 3, EdgeKind.TRANSFER: 4}
# what an upstream node is to the one above it in the tree
_UPSTREAM = {
    EdgeKind.PRODUCED: "trained it",
    EdgeKind.READ: "its training data",
    EdgeKind.CHANGED: "changed this data",
    EdgeKind.THEN: "the earlier data it grew from",
    EdgeKind.TRANSFER: "parent: started from its weights",
}


# ---- the terminal tree --------------------------------------------------------------------------------
def _rich_label(node: Node, via: str = "") -> str:
    head = f"[bold {RICH[node.kind]}]{escape(node.title)}[/]"
    if isinstance(node, ModelNode) and node.aliases:
        head += " [bold green]★ " + escape(", ".join(node.aliases)) + "[/]"
    if via:
        head += f" [dim]({via})[/]"
    return head + ("\n[dim]" + escape(" · ".join(node.details)) + "[/]" if node.details else "")


def lineage_tree(graph: LineageGraph) -> Tree:
    """The model at the root; under it what it came from (run, data, changes, parents) and its descendants.

    A node reached twice (a data commit two ancestors read) is drawn once and named again after.
    """
    root = Tree(_rich_label(graph.node(graph.subject)))
    drawn = {graph.subject}

    def up(branch: Tree, key: str) -> None:
        for e in sorted(graph.incoming(key), key=lambda e: _ORDER[e.kind]):
            src = graph.node(e.source)
            if src.key in drawn:
                branch.add(f"[dim]{escape(src.title)} ({_UPSTREAM[e.kind]}; shown above)[/]")
                continue
            drawn.add(src.key)
            up(branch.add(_rich_label(src, _UPSTREAM[e.kind])), src.key)

    def down(branch: Tree, key: str) -> None:
        for e in graph.outgoing(key):
            if e.kind is EdgeKind.TRANSFER and e.target not in drawn:
                drawn.add(e.target)
                down(branch.add(_rich_label(graph.node(e.target))), e.target)

    up(root, graph.subject)
    if graph.models(Role.DESCENDANT):
        down(root.add("[bold]descendants[/] [dim](started from this model)[/]"), graph.subject)
    return root


# ---- one layout for the page and the PNG --------------------------------------------------------------
@dataclass(frozen=True)
class Box:
    """A node's box: top-left corner, size, and its lines (title first)."""

    node: Node
    x: float
    y: float
    w: float
    h: float
    lines: tuple[str, ...]

    @property
    def alias_line(self) -> int:
        """Index of the line naming the aliases (drawn green), or -1."""
        return 1 if isinstance(self.node, ModelNode) and self.node.aliases else -1


Point = tuple[float, float]


@dataclass(frozen=True)
class Layout:
    boxes: Mapping[str, Box]
    edges: tuple[tuple[EdgeKind, Point, Point], ...]  # from a box's right edge to the next box's left edge
    width: float
    height: float


def _clip(text: str) -> str:
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 1] + "…"


def box_lines(node: Node) -> tuple[str, ...]:
    aliases = ("★ " + ", ".join(node.aliases),) if isinstance(node, ModelNode) and node.aliases else ()
    lines = (node.title, *aliases, *node.details)[:MAX_LINES]
    return tuple(_clip(x) for x in lines)


def ranks(graph: LineageGraph) -> dict[str, int]:
    """A column per node: after everything it came from, and as far right as what it feeds allows.

    Longest path from the sources first, then every node that feeds something is pulled right to
    just before the earliest thing it feeds, so a label fix sits next to its data commit rather
    than in the first column.
    """
    preds: dict[str, list[str]] = {n.key: [] for n in graph.nodes}
    succs: dict[str, list[str]] = {n.key: [] for n in graph.nodes}
    for e in graph.edges:
        preds[e.target].append(e.source)
        succs[e.source].append(e.target)
    order = list(TopologicalSorter(preds).static_order())  # the builder only links forward: a DAG
    rank: dict[str, int] = {}
    for k in order:
        rank[k] = max((rank[p] + 1 for p in preds[k]), default=0)
    for k in reversed(order):
        if succs[k]:
            rank[k] = min(rank[s] for s in succs[k]) - 1
    return rank


def layout(graph: LineageGraph) -> Layout:
    """Columns by :func:`ranks`; within a column, boxes ordered near what they connect to."""
    rank = ranks(graph)
    ncols = max(rank.values(), default=0) + 1
    columns: list[list[str]] = [[n.key for n in graph.nodes if rank[n.key] == c] for c in range(ncols)]
    neighbours: dict[str, list[str]] = {n.key: [] for n in graph.nodes}
    for e in graph.edges:
        neighbours[e.source].append(e.target)
        neighbours[e.target].append(e.source)
    for _ in range(2):  # a barycentre sweep each way: fewer crossings, still deterministic
        for sweep in (range(ncols), reversed(range(ncols))):
            for c in sweep:
                pos = {k: (i + 0.5) / len(col) for col in columns for i, k in enumerate(col)}
                cur = columns[c]
                columns[c] = sorted(
                    cur,
                    key=lambda k: (
                        sum(pos[o] for o in neighbours[k]) / len(neighbours[k]) if neighbours[k] else pos[k],
                        cur.index(k),
                    ),
                )
    lines = {n.key: box_lines(n) for n in graph.nodes}
    heights = {k: 2 * PAD + LINE_H * len(v) for k, v in lines.items()}
    col_h = [sum(heights[k] for k in col) + ROW_GAP * max(len(col) - 1, 0) for col in columns]
    tallest = max(col_h, default=0.0)
    boxes: dict[str, Box] = {}
    for c, col in enumerate(columns):
        y = MARGIN + TITLE_H + (tallest - col_h[c]) / 2
        for k in col:
            boxes[k] = Box(graph.node(k), MARGIN + c * (BOX_W + COL_GAP), y, BOX_W, heights[k], lines[k])
            y += heights[k] + ROW_GAP
    edges = tuple(
        (e.kind, (boxes[e.source].x + BOX_W, boxes[e.source].y + boxes[e.source].h / 2),
         (boxes[e.target].x, boxes[e.target].y + boxes[e.target].h / 2))
        for e in graph.edges
    )  # fmt: skip
    width = 2 * MARGIN + ncols * BOX_W + (ncols - 1) * COL_GAP
    return Layout(boxes, edges, width, 2 * MARGIN + TITLE_H + tallest)


def caption(graph: LineageGraph) -> str:
    return f"lineage of {graph.node(graph.subject).title}: data changes → data commits → runs → models → descendants"


def curve(a: Point, b: Point) -> tuple[Point, Point, Point, Point]:
    """The cubic Bézier both pictures draw an edge as."""
    dx = max((b[0] - a[0]) / 2, 30.0)
    return a, (a[0] + dx, a[1]), (b[0] - dx, b[1]), b


def _stroke(kind: EdgeKind) -> tuple[str, float, str]:
    """Colour, width and dash of an edge: a transfer stands out, 'then' (same dataset, later) is dashed."""
    if kind is EdgeKind.TRANSFER:
        return "#be123c", 2.2, ""
    if kind is EdgeKind.THEN:
        return "#1d4ed8", 1.4, "5,4"
    return "#6b7280", 1.1, ""


def _border(node: Node) -> tuple[str, float]:
    if isinstance(node, ModelNode) and node.role is Role.SUBJECT:
        return "#111827", 2.6
    return "#9ca3af", 1.0


# ---- the HTML page ------------------------------------------------------------------------------------
def _alias_html(node: Node) -> str:
    return f" <b class=alias>★ {html.escape(', '.join(node.aliases))}</b>" if isinstance(node, ModelNode) and node.aliases else ""


def lineage_html(graph: LineageGraph) -> str:
    """A self-contained page: the graph as inline SVG, a legend, and a table of every node with its full ids."""
    lay = layout(graph)
    e = html.escape
    svg: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{lay.width:.0f}" height="{lay.height:.0f}" '
        f'viewBox="0 0 {lay.width:.0f} {lay.height:.0f}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" '
        'font-size="11">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#6b7280"/></marker></defs>',
    ]
    svg.append(f'<text x="{MARGIN:.0f}" y="{MARGIN + 12:.0f}" font-size="13" font-weight="bold">{e(caption(graph))}</text>')
    for kind, a, b in lay.edges:
        (x0, y0), (x1, y1), (x2, y2), (x3, y3) = curve(a, b)
        colour, width, dash = _stroke(kind)
        svg.append(
            f'<path class="edge {kind.replace(" ", "-")}" d="M{x0:.1f},{y0:.1f} C{x1:.1f},{y1:.1f} {x2:.1f},{y2:.1f} '
            f'{x3:.1f},{y3:.1f}" fill="none" stroke="{colour}" stroke-width="{width}"'
            + (f' stroke-dasharray="{dash}"' if dash else "")
            + ' marker-end="url(#arrow)"><title>'
            + e(str(kind))
            + "</title></path>"
        )
    for box in lay.boxes.values():
        n = box.node
        stroke, sw = _border(n)
        tip = e("\n".join((n.title, n.ident, *n.details)))
        svg.append(f'<g class="node {n.kind}"><title>{tip}</title>')
        svg.append(
            f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.w:.0f}" height="{box.h:.0f}" rx="6" '
            f'fill="{FILL[n.kind]}" stroke="{stroke}" stroke-width="{sw}"/>'
        )
        for i, line in enumerate(box.lines):
            style = ' font-weight="bold"' if i == 0 else ""
            if i == box.alias_line:
                style = f' font-weight="bold" fill="{ALIAS_COLOR}"'
            svg.append(f'<text x="{box.x + PAD:.1f}" y="{box.y + PAD + LINE_H * (i + 0.8):.1f}"{style}>{e(line)}</text>')
        svg.append("</g>")
    svg.append("</svg>")
    subject = graph.node(graph.subject)
    rows = "\n".join(
        f"<tr><td><span class=swatch style='background:{FILL[n.kind]}'></span>{e(str(n.kind))}</td>"
        f"<td>{e(n.title)}{_alias_html(n)}</td>"
        f"<td><code>{e(n.ident)}</code></td><td>{'<br>'.join(e(d) for d in n.details)}</td></tr>"
        for n in graph.nodes
    )
    legend = " ".join(f"<span class=swatch style='background:{FILL[k]}'></span>{e(str(k))}" for k in NodeKind)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lineage of {e(subject.title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #111827; }}
.picture {{ overflow: auto; border: 1px solid #e5e7eb; border-radius: 8px; padding: 8px; }}
table {{ border-collapse: collapse; margin-top: 16px; font-size: 13px; }}
td, th {{ border-bottom: 1px solid #e5e7eb; padding: 4px 8px; text-align: left; vertical-align: top; }}
code {{ font-size: 12px; word-break: break-all; }}
.swatch {{ display: inline-block; width: 12px; height: 12px; border: 1px solid #9ca3af; margin: 0 4px 0 10px; }}
.alias {{ color: {ALIAS_COLOR}; }}
</style></head>
<body>
<h1>Lineage of {e(subject.title)}</h1>
<p><code>{e(subject.ident)}</code></p>
<p>Left to right, as things flowed: changes to the data → data commits → training runs → models →
models started from them. A dashed arrow links a data commit to a later one of the same dataset; a red
arrow is transfer learning (parent → child). The thick box is this model; ★ marks aliases.</p>
<p>{legend}</p>
<div class="picture">
{chr(10).join(svg)}
</div>
<table><tr><th>kind</th><th>node</th><th>id</th><th>details</th></tr>
{rows}
</table>
</body></html>
"""


# ---- the PNG ------------------------------------------------------------------------------------------
def lineage_png(graph: LineageGraph, path: Path) -> Path:
    """The page's picture as a PNG (matplotlib's Agg canvas: no display, no global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
    from matplotlib.path import Path as MplPath

    lay = layout(graph)
    dpi = 100
    fig = Figure(figsize=(lay.width / dpi, lay.height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(0, lay.width)
    ax.set_ylim(lay.height, 0)
    ax.axis("off")
    pt = 72 / dpi  # points per pixel
    ax.text(MARGIN, MARGIN, caption(graph), fontsize=13 * pt, family="monospace", fontweight="bold", va="top")
    for kind, a, b in lay.edges:
        colour, width, dash = _stroke(kind)
        p = MplPath(list(curve(a, b)), [MplPath.MOVETO, MplPath.CURVE4, MplPath.CURVE4, MplPath.CURVE4])
        ax.add_patch(
            FancyArrowPatch(
                path=p, arrowstyle="-|>", mutation_scale=10, color=colour, linewidth=width * pt * 1.4,
                linestyle="--" if dash else "-",
            )
        )  # fmt: skip
    for box in lay.boxes.values():
        stroke, sw = _border(box.node)
        ax.add_patch(
            FancyBboxPatch(
                (box.x, box.y), box.w, box.h, boxstyle="round,pad=0,rounding_size=6", facecolor=FILL[box.node.kind],
                edgecolor=stroke, linewidth=sw * pt * 1.4,
            )
        )  # fmt: skip
        for i, line in enumerate(box.lines):
            ax.text(
                box.x + PAD, box.y + PAD + LINE_H * i, line, fontsize=11 * pt, family="monospace", va="top",
                fontweight="bold" if i in (0, box.alias_line) else "normal",
                color=ALIAS_COLOR if i == box.alias_line else "#111827",
            )  # fmt: skip
    fig.savefig(path, dpi=dpi, facecolor="white")
    return path


def write_lineage(graph: LineageGraph, out_dir: Path) -> tuple[Path, Path]:
    """``lineage-<run>-<model>.html`` and ``.png`` in ``out_dir`` (made if missing); their paths."""
    subject = graph.node(graph.subject)
    stem = "lineage"
    if isinstance(subject, ModelNode):
        stem = f"lineage-{subject.location.run_id}-{subject.location.model}"
    page, png = out_dir / f"{stem}.html", out_dir / f"{stem}.png"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        page.write_text(lineage_html(graph), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot write the lineage picture to {out_dir}: {exc}", hint="pass a writable directory (--out DIR)"
        ) from exc
    return page, lineage_png(graph, png)
