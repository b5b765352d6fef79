"""``flotilla train resume <run>``: continue a run whose driver was killed, from its last committed checkpoint.

A killed ``flotilla train`` leaves each model's branch with the checkpoints committed so far (one
commit per epoch, made by :class:`~flotilla.training.callbacks.HubCommitCallback`) and, often, the
next epoch half-written, staged. Resuming:

1. reads the run's record (:mod:`flotilla.training.record`): the spec, the pinned data commit, the
   transfer parent and the branches, exactly as the run started; nothing the user types again;
2. refuses a run that finished, one whose branch is gone, and one whose driver still runs (the
   branch's owner record, :mod:`flotilla.hub.owners`);
3. discards what is staged on each branch: the branch is its last commit again, whose Ray Train
   run snapshot (committed with each checkpoint, after Ray wrote it) names that checkpoint as the
   latest;
4. trains each model that has no published model yet on its own branch, under the same Ray Train
   run name and storage path: Ray Train restores its snapshot and the loop starts at the epoch after
   the last committed checkpoint, so no epoch before the kill is trained again; a model published
   before the kill is read back, not retrained;
5. merges the family into ``merge_into`` (and moves its alias) as the spec said, once, as ``train``
   would have.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from flotilla.errors import ConflictError, NotFoundError
from flotilla.hub import owners
from flotilla.hub.client import Hub
from flotilla.settings import Settings
from flotilla.training.publish import ModelResult, published_model
from flotilla.training.record import RunRecord, run_dir
from flotilla.training.run import TrainResult, model_runs, train_family

if TYPE_CHECKING:
    from flotilla.hub.repo import Repo
    from flotilla.progress import ProgressView
    from flotilla.training.config import ModelRun
    from flotilla.training.hooks import WorkerHook


def resume(
    run_id: str,
    *,
    hub: Hub | None = None,
    address: str | None = None,
    hooks: Sequence[WorkerHook] = (),
    progress: ProgressView | None = None,
) -> TrainResult:
    """Continue the killed run ``run_id`` from the last committed checkpoint on each model's branch.

    The result is the run's, as ``flotilla.train`` would have returned it: same run id, same branches,
    merged into the spec's ``merge_into`` once. Raises :class:`~flotilla.errors.NotFoundError` for an
    unknown run or a deleted branch, :class:`~flotilla.errors.ConflictError` for a finished run
    ("nothing to resume") or one still running.
    """
    started = time.monotonic()
    record = RunRecord.load(run_id, hub.settings if hub else Settings.from_env())  # before the hub: a typo fails fast
    hub = hub or Hub()
    spec = record.family()
    repo = hub.repo(record.data.repo)
    if record.finished is not None:
        merged = f" and merged into {record.merge_into!r}" if record.merge_into else ""
        raise ConflictError(
            f"nothing to resume: run {run_id!r} finished at {_when(record.finished)}{merged}",
            hint="its models are on branches " + ", ".join(record.branches.values()),
        )
    runs = model_runs(spec, record.data, run_id, record.parent, record.branches)
    for run in runs:
        check_resumable(repo, run, hub)
    done: dict[str, ModelResult] = {}
    for run in runs:
        assert run.branch is not None  # model_runs named every branch
        published = published_model(repo, run, run.branch)
        if published is not None:
            done[run.name] = published
        else:  # the epoch the kill cut short is trained again, from its start
            repo.discard_uncommitted(run.branch)
    return train_family(hub, spec, runs, record, address=address, hooks=hooks, progress=progress, started=started, done=done)


def check_resumable(repo: Repo, run: ModelRun, hub: Hub) -> None:
    """The model's branch must exist, and the process that trained on it must be gone."""
    assert run.branch is not None
    if not repo.branch_exists(run.branch):
        raise NotFoundError(
            f"run {run.run_id!r} cannot be resumed: its branch {run.branch!r} no longer exists in {repo.name!r} "
            "(deleted), and its checkpoints went with it",
            hint=f"train it again (a new run); its spec as it ran is in {run_dir(run.run_id, hub.settings) / 'run.json'}",
        )
    owner = owners.owner_of(hub.settings.home, repo.name, run.branch)
    if owner is not None and not owner.gone() and not owner.is_mine():
        raise ConflictError(
            f"run {run.run_id!r} is still running: branch {run.branch!r} is being written by {owner.describe()}",
            hint="wait for it to end, or stop it first (its checkpoints stay on the branch for 'flotilla train resume')",
        )


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
