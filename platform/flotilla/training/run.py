"""``flotilla.train(spec)``: a family of models, each run on its own hub branch.

The data ref is resolved once to a commit id; each model (one for ``shared``,
one per task for ``separate`` — the several-teams case) gets a branch created
from that commit. Ray Train writes checkpoints straight onto the branch through
lakeFS's S3 gateway (so every node of a cluster reaches them), a controller
callback commits each checkpoint (and each failure/restart) so the branch
history tells the run's story, and at the end the best checkpoint becomes
``models/<run>/<model>/model.pt`` with its model card and metrics, committed
together; merged into ``merge_into`` (if set) only once every model of the
family has succeeded, so a failed model never leaves half a family there.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flotilla.cluster.connect import ensure_ray
from flotilla.cluster.fit import check_fits
from flotilla.data.pinning import DataRef, resolve_data
from flotilla.errors import ConfigError, ConflictError, FlotillaError, NotFoundError
from flotilla.hub.client import Hub
from flotilla.hub.experiment import Retention
from flotilla.names import branch_id, check_branch_id
from flotilla.specs import FamilySpec, load_family_spec
from flotilla.training import artifacts
from flotilla.training.callbacks import HubCommitCallback

log = logging.getLogger(__name__)


@dataclass
class ModelResult:
    name: str
    tasks: list[str]
    branch: str
    commit: str
    model_uri: str
    metrics: dict[str, float]
    history: list[dict[str, Any]]
    wall_s: float
    merge_commit: str | None = None


@dataclass
class TrainResult:
    run_id: str
    data: DataRef
    models: list[ModelResult] = field(default_factory=list)
    wall_s: float = 0.0

    def metric(self, key: str) -> float:
        """A validation metric like ``"age/mae"`` from whichever model trained that task."""
        for m in self.models:
            if key in m.metrics:
                return m.metrics[key]
        raise KeyError(key)


def hub_filesystem(credentials: Any):
    """pyarrow S3 filesystem over lakeFS's gateway; bucket = repository, key = ``<ref>/<path>``."""
    import pyarrow.fs as pafs

    # lakeFS has no object for a branch's "directory" itself: never try to create one
    return pafs.S3FileSystem(**credentials.s3_options(), check_directory_existence_before_creation=True)


def train(
    spec: FamilySpec | str | Path,
    *,
    hub: Hub | None = None,
    address: str | None = None,
    run_id: str | None = None,
    chaos: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``spec``'s family; return where each model, its card and its metrics live."""
    import ray

    if not isinstance(spec, FamilySpec):
        spec = load_family_spec(spec)
    hub = hub or Hub()
    started = time.monotonic()
    data_ref = resolve_data(hub, spec.data.repo, spec.data.ref, spec.data.dataset)
    # a second in the name for people, 4 hex digits so two runs of one spec started in the same second
    # (e.g. --set variants submitted together) never share a branch
    run_id = run_id or branch_id(f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}")
    if spec.merge_into:  # before any training: a typo here used to surface only after hours, as a raw hub error
        _check_merge_target(hub, spec.data.repo, spec.merge_into)
    parent = artifacts.resolve_model(hub, spec.transfer.source, spec.data.repo) if spec.transfer else None
    tasks = [t.to_dict() for t in spec.task_specs()]
    groups = [("family", tasks)] if spec.strategy == "shared" else [(t["name"], [t]) for t in tasks]
    if parent:
        _check_parent_fits(hub, spec, parent, groups)
    fixed_size = ensure_ray(address)
    per_worker = {"CPU": spec.scaling.cpus_per_worker, **({"GPU": spec.scaling.gpus_per_worker or 1} if spec.scaling.use_gpu else {})}
    check_fits({k: v * spec.scaling.workers for k, v in per_worker.items()}, local=fixed_size,
               what="a model of this run (scaling.workers x scaling.cpus_per_worker/gpus_per_worker)",
               hint="lower scaling.workers or scaling.cpus_per_worker, or use a bigger cluster (--address)")
    creds_ref = ray.put(hub.credentials)
    result = TrainResult(run_id, data_ref)

    def one(name: str, group: list[dict[str, Any]]) -> ModelResult:
        return _train_one(hub, spec, data_ref, run_id, name, group, parent, creds_ref, chaos)

    with ThreadPoolExecutor(max_workers=len(groups)) as pool:  # separate models train concurrently
        result.models = list(pool.map(lambda g: one(*g), groups))
    if spec.merge_into:  # only once every model of the family succeeded: never half a family on the target
        _merge_family(hub.repo(data_ref.repo), result.models, spec.merge_into, run_id)
    result.wall_s = time.monotonic() - started
    return result


def _check_parent_fits(hub: Hub, spec: FamilySpec, parent: Any, groups: list[tuple[str, list[dict[str, Any]]]]) -> None:
    """Load the transfer parent into each model of this run once, on the driver, before anything starts.

    A parent of another width or backbone (or, with ``load_heads``, a head of another shape) used to
    fail inside every worker: retried ``failure.max_failures`` times, then reported as a training
    failure with a hint about checkpoints on a branch that held none. Here it is the SpecError that
    names the mismatch, before a branch or a worker exists. The models are small, so this costs a
    download of the parent and a few hundred milliseconds.
    """
    from flotilla.models.tasks import resolve_tasks
    from flotilla.training.loop import load_parent, build_model

    config = {"parent": parent.__dict__, "spec": spec.model_dump(mode="json")}
    for _, group in groups:
        load_parent(config, build_model(spec, resolve_tasks(group)), hub.credentials)


def _check_merge_target(hub: Hub, repo_name: str, target: str) -> None:
    """``merge_into`` must exist and be clean: lakeFS refuses a merge into a branch with uncommitted
    changes, which used to surface only after the whole run had trained."""
    from flotilla.data.gate import require_clean

    check_branch_id(target)
    repo = hub.repo(repo_name)
    if not repo.branch_exists(target):
        raise NotFoundError(
            f"merge_into: no branch {target!r} in repository {repo_name!r}; the trained models would have nowhere to go",
            hint="create it first (e.g. from main), set merge_into to an existing branch, or leave merge_into out",
        )
    require_clean(repo, target, f"merge the trained models into {target!r} (merge_into)")


def _merge_family(repo: Any, models: list[ModelResult], target: str, run_id: str) -> None:
    """Merge every model of the family into ``target`` in one merge, or none of them.

    With several models (``strategy: separate``) merging them one by one could leave the first on
    the target when a later one conflicts or is refused (a hook, the hub going down). So they are
    merged into a staging branch cut from the target's head first, and the staging branch is merged
    into the target once: lakeFS makes that last merge atomic. Each model keeps its own promotion
    commit, with its metadata, in the history.
    """
    if len(models) == 1:
        m = models[0]
        m.merge_commit = repo.merge(m.branch, target, f"Promote model {m.name} of run {run_id}", repo.commit_info(m.commit).metadata)
        return
    staging = repo.transact(f"{run_id}-{secrets.token_hex(3)}", target, prefix="promote-",
                            retention=Retention(on_success="delete", on_failure="delete"))
    try:
        with staging:
            staged = {m.name: repo.merge(m.branch, staging.branch, f"Promote model {m.name} of run {run_id}",
                                         repo.commit_info(m.commit).metadata) for m in models}
            repo.merge(staging.branch, target, f"Promote the {len(models)} models of run {run_id}",
                       {"flotilla.kind": "family-promotion", "flotilla.run_id": run_id, "flotilla.models": ",".join(staged)})
    except FlotillaError as exc:  # name the target, not the staging branch that is gone
        raise exc.reword(
            f"the {len(models)} models of run {run_id!r} were not merged into {target!r} (none of them is on it): "
            + exc.message.replace(staging.branch, target),
            hint=f"the models stay on branches {', '.join(m.branch for m in models)}; fix the cause, then merge each "
                 f"into {target!r} (repo.merge(branch, {target!r})) or train again",
        ) from None
    for m in models:  # each model's own promotion commit (with its provenance), now in the target's history
        m.merge_commit = staged[m.name]


def _train_one(
    hub, spec, data_ref, run_id, name, tasks, parent, creds_ref, chaos, *, branch: str | None = None, callbacks: tuple = (),
    rank: tuple[Any, str] | str | None = None,
) -> ModelResult:
    """Fit one model on its branch (created from the data commit unless it exists, e.g. a resumed trial).

    ``rank`` (a score function over an epoch's metrics, and a mode; or ``"last"``) picks the checkpoint
    published; by default the first task's primary metric does. A sweep passes its objective.
    """
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from flotilla.training.loop import train_loop_per_worker

    repo = hub.repo(data_ref.repo)
    # the run's branch outlives the run either way: it holds the model, or the checkpoints a failure left
    run_branch = repo.transact(
        run_id if name == "family" else f"{run_id}-{name}", data_ref.commit, branch=branch,
        resume=branch is not None,  # a sweep's trial: on resume it goes on where its checkpoints are
        retention=Retention(on_success="keep", on_failure="keep"),
    )
    try:
        run_branch.start()
    except ConflictError:
        # Ray Train would find the earlier run's checkpoints under the same path and "resume" it: its old
        # weights would be published with this run's data commit and config in their card
        raise ConflictError(
            f"run {run_id!r} already exists (branch {run_branch.branch!r} in {data_ref.repo!r}); a second run under the same "
            "id would pick up the first one's checkpoints",
            hint="leave run_id out (a fresh one is made), or pick another; delete the old branch to reuse the id",
        ) from None
    branch = run_branch.branch
    config = {
        "spec": spec.model_dump(mode="json"),
        "tasks": tasks,
        "data_ref": data_ref.__dict__,
        "credentials": creds_ref,
        "run_id": run_id,
        "model_name": name,
        "branch": branch,
        "parent": None if parent is None else parent.__dict__,
        "chaos": chaos,
    }
    resources = {"CPU": spec.scaling.cpus_per_worker}
    if spec.scaling.use_gpu:
        resources["GPU"] = spec.scaling.gpus_per_worker or 1
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=spec.scaling.workers, use_gpu=spec.scaling.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=name,
            storage_path=f"{data_ref.repo}/{branch}/runs/{run_id}",
            storage_filesystem=hub_filesystem(hub.credentials),
            failure_config=FailureConfig(max_failures=spec.failure.max_failures),
            callbacks=[HubCommitCallback(creds_ref, data_ref.repo, branch, name), *callbacks],
        ),
    )
    t0 = time.monotonic()
    try:
        fit = trainer.fit()
    except Exception as exc:
        raise FlotillaError(
            f"training {name!r} of run {run_id!r} failed: {type(exc).__name__}: {str(exc)[:2000]}",
            hint=f"the checkpoints so far are on branch {branch!r}; see the worker logs above",
        ) from None
    wall = time.monotonic() - t0
    return _publish(hub, spec, data_ref, run_id, name, tasks, branch, fit, parent, wall, rank)


def _best_checkpoint(fit, tasks, rank):
    """The checkpoint to publish: best by ``rank`` or the first task's metric; the last one for ``rank=="last"``."""
    from flotilla.models.tasks import resolve_tasks

    if rank == "last" or not fit.best_checkpoints:
        return fit.checkpoint
    if rank is None:
        primary = resolve_tasks(tasks)[0]
        return fit.get_best_checkpoint(metric=f"val/{primary.primary_key}", mode=primary.mode)
    score, mode = rank
    scored = [(s, i, c) for i, (c, m) in enumerate(fit.best_checkpoints) if (s := score(m)) is not None]
    if not scored:
        return fit.checkpoint
    sign = 1.0 if mode == "max" else -1.0
    return max(scored, key=lambda x: (sign * x[0], -x[1]))[2]  # ties: the earlier epoch


def _publish(hub, spec, data_ref, run_id, name, tasks, branch, fit, parent, wall, rank=None) -> ModelResult:
    """Best checkpoint → models/<run>/<model>/, with card and history, in one commit (``train`` merges)."""
    import json

    from flotilla.training.loop import CKPT_META, CKPT_MODEL

    repo = hub.repo(data_ref.repo)
    best = _best_checkpoint(fit, tasks, rank)
    with best.as_directory() as d:
        weights = (Path(d) / CKPT_MODEL).read_bytes()
        meta = json.loads((Path(d) / CKPT_META).read_text())
    history = json.loads(artifacts.dumps(_final_history(fit, meta)))
    best_metrics = {k[4:]: v for k, v in history[meta["epoch"]].items() if k.startswith("val/")} if len(history) > meta["epoch"] else {}
    card = artifacts.model_card(
        run_id=run_id, model=name, tasks=tasks, metrics=best_metrics, history=history, data_ref=data_ref,
        branch=branch, spec=spec, parent=parent, code=artifacts.code_version(), best_epoch=meta["epoch"],
    )
    base = artifacts.model_dir(run_id, name)
    repo.put(branch, base + "model.pt", weights)
    repo.put(branch, base + "card.json", artifacts.dumps(card))
    repo.put(branch, base + "metrics.json", artifacts.dumps(history))
    meta_commit = {
        "flotilla.kind": "model",
        "flotilla.run_id": run_id,
        "flotilla.model": name,
        "flotilla.data_commit": data_ref.commit,
        "flotilla.git_sha": card["code"]["git_sha"],
        **({"flotilla.parent": parent.uri} if parent else {}),
        **{f"metric.{k}": v for k, v in best_metrics.items() if not k.endswith("/n")},
    }
    commit = repo.commit(branch, f"Model {name} of run {run_id} (best epoch {meta['epoch']})", meta_commit)
    return ModelResult(name, [t["name"] for t in tasks], branch, commit.id, f"lakefs://{data_ref.repo}/{commit.id}/{base}model.pt", best_metrics, history, wall)


def _final_history(fit, meta) -> list[dict[str, Any]]:
    history = meta["history"]
    df = getattr(fit, "metrics_dataframe", None)
    if df is not None and len(df) > len(history):  # epochs after the best checkpoint
        history = [{k: v for k, v in row.items() if not str(k).startswith("_")} for row in df.to_dict("records")]
    return history
