"""A model is published only when it is a model: every metric of its chosen epoch and every weight finite.

A learning rate too high for the data (or, before specs refused it, ``weight_decay: .inf``) trains
to NaN without an exception anywhere: the loss is NaN, the metrics are NaN, and a NaN model used to
be published and, with ``merge_into: main``, promoted with exit 0 — with ``NaN`` in its commit
metadata and in a ``card.json`` that was not valid JSON. :func:`refuse_nonfinite` stops that at
publication (the one place every run, Ray Train's or in-process, passes), before anything is written;
:func:`json_safe` keeps the epochs *around* a finite chosen one (a NaN after the best epoch) valid
JSON as ``null``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from typing import Any

from flotilla.errors import DivergedError


def nonfinite_metrics(metrics: Mapping[str, Any]) -> list[str]:
    """The names of the metrics whose value is a NaN or an infinity."""
    return [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]


def nonfinite_weights(weights: bytes) -> list[str]:
    """The names of the tensors of a checkpoint's state dict holding a NaN or an infinity."""
    import torch

    state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)["state"]
    return [k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float as None: JSON has no NaN, and ``json.dumps`` would write one anyway."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def refuse_nonfinite(what: str, branch: str, epoch: int, metrics: Mapping[str, Any], weights: bytes, lr: float) -> None:
    """Raise :class:`DivergedError` when the chosen epoch's metrics or weights are not finite; nothing was written."""
    bad_metrics = nonfinite_metrics(metrics)
    bad_weights = nonfinite_weights(weights)
    if not (bad_metrics or bad_weights):
        return
    found = []
    if bad_metrics:
        shown = ", ".join(f"{k} = {metrics[k]}" for k in bad_metrics[:4])
        found.append(f"its metrics ({shown}{', ...' if len(bad_metrics) > 4 else ''})")
    if bad_weights:
        found.append(f"{len(bad_weights)} weight tensor(s) (e.g. {bad_weights[0]})")
    raise DivergedError(
        f"{what} diverged: {' and '.join(found)} are not finite at its chosen epoch {epoch}; "
        "nothing was published and nothing merged",
        hint=f"lower optim.lr (it was {lr:g}) or use warmup_epochs, and check the data's labels "
        f"('flotilla data validate'); the run's checkpoints stay on branch {branch!r}",
    )
