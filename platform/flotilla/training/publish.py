"""A finished fit becomes a model on its branch; a finished family lands on its target whole.

:func:`publish_model` turns the checkpoint a run chose (:func:`best_checkpoint`) into
``models/<run>/<model>/`` (weights, card, per-epoch metrics, and a dirty tree's ``code.diff``) in
one commit on the model's own branch. :func:`merge_family` then merges every model of a run into
``merge_into`` in one step, or none of them.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flotilla.display import metric_text, short_commit
from flotilla.errors import FlotillaError
from flotilla.hub.experiment import SCRATCH
from flotilla.lineage import FamilyPromotion, ModelCommit
from flotilla.models.tasks import TaskSpec
from flotilla.registry.address import model_dir
from flotilla.training import artifacts
from flotilla.training.branchlock import branch_lock
from flotilla.training.config import CheckpointRank, ModelRun
from flotilla.training.environment import capture_environment
from flotilla.training.finite import refuse_nonfinite
from flotilla.training.loop import CKPT_META, CKPT_MODEL

if TYPE_CHECKING:
    from flotilla.hub.repo import Repo


@dataclass
class ModelResult:
    """Where one trained model lives: its branch, the commit holding it, its URI and its metrics."""

    name: str
    tasks: list[str]
    branch: str
    commit: str
    model_uri: str
    metrics: dict[str, float]
    history: list[dict[str, Any]]
    wall_s: float
    merge_commit: str | None = None
    """The merge that put it on ``merge_into`` (set by :func:`merge_family`; None when not merged)."""
    wandb_run: str | None = None
    """The id of its W&B run (in its card too); None when W&B did not track it."""

    def __repr__(self) -> str:
        merged = f", merged {short_commit(self.merge_commit)}" if self.merge_commit else ""
        return (
            f"ModelResult({self.name}: {self.model_uri}, {metric_text(self.metrics)}, "
            f"branch {self.branch}, commit {short_commit(self.commit)}{merged})"
        )


def best_checkpoint(fit: Any, tasks: Sequence[TaskSpec], rank: CheckpointRank) -> Any:
    """The checkpoint of ``fit`` (Ray Train's ``Result``, or an in-process ``LocalFit``) to publish, as ``rank``
    says (see :data:`CheckpointRank`).

    The last checkpoint when no epoch kept one as best, or when no epoch can be scored.
    """
    if isinstance(rank, str) or not fit.best_checkpoints:  # "last", the only string ModelRun takes
        return fit.checkpoint
    if rank is None:
        primary = tasks[0]
        return fit.get_best_checkpoint(metric=f"val/{primary.primary_key}", mode=primary.mode)
    score, mode = rank
    scored = [(s, i, c) for i, (c, m) in enumerate(fit.best_checkpoints) if (s := score(m)) is not None]
    if not scored:
        return fit.checkpoint
    sign = 1.0 if mode == "max" else -1.0
    return max(scored, key=lambda x: (sign * x[0], -x[1]))[2]  # ties: the earlier epoch


def final_history(fit: Any, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Every epoch's metrics: the chosen checkpoint's history, plus the epochs that ran after it.

    ``fit`` is Ray Train's ``Result`` (its ``metrics_dataframe``) or an in-process
    :class:`~flotilla.training.inprocess.LocalFit` (its ``history``).
    """
    history: list[dict[str, Any]] = meta["history"]
    df = getattr(fit, "metrics_dataframe", None)
    if df is not None and len(df) > len(history):
        history = [{k: v for k, v in row.items() if not str(k).startswith("_")} for row in df.to_dict("records")]
    full = getattr(fit, "history", None)
    if isinstance(full, list) and len(full) > len(history):
        history = full
    return history


def publish_model(repo: Repo, run: ModelRun, branch: str, fit: Any, wall_s: float) -> ModelResult:
    """The chosen checkpoint → ``models/<run>/<model>/``, with card and history, in one commit on ``branch``."""
    best = best_checkpoint(fit, run.tasks, run.rank)
    with best.as_directory() as d:
        weights = (Path(d) / CKPT_MODEL).read_bytes()
        meta = json.loads((Path(d) / CKPT_META).read_text())
    raw = final_history(fit, meta)
    epoch = meta["epoch"]
    chosen = raw[epoch] if len(raw) > epoch else {}
    refuse_nonfinite(
        f"model {run.name!r} of run {run.run_id!r}",
        branch,
        epoch,
        {k: v for k, v in chosen.items() if k.startswith(("val/", "train/"))},
        weights,
        run.spec.optim.lr,
    )
    history = json.loads(artifacts.dumps(raw))
    best_metrics = {k[4:]: v for k, v in history[epoch].items() if k.startswith("val/")} if len(history) > epoch else {}
    code = artifacts.code_version()
    diff = code.storable_diff(repo.hub.credentials.secret_access_key)
    card = artifacts.model_card(
        run_id=run.run_id,
        model=run.name,
        tasks=[t.to_dict() for t in run.tasks],
        metrics=best_metrics,
        history=history,
        data_ref=run.data,
        branch=branch,
        spec=run.spec,
        parent=run.parent,
        code=code.card_block(diff_stored=diff is not None),
        best_epoch=epoch,
        # rank 0 records where it trained; a checkpoint from before it did gets this process's
        environment=meta.get("environment") or capture_environment(run.spec.scaling.workers, run.spec.backend).to_dict(),
        tracking=meta.get("tracking") or {},  # rank 0's W&B run, as it started
    )
    base = model_dir(run.run_id, run.name)
    record = ModelCommit(
        run.run_id, run.name, run.data.commit, code.git_sha, run.parent.uri if run.parent else None, best_metrics
    )
    with branch_lock(repo.name, branch):  # a separate family's trial: its other models share the branch
        repo.put(branch, base + "model.pt", weights)
        repo.put(branch, base + "card.json", artifacts.dumps(card.to_dict()))
        repo.put(branch, base + "metrics.json", artifacts.dumps(history))
        if diff is not None:
            repo.put(branch, base + artifacts.CODE_DIFF, diff)
        commit = repo.commit(branch, f"Model {run.name} of run {run.run_id} (best epoch {epoch})", record.to_metadata())
    return ModelResult(
        run.name,
        [t.name for t in run.tasks],
        branch,
        commit.id,
        f"lakefs://{run.data.repo}/{commit.id}/{base}model.pt",
        best_metrics,
        history,
        wall_s,
        wandb_run=(meta.get("tracking") or {}).get("wandb", {}).get("id"),
    )


def published_model(repo: Repo, run: ModelRun, branch: str) -> ModelResult | None:
    """The model :func:`publish_model` already committed on ``branch`` (a run killed after publishing it), or None.

    Read back from its card and metrics on the branch, so that a resumed run merges it instead of training again.
    """
    base = model_dir(run.run_id, run.name)
    if not repo.exists(branch, base + "model.pt"):
        return None
    commit = repo.log(branch, 1, prefix=base + "model.pt")[0].id  # the commit that published it
    card = json.loads(repo.get(commit, base + "card.json"))
    return ModelResult(
        run.name,
        [t.name for t in run.tasks],
        branch,
        commit,
        f"lakefs://{run.data.repo}/{commit}/{base}model.pt",
        dict(card.get("metrics") or {}),
        json.loads(repo.get(commit, base + "metrics.json")),
        0.0,
        wandb_run=((card.get("tracking") or {}).get("wandb") or {}).get("id"),
    )


def merge_family(repo: Repo, models: Sequence[ModelResult], target: str, run_id: str) -> None:
    """Merge every model of the family into ``target`` in one merge, or none of them; sets each ``merge_commit``.

    With several models (``strategy: separate``) merging them one by one could leave the first on
    the target when a later one conflicts or is refused (a hook, the hub going down). So they are
    merged into a staging branch cut from the target's head first, and the staging branch is merged
    into the target once: lakeFS makes that last merge atomic. Each model keeps its own promotion
    commit, with its metadata, in the history.
    """
    if len(models) == 1:
        m = models[0]
        m.merge_commit = repo.merge(
            m.branch, target, f"Promote model {m.name} of run {run_id}", repo.commit_info(m.commit).metadata
        )
        return
    staging = repo.transact(
        f"{run_id}-{secrets.token_hex(3)}",
        target,
        prefix="promote-",
        retention=SCRATCH,
    )
    try:
        with staging:
            staged = {
                m.name: repo.merge(
                    m.branch, staging.branch, f"Promote model {m.name} of run {run_id}", repo.commit_info(m.commit).metadata
                )
                for m in models
            }
            repo.merge(
                staging.branch,
                target,
                f"Promote the {len(models)} models of run {run_id}",
                FamilyPromotion(run_id, tuple(staged)).to_metadata(),
            )
    except FlotillaError as exc:  # name the target, not the staging branch that is gone
        raise exc.reword(
            f"the {len(models)} models of run {run_id!r} were not merged into {target!r} (none of them is on it): "
            + exc.message.replace(staging.branch, target),
            hint=f"the models stay on branches {', '.join(m.branch for m in models)}; fix the cause, then merge each "
            f"into {target!r} (repo.merge(branch, {target!r})) or train again",
        ) from None
    for m in models:  # each model's own promotion commit (with its provenance), now in the target's history
        m.merge_commit = staged[m.name]
