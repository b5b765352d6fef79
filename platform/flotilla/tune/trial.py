"""One sweep trial: a zero-copy branch from the sweep's pinned commit, a Ray Train run on it.

The Tune function trainable (the Train-v2 pattern: Tune drives a function that
builds and fits a ``TorchTrainer``) creates ``trial-<sweep>-<trial>`` from the
pinned data commit, trains there, and reports every epoch to Tune through
:class:`ObjectiveReportCallback`, which adds the combined objective and the
trial's branch. A ledger line per trial start lets a resumed sweep prove that
no finished trial ran twice.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ray.tune.integration.ray_train import TuneReportCallback

from flotilla.names import branch_id


def trial_branch(sweep_id: str, trial_id: str) -> str:
    return branch_id(f"{sweep_id}-{trial_id}", prefix="trial-")


def combined_score(metrics: dict[str, Any], weights: dict[str, float] | None) -> float | None:
    if not weights:
        return None
    return float(sum(w * float(metrics[k]) for k, w in weights.items()))


class ObjectiveReportCallback(TuneReportCallback):
    """Forward each epoch's metrics to Tune, plus ``val/score`` and the trial branch."""

    def __init__(self, weights: dict[str, float] | None, branch: str, run_id: str) -> None:
        super().__init__()
        self.weights = weights
        self.branch = branch
        self.run_id = run_id

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if metrics:
            extra = {"branch": self.branch, "run_id": self.run_id}
            score = combined_score(metrics[0], self.weights)
            if score is not None:
                extra["val/score"] = score
            metrics = [{**metrics[0], **extra}, *metrics[1:]]
        super().after_report(run_context, metrics, checkpoint)


def run_trial(config: dict[str, Any], ctx: dict[str, Any]) -> None:
    """The Tune trainable body (``ctx`` comes via ``tune.with_parameters``)."""
    import ray
    import ray.tune

    from flotilla.data.loader import DataRef
    from flotilla.hub.client import Hub
    from flotilla.settings import Settings
    from flotilla.specs import FamilySpec, deep_merge, parse_spec
    from flotilla.train.run import _train_one
    from flotilla.tune.spec import unflatten

    trial_id = ray.tune.get_context().get_trial_id()
    params = {k: v for k, v in config.items() if v is not None}
    family = parse_spec(FamilySpec, deep_merge(ctx["family"], unflatten(params)), source=f"trial {trial_id}")
    ref = family.data.ref
    data_ref = DataRef(family.data.repo, ctx["commits"][ref], family.data.dataset, ref)
    creds = ray.get(ctx["credentials"])
    hub = Hub(credentials=creds, settings=Settings.from_env())
    branch = trial_branch(ctx["sweep_id"], trial_id)
    with open(Path(ctx["ledger"]), "a") as fh:
        fh.write(json.dumps({"trial_id": trial_id, "params": params, "started": time.time()}) + "\n")
    run_id = f"{ctx['sweep_id']}-{trial_id}"
    _train_one(
        hub, family, data_ref, run_id, "family", [t.to_dict() for t in family.task_specs()],
        None, ctx["credentials"], None, branch=branch,
        callbacks=(ObjectiveReportCallback(ctx.get("weights"), branch, run_id),),
    )
