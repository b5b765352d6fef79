"""One self-contained HTML page from a :class:`ReportData`: inline CSS, images as ``data:`` URIs, no script.

Every string that comes from data (sample ids, class names, commit messages, issue names) goes
through :func:`html.escape`: a sample id ``<script>...`` shows as text and runs nothing.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from flotilla.data.findings import task_columns
from flotilla.data.page.columns import ReportColumn
from flotilla.data.page.sources import AuditView, Change
from flotilla.data.page.stats import Crosstab, Distribution
from flotilla.data.report import ValidationReport


@dataclass(frozen=True)
class Thumb:
    sample_id: str
    uri: str  # a data: URI ("" when the image could not be read)
    caption: str = ""


@dataclass(frozen=True)
class ReportData:
    """Everything the page shows, gathered from the hub by :func:`flotilla.data.page.build.data_report`."""

    repo: str
    ref: str
    commit: str
    dataset: str
    split: str | None
    generated: str
    columns: tuple[ReportColumn, ...]
    splits: dict[str, int]
    distributions: list[Distribution]
    crosstabs: list[Crosstab]
    grids: list[tuple[str, dict[str, list[Thumb]]]]
    validation: ValidationReport | None
    audit: AuditView | None
    audit_thumbs: dict[str, str] = field(default_factory=dict)
    audit_command: str = ""
    history: list[Change] = field(default_factory=list)


def e(value: object) -> str:
    return html.escape(str(value), quote=True)


CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222;max-width:1300px}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #e3e3e3;padding:3px 8px;text-align:right}
th{background:#f6f6f6}td.l,th.l{text-align:left}.bar{background:#4c78a8;height:10px;display:inline-block}
.muted{color:#777}.ok{color:#2a7d2a;font-weight:bold}.bad{color:#b22;font-weight:bold}.warn{color:#a66b00}
.grid{display:flex;flex-wrap:wrap;gap:6px;margin:4px 0 12px}
.cell{width:92px;font-size:11px;text-align:center;overflow-wrap:anywhere}
.cell .cap{color:#555}
.cell img{width:64px;height:64px;image-rendering:pixelated;border:1px solid #ccc;display:block;margin:0 auto}
.row{display:flex;align-items:flex-start;gap:12px}.row .name{width:110px;font-weight:bold;padding-top:20px}
code{background:#f3f3f3;padding:1px 4px}
"""


def render(d: ReportData) -> str:
    scope = f"split {e(d.split)}" if d.split else "all splits"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(d.dataset)} · data report</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Dataset <code>{e(d.dataset)}</code></h1>",
        f'<p class="muted">lakefs://{e(d.repo)}/{e(d.ref)} · commit <code>{e(d.commit[:12])}</code> · {scope}'
        f" · generated {e(d.generated)}</p>",
        _counts(d),
        _validation(d.validation),
        *(_distribution(x) for x in d.distributions),
        _crosstabs(d.crosstabs),
        *(_grid(title, groups) for title, groups in d.grids),
        _audit(d),
        _history(d.history),
        "</body></html>",
    ]
    return "\n".join(parts)


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], left: int = 1) -> str:
    """Cells are HTML already (callers escape): header and rows; the first ``left`` columns left-aligned."""
    th = "".join(f'<th class="l">{h}</th>' if i < left else f"<th>{h}</th>" for i, h in enumerate(head))
    body = "".join(
        "<tr>" + "".join(f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


def _bar(n: int, top: int, width: int = 160) -> str:
    return f'<span class="bar" style="width:{round(width * n / top) if top else 0}px"></span>'


def _counts(d: ReportData) -> str:
    total = sum(d.splits.values())
    rows = [
        [e(s), str(n), f"{n / total:.1%}" if total else "-", _bar(n, max(d.splits.values(), default=0))]
        for s, n in d.splits.items()
    ]
    return '<h2 id="counts">Counts</h2>' + _table(
        ["split", "samples", "share", ""], [*rows, ["<b>all</b>", f"<b>{total}</b>", "", ""]]
    )


def _distribution(dist: Distribution) -> str:
    splits = [s for s in dist.counts if s != "all"]
    everything = dist.counts["all"]
    top = max(everything.values(), default=0)
    rows = [
        [e(g), *(str(dist.counts[s].get(g, 0)) for s in splits), str(everything.get(g, 0)), _bar(everything.get(g, 0), top)]
        for g in dist.groups
    ]
    name = dist.column.slice_name
    return f'<h2 id="dist-{e(dist.column.name)}">{e(name)} ({e(dist.column.kind)})</h2>' + _table(
        [e(name), *map(e, splits), "all", ""], rows
    )


def _crosstabs(tabs: list[Crosstab]) -> str:
    out = ['<h2 id="slices">Labels within each slice</h2>']
    for t in tabs:
        out.append(f"<h3>{e(t.label.slice_name)} by {e(t.by.slice_name)}</h3>")
        rows = []
        for r in t.rows:
            n = sum(t.counts.get((r, c), 0) for c in t.cols)
            cells = []
            for c in t.cols:
                k = t.counts.get((r, c), 0)
                alpha = k / n if n else 0
                cells.append(
                    f'<span title="{alpha:.0%}" style="background:rgba(76,120,168,{alpha:.2f});padding:0 4px">{k}</span>'
                )
            rows.append([e(r), *cells, str(n)])
        out.append(_table([e(t.by.slice_name), *map(e, t.cols), "all"], rows))
    return "".join(out) if tabs else ""


def _cell(t: Thumb) -> str:
    img = f'<img src="{e(t.uri)}" alt="{e(t.sample_id)}">' if t.uri else '<span class="muted">(no image)</span>'
    caption = f'<br><span class="cap">{e(t.caption)}</span>' if t.caption else ""
    return f'<div class="cell" title="{e(t.sample_id)}">{img}{e(t.sample_id)}{caption}</div>'


def _grid(title: str, groups: Mapping[str, list[Thumb]]) -> str:
    rows = "".join(
        f'<div class="row"><div class="name">{e(g)}</div><div class="grid">{"".join(_cell(t) for t in thumbs)}</div></div>'
        for g, thumbs in groups.items()
    )
    return f'<h2 id="grid-{e(title.replace(" ", "-"))}">Samples by {e(title)}</h2>{rows}'


def _validation(v: ValidationReport | None) -> str:
    head = '<h2 id="validation">Validation</h2>'
    if v is None:
        return head + '<p class="muted">No validation.json recorded with this dataset at this ref.</p>'
    verdict = '<span class="ok">PASSED</span>' if v.passed else '<span class="bad">FAILED</span>'
    rows = [[e(i.check), e(i.severity), str(i.count), e(i.examples(3)), e(i.reason)] for i in v.issues]
    table = _table(["check", "severity", "count", "examples", "reason"], rows, left=2) if rows else "<p>no issues found</p>"
    return f"{head}<p>{verdict} — {e(v.summary())}</p>{table}"


def _audit(d: ReportData) -> str:
    head = '<h2 id="audit">Latest audit: worst examples</h2>'
    a = d.audit
    if a is None:
        return head + f"<p>No audit of this dataset yet. Run one with <code>{e(d.audit_command)}</code>.</p>"
    s = a.summary
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(s.issues.items())) or "none"
    intro = (
        f"<p>audit <code>{e(s.audit_id)}</code> on branch <code>{e(a.branch)}</code> of data commit "
        f"<code>{e(s.data_commit[:12])}</code> with model <code>{e(s.model_uri)}</code> ({e(s.method)}); "
        f"{s.rows} rows, flagged: {e(counts)}; showing the {len(a.rows)} worst of {a.flagged}.</p>"
    )
    if s.data_commit != d.commit:
        intro += (
            '<p class="warn">This audit looked at another commit than the one this page shows:'
            " fixes since may have resolved some rows.</p>"
        )

    by_name = {c.name: c for c in d.columns}
    rows = []
    for r in a.rows:
        sid = str(r["sample_id"])
        uri = d.audit_thumbs.get(sid, "")
        img = f'<img src="{e(uri)}" alt="{e(sid)}" width="64" height="64">' if uri else '<span class="muted">(no image)</span>'
        labels = []
        for t in s.tasks:
            _, score, given, suggested = task_columns(t)
            if score not in r:
                continue
            col = by_name.get(t)
            show = col.label if col else (lambda v: "-" if v is None else f"{v:g}")
            labels.append(f"{e(t)}: {e(show(r.get(given)))} → {e(show(r.get(suggested)))}")
        rows.append(
            [
                img,
                e(sid),
                e(r.get("split", "")),
                e(", ".join(r.get("issues") or [])),
                "<br>".join(labels),
                f"{r.get('worst_score', 1.0):.3f}",
            ]
        )
    table = _table(["image", "sample id", "split", "issues", "given → suggested", "worst score"], rows, left=5)
    return head + intro + (table if rows else "<p>no flagged samples</p>")


def _history(changes: list[Change]) -> str:
    head = '<h2 id="provenance">Provenance: the commits that changed this dataset</h2>'
    if not changes:
        return head + '<p class="muted">no commits found</p>'
    rows = [[f"<code>{e(c.commit[:12])}</code>", e(c.when), e(c.kind), e(c.message), e(c.detail)] for c in changes]
    return head + _table(["commit", "when", "kind", "message", "detail"], rows, left=5)
