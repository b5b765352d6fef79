"""``flotilla.train(spec)``: a family of models, each run on its own hub branch; ``train_model``: one of them.

The data ref is resolved once to a commit id; each model (one for ``shared``,
one per task for ``separate`` — the several-teams case) gets a branch created
from that commit. Ray Train writes checkpoints straight onto the branch through
lakeFS's S3 gateway (so every node of a cluster reaches them), a controller
callback commits each checkpoint (and each failure/restart) so the branch
history tells the run's story, and at the end the best checkpoint becomes
``models/<run>/<model>/model.pt`` with its model card and metrics, committed
together; merged into ``merge_into`` (if set) only once every model of the
family has succeeded, so a failed model never leaves half a family there.

:func:`train_model` is the one way to fit one model: ``train`` calls it for each
model of a family, a sweep for each trial.
"""

from __future__ import annotations

import contextlib
import functools
import secrets
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from flotilla.cluster.connect import ensure_ray
from flotilla.cluster.fit import check_fits
from flotilla.data.gate import require_clean
from flotilla.data.pinning import DataRef, resolve_data
from flotilla.data.store import read_manifest
from flotilla.display import html_table, metric_text, short_commit
from flotilla.errors import ConflictError, FlotillaError, InfrastructureError, NotFoundError, is_infrastructure
from flotilla.hub.client import Hub
from flotilla.hub.experiment import Experiment, Retention
from flotilla.models.tasks import resolve_tasks
from flotilla.names import branch_id, check_branch_id
from flotilla.progress import ProgressView
from flotilla.registry.aliases import move_alias
from flotilla.registry.lookup import resolve
from flotilla.specs import FamilySpec, Overrides, check_tasks_fit, family_spec
from flotilla.training.callbacks import HubCommitCallback, ProgressPump
from flotilla.training.config import ModelRun, WorkerConfig
from flotilla.training.hooks import WorkerHook
from flotilla.training.inprocess import Report, fit_in_process, runs_in_process
from flotilla.training.loop import build_model, load_parent, train_loop_per_worker
from flotilla.training.publish import ModelResult, merge_family, publish_model
from flotilla.training.record import RunRecord
from flotilla.training.tracking import plan_tracking

if TYPE_CHECKING:
    from ray.train import UserCallback

    from flotilla.hub.credentials import HubCredentials
    from flotilla.registry.address import ModelLocation


@dataclass
class TrainResult:
    run_id: str
    data: DataRef
    models: list[ModelResult] = field(default_factory=list)
    wall_s: float = 0.0
    alias: str | None = None  # ``<family>@<alias>`` the run was promoted to (spec.alias)

    def metric(self, key: str) -> float:
        """A validation metric like ``"age/mae"`` from whichever model trained that task."""
        for m in self.models:
            if key in m.metrics:
                return m.metrics[key]
        raise KeyError(key)

    def __repr__(self) -> str:
        head = (
            f"TrainResult(run {self.run_id}, data lakefs://{self.data.repo}/{short_commit(self.data.commit)} "
            f"({self.data.dataset}), {len(self.models)} model(s), {self.wall_s:.0f}s"
            + (f", alias {self.alias}" if self.alias else "")
            + ")"
        )
        return "\n".join([head, *(f"  {m!r}" for m in self.models)])

    def _repr_html_(self) -> str:
        rows = [
            (m.name, m.model_uri, metric_text(m.metrics, limit=8), m.branch, short_commit(m.commit), m.wandb_run or "")
            for m in self.models
        ]
        notes = [f"promoted: {self.alias}"] if self.alias else []
        title = f"run {self.run_id} · data lakefs://{self.data.repo}/{short_commit(self.data.commit)} · {self.wall_s:.0f}s"
        return html_table(title, ("model", "uri", "metrics", "branch", "commit", "W&B run"), rows, notes)


def hub_filesystem(credentials: HubCredentials) -> Any:
    """pyarrow S3 filesystem over lakeFS's gateway; bucket = repository, key = ``<ref>/<path>``."""
    import pyarrow.fs as pafs

    # lakeFS has no object for a branch's "directory" itself: never try to create one
    return pafs.S3FileSystem(**credentials.s3_options(), check_directory_existence_before_creation=True)


def train(
    spec: FamilySpec | Mapping[str, Any] | str | Path,
    *,
    overrides: Overrides | None = None,
    hub: Hub | None = None,
    address: str | None = None,
    run_id: str | None = None,
    hooks: Sequence[WorkerHook] = (),
    progress: ProgressView | None = None,
) -> TrainResult:
    """Train a family of models on one pinned data commit; return where each model, card and metric lives.

    Args:
        spec: a :class:`~flotilla.specs.FamilySpec`, a mapping of the YAML's shape
            (``{"name": "fam", "epochs": 2}``), or a spec file: a path (relative to the current
            directory) or a shipped spec's name (``"face_family"``, ``"jobs/face_family.yaml"``).
        overrides: applied on top, as the CLI's ``--set`` applies them: ``["epochs=2", "optim.lr=0.01"]``
            or ``{"epochs": 2, "optim.lr": 0.01}``.
        hub: the data hub (default: ``Hub()``, the local one or the one the environment names).
        address: a Ray cluster to train on (default: a local Ray).
        run_id: the run's id, which names its branches (default: ``<name>-<time>-<4 hex>``).
        hooks: run inside every worker of every model (see :mod:`flotilla.training.hooks`).
        progress: told each model's epochs, here on the driver (see :mod:`flotilla.progress`).

    Each model trains on its own branch ``exp-<run_id>[-<model>]`` of the data commit; with
    ``merge_into`` set the family is merged there only once every model succeeded. W&B logs each
    model (online when W&B is logged in, else offline under ``$FLOTILLA_HOME/runs/<run_id>``).

    Example::

        result = flotilla.train("face_family", overrides={"epochs": 2})
        result.models[0].model_uri, result.metric("age/mae")
    """
    spec = family_spec(spec, overrides)
    hub = hub or Hub()
    started = time.monotonic()
    data_ref = resolve_data(hub, spec.data.repo, spec.data.ref, spec.data.dataset)
    # tasks may read any label column the dataset declares: checked here, where the data is known
    schema = read_manifest(hub.repo(data_ref.repo), data_ref.commit, data_ref.dataset).label_schema
    check_tasks_fit(resolve_tasks(spec.tasks), schema, data_ref.dataset)
    run_id = run_id or new_run_id(spec)
    if spec.merge_into:  # before any training: a typo here used to surface only after hours, as a raw hub error
        check_merge_target(hub, spec.data.repo, spec.merge_into)
    parent = resolve(hub, spec.transfer.source, spec.data.repo) if spec.transfer else None
    runs = model_runs(spec, data_ref, run_id, parent)
    if parent:
        check_parent_fits(hub, runs)
    existing = set(hub.repo(data_ref.repo).branches())
    for run in runs:  # before the record is written: it must not overwrite the earlier run's
        if branch_of(run) in existing:
            raise run_exists(run, branch_of(run))
    record = RunRecord(
        run_id,
        spec.model_dump(mode="json"),
        data_ref,
        parent,
        {r.name: branch_of(r) for r in runs},
        time.time(),
        merge_into=spec.merge_into,
    )
    return train_family(hub, spec, runs, record, address=address, hooks=hooks, progress=progress, started=started)


def model_runs(
    spec: FamilySpec, data_ref: DataRef, run_id: str, parent: ModelLocation | None, branches: Mapping[str, str] | None = None
) -> list[ModelRun]:
    """The models of a run: one for ``shared``, one per task for ``separate``; on ``branches`` (a resumed run's) if given."""
    names = ["family"] if spec.strategy == "shared" else [t.name for t in resolve_tasks(spec.tasks)]
    tasks = [()] if spec.strategy == "shared" else [(t,) for t in resolve_tasks(spec.tasks)]
    return [
        ModelRun(spec, data_ref, run_id, name=n, tasks=t, parent=parent, branch=(branches or {}).get(n))
        for n, t in zip(names, tasks, strict=True)
    ]


def branch_of(run: ModelRun) -> str:
    """The branch a model of a run trains on (what :meth:`Repo.transact` makes of its name)."""
    return run.branch or branch_id(run.branch_name, prefix="exp-")


def train_family(
    hub: Hub,
    spec: FamilySpec,
    runs: Sequence[ModelRun],
    record: RunRecord,
    *,
    address: str | None = None,
    hooks: Sequence[WorkerHook] = (),
    progress: ProgressView | None = None,
    started: float | None = None,
    done: Mapping[str, ModelResult] | None = None,
) -> TrainResult:
    """Fit every model of ``runs`` (concurrently), then merge the family into ``merge_into`` and move its alias.

    The run's record is saved first (:mod:`flotilla.training.record`: what ``train resume`` continues
    from) and marked finished at the end. A fresh run and a resumed one go through here alike; ``done``: the models
    a resumed run had published already (by name), not trained again.
    """
    started = time.monotonic() if started is None else started
    run_id, data_ref = record.run_id, record.data
    fixed_size = ensure_ray(address)
    check_fits(
        {k: v * spec.scaling.workers for k, v in worker_resources(spec).items()},
        local=fixed_size,
        what="a model of this run (scaling.workers x scaling.cpus_per_worker/gpus_per_worker)",
        hint="lower scaling.workers or scaling.cpus_per_worker, or use a bigger cluster (--address)",
    )
    record.save(hub.settings)
    result = TrainResult(run_id, data_ref)
    pump = ProgressPump(progress) if progress else None
    with pump or contextlib.nullcontext(), ThreadPoolExecutor(max_workers=len(runs)) as pool:
        # separate models train concurrently; each tells the progress view its epochs
        def one(run: ModelRun) -> ModelResult:
            if done and run.name in done:
                return done[run.name]
            told = (pump.callback(run.name, spec.epochs),) if pump else ()
            return train_model(hub, run, callbacks=told, hooks=hooks)

        result.models = list(pool.map(one, runs))
    if spec.merge_into:  # only once every model of the family succeeded: never half a family on the target
        merge_family(hub.repo(data_ref.repo), result.models, spec.merge_into, run_id)
        if spec.alias:
            result.alias = move_alias(
                hub.repo(data_ref.repo), spec.name, spec.alias, run_id, into=spec.merge_into, reason=f"train run {run_id}"
            ).address
    record.done(hub.settings)
    result.wall_s = time.monotonic() - started
    return result


def new_run_id(spec: FamilySpec) -> str:
    """A fresh run id: a second in the name for people, 4 hex digits so two runs of one spec started in
    the same second (e.g. --set variants submitted together) never share a branch."""
    return branch_id(f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}")


def train_model(
    hub: Hub,
    run: ModelRun,
    *,
    callbacks: Sequence[UserCallback] = (),
    hooks: Sequence[WorkerHook] = (),
    report_to: Report | None = None,
) -> ModelResult:
    """Fit ``run``'s model on its branch with Ray Train, then publish its chosen checkpoint there.

    Ray must be connected (``train`` connects it; a sweep's trial runs inside it). ``callbacks`` are
    Ray Train callbacks, run on the controller beside the one that commits each checkpoint to the
    branch; ``hooks`` run inside every worker (see :mod:`flotilla.training.hooks`). The branch is
    kept whatever happens: it holds the model, or the checkpoints a failure left.

    With ``report_to`` a model that trains on one worker (:func:`~flotilla.training.inprocess.runs_in_process`)
    trains in this very process instead, with the same loop, checkpoints and commits, and each epoch's
    metrics go to ``report_to`` once its checkpoint is on the branch (``callbacks`` are then unused):
    a sweep's trial, where a controller and a worker group per trial cost far more than its epochs.
    """
    repo = hub.repo(run.data.repo)
    run_branch = repo.transact(
        run.branch_name,
        run.data.commit,
        branch=run.branch,
        resume=run.branch is not None,
        retention=Retention(on_success="keep", on_failure="keep"),
    )
    in_process = report_to is not None and run.branch is not None and runs_in_process(run.spec)
    if not in_process:  # in process, the branch is created off the way to the first batch (see training.inprocess)
        start_branch(run, run_branch)
    try:
        return _fit_and_publish(hub, run, run_branch, in_process, callbacks, hooks, report_to)
    finally:  # published or failed, this process is done with the branch (a kill leaves it claimed: orphaned)
        run_branch.release()


def _fit_and_publish(
    hub: Hub,
    run: ModelRun,
    run_branch: Experiment,
    in_process: bool,
    callbacks: Sequence[UserCallback],
    hooks: Sequence[WorkerHook],
    report_to: Report | None,
) -> ModelResult:
    repo = hub.repo(run.data.repo)
    branch = run_branch.branch
    creds_ref = ray.put(hub.credentials)
    tracking = plan_tracking(run, branch, hub.settings) if run.spec.tracking.wandb else None
    config = WorkerConfig(
        run.spec, run.tasks, run.data, creds_ref, run.run_id, run.name, branch, run.parent, tuple(hooks), tracking
    )
    if in_process and report_to is not None:  # (report_to again: for the type checker)
        t0 = time.monotonic()
        try:
            local = fit_in_process(repo, config, report_to, start=run_branch.start, fs=hub_filesystem(hub.credentials))
        except Exception as exc:
            raise training_failed(run, branch, exc) from None
        return publish_model(repo, run, branch, local, time.monotonic() - t0)
    scaling = run.spec.scaling
    ray_callbacks: list[Any] = [HubCommitCallback(creds_ref, run.data.repo, branch, run.name), *callbacks]
    trainer = TorchTrainer(
        functools.partial(train_loop_per_worker, config),
        scaling_config=ScalingConfig(
            num_workers=scaling.workers, use_gpu=scaling.use_gpu, resources_per_worker=worker_resources(run.spec)
        ),
        run_config=RunConfig(
            name=run.name,
            storage_path=f"{run.data.repo}/{branch}/runs/{run.run_id}",
            storage_filesystem=hub_filesystem(hub.credentials),
            failure_config=FailureConfig(max_failures=run.spec.failure.max_failures),
            callbacks=ray_callbacks,
        ),
    )
    t0 = time.monotonic()
    try:
        fit = trainer.fit()
    except Exception as exc:
        raise training_failed(run, branch, exc) from None
    return publish_model(repo, run, branch, fit, time.monotonic() - t0)


def start_branch(run: ModelRun, run_branch: Experiment) -> None:
    """Create the model's branch; a fresh run (no branch named) refuses one that exists."""
    try:
        run_branch.start()
    except ConflictError:
        raise run_exists(run, run_branch.branch) from None


def run_exists(run: ModelRun, branch: str) -> ConflictError:
    # Ray Train would find the earlier run's checkpoints under the same path and "resume" it: its old
    # weights would be published with this run's data commit and config in their card
    return ConflictError(
        f"run {run.run_id!r} already exists (branch {branch!r} in {run.data.repo!r}); a second run under the "
        "same id would pick up the first one's checkpoints",
        hint=f"leave run_id out (a fresh one is made), or pick another; 'flotilla train resume {run.run_id}' continues "
        "a killed run; delete the old branch to reuse the id",
    )


def training_failed(run: ModelRun, branch: str, exc: Exception) -> FlotillaError:
    """The error a failed fit raises: an :class:`InfrastructureError` when the hub, a connection or a node
    failed it (a sweep keeps such a trial's branch for ``sweep resume``, see :func:`is_infrastructure`)."""
    kind = InfrastructureError if is_infrastructure(exc) else FlotillaError
    return kind(
        f"training {run.name!r} of run {run.run_id!r} failed: {type(exc).__name__}: {str(exc)[:2000]}",
        hint=f"the checkpoints so far are on branch {branch!r}; the workers' output says why "
        "(the CLI keeps it in the run's ray.log and shows its last lines; -v streams it)",
    )


def worker_resources(spec: FamilySpec) -> dict[str, float]:
    """What one training worker of ``spec`` holds: its CPUs, and its GPUs when it uses any."""
    s = spec.scaling
    return {"CPU": s.cpus_per_worker, **({"GPU": s.gpus_per_worker or 1} if s.use_gpu else {})}


def check_parent_fits(hub: Hub, runs: Sequence[ModelRun]) -> None:
    """Load the transfer parent into each model of a run once, on the driver, before anything starts.

    A parent of another width or backbone (or, with ``load_heads``, a head of another shape) used to
    fail inside every worker: retried ``failure.max_failures`` times, then reported as a training
    failure with a hint about checkpoints on a branch that held none. Here it is the SpecError that
    names the mismatch, before a branch or a worker exists. The models are small, so this costs a
    download of the parent and a few hundred milliseconds.
    """
    for run in runs:
        heads = bool(run.spec.transfer and run.spec.transfer.load_heads)
        load_parent(build_model(run.spec, list(run.tasks)), run.parent, hub.credentials, heads=heads)


def check_merge_target(hub: Hub, repo_name: str, target: str) -> None:
    """``merge_into`` must exist and be clean: lakeFS refuses a merge into a branch with uncommitted
    changes, which used to surface only after the whole run had trained."""
    check_branch_id(target)
    repo = hub.repo(repo_name)
    if not repo.branch_exists(target):
        raise NotFoundError(
            f"merge_into: no branch {target!r} in repository {repo_name!r}; the trained models would have nowhere to go",
            hint="create it first (e.g. from main), set merge_into to an existing branch, or leave merge_into out",
        )
    require_clean(repo, target, f"merge the trained models into {target!r} (merge_into)")
