"""One sweep trial: a zero-copy branch from the sweep's pinned commit, the model trained on it.

The Tune function trainable creates ``trial-<sweep>-<trial>`` from the pinned data
commit and trains there: a single-worker model in the trainable's own process
(:mod:`flotilla.training.inprocess`, reporting through :func:`report_to_tune`), any
other with Ray Train (the Train-v2 pattern: Tune drives a function that builds and
fits a ``TorchTrainer``, reporting through :class:`ObjectiveReportCallback`). Both
add the combined objective and the trial's branch to every epoch's report. The
model it publishes is its best epoch *by the sweep's objective* (not by the first
task's metric, as a standalone run chooses), so the checkpoint promoted is the one
the sweep ranked.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.tune
from ray.tune.integration.ray_train import TuneReportCallback

from flotilla.data.pinning import DataRef
from flotilla.hub.client import Hub
from flotilla.names import branch_id
from flotilla.registry.address import MODELS_PREFIX, ModelLocation, model_dir
from flotilla.settings import Settings
from flotilla.specs import FamilySpec, deep_merge, parse_spec
from flotilla.training import ModelRun, train_model
from flotilla.training.inprocess import Report, release_memory, runs_in_process
from flotilla.tune.separate import EpochGather, model_rank
from flotilla.tune.spec import Objective, unflatten

EPOCHS_DONE = "epochs_done"
"""Result key: epochs the trial's model has trained, counted across restarts of the trial.

Tune's ``training_iteration`` counts the reports of one *attempt*. A trial that was running when
its driver died is started again on ``resume``, and Ray Train picks up the checkpoint it left on
the trial's branch, so the model goes on from epoch k+1 while Tune counts from 1 again. ASHA's
rungs, the study's curve and steps, and "did it train to the end" all count epochs, not reports.
"""

Rank = tuple[Callable[[Mapping[str, Any]], float | None], str] | str
"""How a run picks the checkpoint it publishes: a score over an epoch's metrics and its mode, or ``"last"``."""


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep gets from the driver, the same for all of them.

    It travels inside the trainable's closure to wherever Tune runs the trial, so it holds the hub's
    credentials only as a Ray object reference: Tune pickles the trainable into its saved state.
    """

    sweep_id: str
    family: Mapping[str, Any]  # the base family spec (JSON) that a trial's params are merged into
    commits: Mapping[str, str]  # every data ref the sweep may use -> the commit pinned when it started
    credentials: Any  # ray.ObjectRef[HubCredentials]
    objective: Objective
    parent: ModelLocation | None = None  # transfer learning: resolved once, when the sweep started
    folder: str | None = None  # W&B's folder for the trials: $WANDB_DIR on the driver, else the sweep's folder


def epochs_done(result: Mapping[str, Any] | None) -> int:
    """``EPOCHS_DONE`` of a result (Tune's report count for a result without it)."""
    result = result or {}
    return int(result.get(EPOCHS_DONE, result.get("training_iteration", 0)))


def trial_name(trial: Any) -> str:
    """Tune's name and folder for a trial (``trial_name_creator``/``trial_dirname_creator``): its id alone.

    Tune's default, ``trainable_<id>`` and ``trainable_<id>_<n>_<params>_<date>``, is a second and third
    name for the trial its branch, study and tables call ``<id>`` (see :mod:`flotilla.tune.study`).
    Tune pickles it into ``tuner.pkl``: it stays here, under this name, or older sweeps cannot resume.
    """
    return str(trial.trial_id)


def trial_id_of_dir(name: str) -> str:
    """The trial id in the name of a Tune trial folder: ``<id>`` (:func:`trial_name`), or Tune's default
    ``trainable_<id>_...`` in a sweep started before."""
    return name.split("_")[1] if name.startswith("trainable_") else name


def trial_branch(sweep_id: str, trial_id: str) -> str:
    return branch_id(f"{sweep_id}-{trial_id}", prefix="trial-")


def trial_model_uri(repo: str, branch: str, run_id: str, model: str) -> str:
    """Where a trial trained to the end publishes its model, by branch (the commit comes after the last report)."""
    return f"lakefs://{repo}/{branch}/{model_dir(run_id, model)}model.pt"


def combined_score(metrics: Mapping[str, Any], weights: Mapping[str, float] | None) -> float | None:
    if not weights:
        return None
    return float(sum(w * float(metrics[k]) for k, w in weights.items()))


def checkpoint_rank(objective: Objective) -> Rank:
    """How a trial picks the checkpoint it publishes: the sweep's objective and mode.

    ``"last"`` for a Pareto search: there a trial is the point its *last* epoch reached, and that
    epoch's checkpoint is the one published (no single metric says which epoch is best).
    """
    if objective.multi:
        return "last"
    weights, metric = objective.weights, objective.metric

    def score(metrics: Mapping[str, Any]) -> float | None:
        if weights:
            return combined_score(metrics, weights) if all(k in metrics for k in weights) else None
        value = metrics.get(metric)
        return float(value) if isinstance(value, (int, float)) else None

    return score, objective.mode


class ObjectiveReportCallback(TuneReportCallback):
    """Forward each epoch's metrics to Tune, plus ``val/score``, ``epochs_done``, the trial's branch and model."""

    def __init__(self, weights: Mapping[str, float] | None, branch: str, run_id: str, model_uri: str = "") -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # untyped_calls_exclude covers Ray's plain calls, not super()
        self.weights = weights
        self.branch = branch
        self.run_id = run_id
        self.model_uri = model_uri

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if metrics:
            first = with_trial_keys(metrics[0], self.weights, self.branch, self.run_id, self.model_uri)
            metrics = [first, *metrics[1:]]
        super().after_report(run_context, metrics, checkpoint)


def with_trial_keys(
    metrics: Mapping[str, Any], weights: Mapping[str, float] | None, branch: str, run_id: str, model_uri: str = ""
) -> dict[str, Any]:
    """An epoch's metrics as Tune gets them: plus the trial's branch, run and model (where it will be published
    if it trains to the end), ``val/score`` and ``epochs_done``."""
    extra: dict[str, Any] = {"branch": branch, "run_id": run_id, **({"model_uri": model_uri} if model_uri else {})}
    if isinstance(metrics.get("epoch"), (int, float)):
        extra[EPOCHS_DONE] = int(metrics["epoch"]) + 1
    score = combined_score(metrics, weights)
    if score is not None:
        extra["val/score"] = score
    return {**metrics, **extra}


def trial_family(config: Mapping[str, Any], ctx: TrialContext, trial_id: str = "") -> FamilySpec:
    """The family spec a trial trains: its params merged into the sweep's base family (never merged anywhere)."""
    params = {k: v for k, v in config.items() if v is not None}
    merged = {**deep_merge(dict(ctx.family), unflatten(params)), "merge_into": None}  # only the sweep promotes
    family: FamilySpec = parse_spec(FamilySpec, merged, source=f"trial {trial_id}" if trial_id else "trial")
    return family


def trial_resources(config: Mapping[str, Any], ctx: TrialContext, trial_cpus: float) -> Any:
    """What Tune reserves for a trial (a ``PlacementGroupFactory``): ``trial_cpus`` for its function, and
    the worker's CPUs (and GPU) too when it trains in that function's own process (:func:`runs_in_process`).

    The total is what :func:`~flotilla.tune.preflight.check_trial_fits` checked; a trial that keeps Ray
    Train (several workers, DeepSpeed) reserves its workers through Ray Train itself.
    """
    from ray.tune import PlacementGroupFactory

    family = trial_family(config, ctx)
    bundle: dict[str, float] = {"CPU": trial_cpus}
    if runs_in_process(family):
        models = len(family.task_specs()) if family.strategy == "separate" else 1  # side by side, each its CPUs
        bundle["CPU"] += models * family.scaling.cpus_per_worker
        if family.scaling.use_gpu:  # the models of a separate family share the trial's one device
            gpus = family.scaling.gpus_per_worker or 1.0
            bundle["GPU"] = gpus if models == 1 else min(1.0, models * gpus)
    return PlacementGroupFactory([bundle])


def report_to_tune(
    weights: Mapping[str, float] | None, branch: str, run_id: str, model_uri: str, metrics: Mapping[str, Any]
) -> None:
    """An in-process trial's epoch, as :class:`ObjectiveReportCallback` reports a Ray Train trial's."""
    ray.tune.report(with_trial_keys(metrics, weights, branch, run_id, model_uri))


def run_trial(config: Mapping[str, Any], ctx: TrialContext) -> None:
    """The Tune trainable's body: this trial's params merged into the family, trained on its branch.

    A single-worker trial trains right here, in the trainable's process (see
    :mod:`flotilla.training.inprocess`); any other builds a Ray Train run.
    """
    trial_id = ray.tune.get_context().get_trial_id()
    family = trial_family(config, ctx, trial_id)
    ref = family.data.ref
    data_ref = DataRef(family.data.repo, ctx.commits[ref], family.data.dataset, ref)
    hub = Hub(credentials=ray.get(ctx.credentials), settings=Settings.from_env())
    hub.credentials.vouch()  # the driver confirmed the hub: a restart during this trial's first call is waited out
    branch = trial_branch(ctx.sweep_id, trial_id)
    run_id = f"{ctx.sweep_id}-{trial_id}"
    run = ModelRun(
        family,
        data_ref,
        run_id,
        parent=ctx.parent,
        branch=branch,
        rank=checkpoint_rank(ctx.objective),
        wandb_group=ctx.sweep_id,  # W&B shows a sweep's trials together, each under its trial id
        wandb_name=trial_id,
        folder=Path(ctx.folder) if ctx.folder else None,
    )
    if family.strategy == "separate":
        run_separate(hub, run, ctx.objective, branch)
    else:
        model_uri = trial_model_uri(family.data.repo, branch, run_id, run.name)
        weights = ctx.objective.weights
        train_model(
            hub,
            run,
            callbacks=(ObjectiveReportCallback(weights, branch, run_id, model_uri),),
            report_to=functools.partial(report_to_tune, weights, branch, run_id, model_uri),
        )
    # this process takes the next trial: give back the heap this trial freed (see release_memory). Not on
    # a stop (it raises past here): a stopped trial must leave within Tune's 2 s or its process is not
    # reused, and what it freed is trimmed when a later trial ends
    release_memory()


def run_separate(hub: Hub, family_run: ModelRun, objective: Objective, branch: str, report: Report | None = None) -> None:
    """A separate family's trial: each task's model on a thread of its own, all on the trial's branch,
    their epochs reported as one (see :mod:`flotilla.tune.separate`) to ``report`` (default: Tune).

    A trial started again goes on from each model's own checkpoints on the branch
    (``runs/<run>/<task>/checkpoint_*``), as a shared model's does from its one.
    """
    tasks = family_run.spec.task_specs()
    runs = [
        dataclasses.replace(
            family_run,
            name=t.name,
            tasks=(t,),
            rank=model_rank(objective, t.name),
            wandb_name=f"{family_run.wandb_name}/{t.name}",
        )
        for t in tasks
    ]
    run_id, repo = family_run.run_id, family_run.data.repo
    model_uri = f"lakefs://{repo}/{branch}/{MODELS_PREFIX}{run_id}/"  # the family: one folder per task's model

    def tell(metrics: dict[str, Any]) -> None:
        (report or ray.tune.report)(with_trial_keys(metrics, objective.weights, branch, run_id, model_uri))

    gather = EpochGather([t.name for t in tasks], tell)

    def one(run: ModelRun) -> None:
        try:
            train_model(hub, run, report_to=gather.reporter(run.name))
        except BaseException as exc:
            gather.stop(exc)
            raise

    # the branch first, once: the models' own start would race to create it
    hub.repo(repo).transact(run_id, family_run.data.commit, branch=branch, resume=True).start()
    with ThreadPoolExecutor(max_workers=len(runs), thread_name_prefix="flotilla-model") as pool:
        futures = [pool.submit(one, r) for r in runs]
    errors = [e for f in futures if (e := f.exception()) is not None]
    # the model that failed, not the stop it passed to the others
    raise_first = next((e for e in errors if not isinstance(e, SystemExit)), errors[0] if errors else None)
    if raise_first is not None:
        raise raise_first
