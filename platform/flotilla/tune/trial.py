"""One sweep trial: a zero-copy branch from the sweep's pinned commit, a Ray Train run on it.

The Tune function trainable (the Train-v2 pattern: Tune drives a function that
builds and fits a ``TorchTrainer``) creates ``trial-<sweep>-<trial>`` from the
pinned data commit, trains there, and reports every epoch to Tune through
:class:`ObjectiveReportCallback`, which adds the combined objective and the
trial's branch. The model it publishes is its best epoch *by the sweep's
objective* (not by the first task's metric, as a standalone run chooses), so
the checkpoint promoted is the one the sweep ranked.
"""

from __future__ import annotations

from typing import Any, Callable

from ray.tune.integration.ray_train import TuneReportCallback

from flotilla.names import branch_id


EPOCHS_DONE = "epochs_done"
"""Result key: epochs the trial's model has trained, counted across restarts of the trial.

Tune's ``training_iteration`` counts the reports of one *attempt*. A trial that was running when
its driver died is started again on ``resume``, and Ray Train picks up the checkpoint it left on
the trial's branch, so the model goes on from epoch k+1 while Tune counts from 1 again. ASHA's
rungs, the study's curve and steps, and "did it train to the end" all count epochs, not reports.
"""


def epochs_done(result: dict[str, Any] | None) -> int:
    """``EPOCHS_DONE`` of a result (Tune's report count for a result without it)."""
    result = result or {}
    return int(result.get(EPOCHS_DONE, result.get("training_iteration", 0)))


def trial_branch(sweep_id: str, trial_id: str) -> str:
    return branch_id(f"{sweep_id}-{trial_id}", prefix="trial-")


def combined_score(metrics: dict[str, Any], weights: dict[str, float] | None) -> float | None:
    if not weights:
        return None
    return float(sum(w * float(metrics[k]) for k, w in weights.items()))


def checkpoint_rank(objective: dict[str, Any]) -> tuple[Callable[[dict[str, Any]], float | None], str] | str:
    """How a trial picks the checkpoint it publishes: the sweep's objective and mode.

    ``"last"`` for a Pareto search: there a trial is the point its *last* epoch reached, and that
    epoch's checkpoint is the one published (no single metric says which epoch is best).
    """
    if objective.get("metrics"):
        return "last"
    weights, metric = objective.get("weights"), objective.get("metric", "val/score")

    def score(metrics: dict[str, Any]) -> float | None:
        if weights:
            return combined_score(metrics, weights) if all(k in metrics for k in weights) else None
        value = metrics.get(metric)
        return float(value) if isinstance(value, (int, float)) else None

    return score, objective.get("mode", "max")


class ObjectiveReportCallback(TuneReportCallback):
    """Forward each epoch's metrics to Tune, plus ``val/score``, ``epochs_done`` and the trial branch."""

    def __init__(self, weights: dict[str, float] | None, branch: str, run_id: str) -> None:
        super().__init__()
        self.weights = weights
        self.branch = branch
        self.run_id = run_id

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if metrics:
            metrics = [with_trial_keys(metrics[0], self.weights, self.branch, self.run_id), *metrics[1:]]
        super().after_report(run_context, metrics, checkpoint)


def with_trial_keys(metrics: dict[str, Any], weights: dict[str, float] | None, branch: str, run_id: str) -> dict[str, Any]:
    """An epoch's metrics as Tune gets them: plus the trial's branch and run, ``val/score`` and ``epochs_done``."""
    extra: dict[str, Any] = {"branch": branch, "run_id": run_id}
    if isinstance(metrics.get("epoch"), (int, float)):
        extra[EPOCHS_DONE] = int(metrics["epoch"]) + 1
    score = combined_score(metrics, weights)
    if score is not None:
        extra["val/score"] = score
    return {**metrics, **extra}


def run_trial(config: dict[str, Any], ctx: dict[str, Any]) -> None:
    """The Tune trainable body (``ctx`` comes via ``tune.with_parameters``)."""
    import ray
    import ray.tune

    from flotilla.data.loader import DataRef
    from flotilla.hub.client import Hub
    from flotilla.settings import Settings
    from flotilla.specs import FamilySpec, deep_merge, parse_spec
    from flotilla.training import ModelRun, train_model
    from flotilla.training.artifacts import ModelLocation
    from flotilla.tune.spec import unflatten

    trial_id = ray.tune.get_context().get_trial_id()
    params = {k: v for k, v in config.items() if v is not None}
    merged = {**deep_merge(ctx["family"], unflatten(params)), "merge_into": None}  # only the sweep promotes
    family = parse_spec(FamilySpec, merged, source=f"trial {trial_id}")
    ref = family.data.ref
    data_ref = DataRef(family.data.repo, ctx["commits"][ref], family.data.dataset, ref)
    creds = ray.get(ctx["credentials"])
    hub = Hub(credentials=creds, settings=Settings.from_env())
    branch = trial_branch(ctx["sweep_id"], trial_id)
    run_id = f"{ctx['sweep_id']}-{trial_id}"
    parent = ModelLocation(**ctx["parent"]) if ctx["parent"] else None  # resolved once, when the sweep started
    run = ModelRun(family, data_ref, run_id, parent=parent, branch=branch, rank=checkpoint_rank(ctx["objective"]))
    train_model(hub, run, callbacks=(ObjectiveReportCallback(ctx["objective"].get("weights"), branch, run_id),))
