"""A monitoring run as files: ``report.json`` for machines, ``report.html`` + PNGs for people, all offline.

The PNGs are drawn on matplotlib's Agg canvas (no display, no global backend switch) and the
HTML page embeds them, so a report committed to the hub opens from a download with no server and
no network: the verdict first, then what moved (tests, distributions, slices), then the faces.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from flotilla.lineage import ModelCard
from flotilla.models.tasks import resolve_tasks

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from flotilla.loop.monitoring import MonitorResult, Side

REF, CUR, BAD = "#4C72B0", "#DD8452", "#C44E52"


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


def _pca2(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pooled = np.concatenate([a, b])
    centre = pooled.mean(axis=0)
    _, _, vt = np.linalg.svd(pooled - centre, full_matrices=False)
    axes = vt[:2].T
    return (a - centre) @ axes, (b - centre) @ axes


def _subsample(x: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    return x if len(x) <= n else x[np.random.default_rng(seed).choice(len(x), n, replace=False)]


def _tests_panel(ax: Axes, result: MonitorResult) -> None:
    v = result.verdict
    assert v is not None
    names = [t.name for t in v.tests]
    scores = [-np.log10(max(t.adjusted_p, 1e-12)) for t in v.tests]
    ax.barh(names, scores, color=[BAD if t.rejected else REF for t in v.tests])
    ax.axvline(-np.log10(v.alpha), color="k", ls="--", lw=1, label=f"alpha {v.alpha:g}")
    ax.set_xlabel("-log10(Holm-adjusted p)")
    ax.set_title("drift tests (red: rejected)")
    ax.legend(loc="lower right", fontsize=8)


def _distribution_panel(ax: Axes, task: Any, reference: Side, current: Side) -> None:
    r, c = reference.decisions[task.name], current.decisions[task.name]
    if task.kind == "regression":
        bins = np.histogram_bin_edges(np.concatenate([r, c]), bins=30).tolist()
        ax.hist(r, bins=bins, density=True, alpha=0.55, color=REF, label="reference")
        ax.hist(c, bins=bins, density=True, alpha=0.55, color=CUR, label="current")
    else:
        k = max(int(np.nanmax(np.concatenate([r, c]))) + 1, len(task.classes) or 2)
        x = np.arange(k)
        ax.bar(x - 0.2, np.bincount(r.astype(int), minlength=k) / len(r), 0.4, color=REF, label="reference")
        ax.bar(x + 0.2, np.bincount(c.astype(int), minlength=k) / len(c), 0.4, color=CUR, label="current")
        ax.set_xticks(x, list(task.classes) if len(task.classes) == k else [str(i) for i in x], rotation=45, fontsize=7)
    ax.set_title(f"predicted {task.name}")
    ax.legend(fontsize=7)


def _share_panel(ax: Axes, column: str, result: MonitorResult) -> None:
    rows = sorted((s for s in result.shares if s.column == column), key=lambda s: s.value)
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [s.reference_share for s in rows], 0.4, color=REF, label="reference")
    ax.bar(
        x + 0.2, [s.current_share for s in rows], 0.4, color=[BAD if s.adjusted_p <= 0.05 else CUR for s in rows], label="current"
    )
    ax.set_xticks(x, [s.value for s in rows], rotation=45, fontsize=7)
    ax.set_title(f"share by {column} (red: shifted)")
    ax.legend(fontsize=7)


def overview_png(result: MonitorResult, card: ModelCard, reference: Side, current: Side) -> bytes:
    from matplotlib.figure import Figure

    tasks = resolve_tasks(list(card.tasks))
    columns = sorted({s.column for s in result.shares})
    panels = 2 + len(tasks) + len(columns)
    ncols = 3
    nrows = -(-panels // ncols)
    fig = Figure(figsize=(5 * ncols, 3.6 * nrows))
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(panels)]
    _tests_panel(axes[0], result)
    a, b = _pca2(_subsample(reference.embedding, 1000), _subsample(current.embedding, 1000, 1))
    axes[1].scatter(a[:, 0], a[:, 1], s=4, alpha=0.4, color=REF, label="reference")
    axes[1].scatter(b[:, 0], b[:, 1], s=4, alpha=0.4, color=CUR, label="current")
    axes[1].set_title("embeddings (first two principal components)")
    axes[1].legend(fontsize=7, markerscale=3)
    for ax, t in zip(axes[2:], tasks, strict=False):
        _distribution_panel(ax, t, reference, current)
    for ax, col in zip(axes[2 + len(tasks) :], columns, strict=False):
        _share_panel(ax, col, result)
    word = "DRIFT" if result.drifted else "no drift"
    fig.suptitle(f"{result.model}: {word} ({current.data.dataset}@{current.data.commit[:12]} vs training data)", fontsize=13)
    fig.tight_layout()
    return _png(fig)


def examples_png(examples: Sequence[Mapping[str, Any]], images: Mapping[str, np.ndarray]) -> bytes:
    from matplotlib.figure import Figure

    rows = [[e for e in examples if e["side"] == side and e["sample_id"] in images] for side in ("current", "reference")]
    width = max(1, *(len(r) for r in rows))
    fig = Figure(figsize=(1.6 * width, 4.0))
    for r, (side, items) in enumerate(zip(("current: most atypical", "reference: random"), rows, strict=True)):
        for i in range(width):
            ax = fig.add_subplot(2, width, r * width + i + 1)
            ax.axis("off")
            if i < len(items):
                ax.imshow(images[items[i]["sample_id"]])
                score = items[i].get("atypicality")
                ax.set_title(f"{score:.1f}x" if score is not None else "", fontsize=8)
        fig.text(0.01, 0.97 - 0.5 * r, side, fontsize=10, va="top")
    return _png(fig)


def ground_truth_png(result: MonitorResult) -> bytes:
    """One panel per task (its metric's own units): the whole sample first, then its slices, worst first."""
    from matplotlib.figure import Figure

    gt = result.ground_truth
    assert gt is not None
    groups = [(c, [s for s in gt.slices if s.task == c.task][:6]) for c in gt.tasks]
    fig = Figure(figsize=(7 * len(groups), 0.5 * max(len(g) + 1 for _, g in groups) + 1.6))
    for k, (overall, cells) in enumerate(groups):
        ax = fig.add_subplot(1, len(groups), k + 1)
        checks = [overall, *cells]
        y = np.arange(len(checks))[::-1]
        for yi, c in zip(y, checks, strict=True):
            err = [[c.degradation - c.ci_low], [c.ci_high - c.degradation]]
            ax.errorbar(c.degradation, yi, xerr=err, fmt="o", capsize=3, color=BAD if c.degraded else REF)
        ax.set_yticks(y, ["all" if not c.slice_column else f"{c.slice_column}={c.slice_value}" for c in checks], fontsize=8)
        ax.axvline(gt.tolerance, color="k", ls="--", lw=1)
        word = "DEGRADED" if overall.degraded else "ok"
        ax.set_title(f"{overall.task} {overall.metric}: {overall.reference:.3g} → {overall.current:.3g} ({word})", fontsize=10)
        ax.set_xlabel("degradation (positive = worse)")
    fig.suptitle("ground truth vs the model's validation data: bootstrap intervals (red: degraded)")
    fig.tight_layout()
    return _png(fig)


def _img(name: str, blob: bytes) -> str:
    return f'<img alt="{name}" src="data:image/png;base64,{base64.b64encode(blob).decode()}">'


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def report_html(result: MonitorResult, pngs: Mapping[str, bytes]) -> str:
    d = result.to_dict()
    alarm = "ALARM" if result.alarm else "OK"
    lines = [f"drift: {'yes' if result.drifted else 'no'}"] + (
        [f"degraded: {', '.join(result.degraded)}"] if result.degraded else []
    )
    v = result.verdict
    ref, cur = d["reference"], d["current"]

    def side(x: Mapping[str, Any]) -> str:
        where = f"{x.get('dataset')}@{str(x.get('commit', ''))[:12]}"
        return f"<code>{html.escape(where)}</code> ({html.escape(str(x.get('split')))}, {x.get('rows')} samples)"

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>flotilla monitor: "
        + html.escape(result.model)
        + "</title><style>body{font-family:sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}"
        ".alarm{background:#fdd}.ok{background:#dfd}.banner{padding:1em;font-size:18px}img{max-width:100%}</style></head><body>",
        f"<h1>Monitoring {html.escape(result.model)}</h1>",
        f"<div class='banner {'alarm' if result.alarm else 'ok'}' id='verdict'>{alarm}: {html.escape('; '.join(lines))}</div>",
        f"<p>model <code>{html.escape(result.model_uri)}</code><br>reference: the model's training data {side(ref)}"
        f"<br>current: {side(cur)}</p>",
    ]
    if result.shifted_slices():
        parts.append(
            "<h2>Most shifted slices</h2><ul>"
            + "".join(f"<li>{html.escape(s)}</li>" for s in result.shifted_slices()[:10])
            + "</ul>"
        )
    if v:
        parts.append("<h2>Tests</h2>")
        parts.append(
            _table(
                ["test", "method", "statistic", "p", "Holm-adjusted p", "rejected"],
                [[t.name, t.result.method, t.result.statistic, t.result.p_value, t.adjusted_p, t.rejected] for t in v.tests],
            )
        )
    parts.append(_img("overview", pngs["report.png"]))
    if result.shares:
        parts.append("<h2>Slice shares</h2>")
        parts.append(
            _table(
                ["column", "value", "reference share", "current share", "adjusted p"],
                [[s.column, s.value, s.reference_share, s.current_share, s.adjusted_p] for s in result.shares],
            )
        )
    if v and v.slices:
        parts.append("<h2>Inside each slice (embedding MMD)</h2>")
        parts.append(
            _table(
                ["column", "value", "n ref", "n cur", "adjusted p"],
                [[s.column, s.value, s.result.n_ref, s.result.n_cur, s.adjusted_p] for s in v.slices],
            )
        )
    gt = result.ground_truth
    if gt:
        parts.append(f"<h2>Ground truth ({gt.labelled} labelled samples)</h2>")
        rows = [
            [
                c.task,
                c.metric,
                f"{c.slice_column}={c.slice_value}" if c.slice_column else "all",
                c.reference,
                c.current,
                c.card,
                c.degradation,
                c.ci_low,
                c.ci_high,
                c.n_current,
                c.degraded,
            ]
            for c in [*gt.tasks, *gt.slices]
        ]
        parts.append(
            _table(
                [
                    "task",
                    "metric",
                    "slice",
                    "reference",
                    "current",
                    "card",
                    "degradation",
                    "CI low",
                    "CI high",
                    "n current",
                    "degraded",
                ],
                rows,
            )
        )
        parts.append(_img("ground truth", pngs["ground_truth.png"]))
    parts.append("<h2>Example faces</h2>")
    parts.append(_img("examples", pngs["examples.png"]))
    parts.append("</body></html>")
    return "\n".join(parts)


def render_report(
    result: MonitorResult,
    card: ModelCard,
    reference: Side,
    current: Side,
    images: Mapping[str, np.ndarray],
    *,
    only: str | None = None,
) -> dict[str, bytes]:
    """Every file of the report (``only``: just that one, e.g. the JSON once the branch is known)."""
    files = {"report.json": (json.dumps(result.to_dict(), indent=2, sort_keys=True, default=str) + "\n").encode()}
    if only == "report.json":
        return files
    pngs = {"report.png": overview_png(result, card, reference, current), "examples.png": examples_png(result.examples, images)}
    if result.ground_truth:
        pngs["ground_truth.png"] = ground_truth_png(result)
    files |= pngs
    files["report.html"] = report_html(result, pngs).encode()
    return files
