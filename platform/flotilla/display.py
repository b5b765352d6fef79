"""How result objects show themselves in a REPL and a notebook: the essentials, not a field dump.

A dataclass's generated ``repr`` of a training result ran to kilobytes (every epoch's history);
a person looks for the model's URI, a few metrics, the branch and the commit. Results build their
``__repr__`` and ``_repr_html_`` (Jupyter's rich display) from these helpers, so every result reads
the same way. The full data stays on the object's attributes.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

METRICS_SHOWN = 4
"""At most this many metrics in a one-line summary (the rest are on the object)."""


def short_commit(commit: str | None) -> str:
    return (commit or "")[:12]


def metric_text(metrics: Mapping[str, Any], limit: int = METRICS_SHOWN) -> str:
    """``age/mae=4.12 gender/accuracy=0.913 (+3 more)``: counts (``*/n``) left out, 3 significant digits."""
    shown = [(k, v) for k, v in metrics.items() if not str(k).endswith("/n") and isinstance(v, (int, float))]
    text = " ".join(f"{k}={v:.4g}" for k, v in shown[:limit])
    return text + (f" (+{len(shown) - limit} more)" if len(shown) > limit else "")


def html_table(title: str, header: Sequence[str], rows: Iterable[Sequence[Any]], notes: Iterable[str] = ()) -> str:
    """A small HTML table with a bold title line and notes beneath, every value escaped."""
    esc = html.escape
    head = "".join(f"<th style='text-align:left'>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{esc(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    extra = "".join(f"<div>{esc(n)}</div>" for n in notes)
    return f"<div><b>{esc(title)}</b><table><tr>{head}</tr>{body}</table>{extra}</div>"
