"""The typed hand-offs of training one model: what to train (:class:`ModelRun`) and what each worker gets.

``train`` makes one :class:`ModelRun` per model of a family, a sweep one per trial, and both hand it
to :func:`flotilla.training.train_model`. That function turns it into a :class:`WorkerConfig`, the
one object Ray pickles to every worker: the typed spec and tasks themselves (pydantic models and
frozen dataclasses pickle as they are, so nothing is dumped to a dict and validated again on the
worker), and the hub credentials only as an object-store reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flotilla.data.pinning import DataRef
from flotilla.models.tasks import TaskSpec, resolve_tasks
from flotilla.registry.address import ModelLocation
from flotilla.specs import FamilySpec
from flotilla.training.hooks import WorkerHook

ScoreFn = Callable[[dict[str, Any]], float | None]
"""A checkpoint's score from the metrics its epoch reported (None: this epoch cannot be scored)."""

CheckpointRank = tuple[ScoreFn, str] | str | None
"""Which checkpoint a run publishes: None (the first task's primary metric decides), ``"last"`` (the
last epoch's), or ``(score, mode)`` with mode ``"min"`` or ``"max"`` (ties go to the earlier epoch)."""


@dataclass(frozen=True)
class ModelRun:
    """One model to fit on its own branch and publish there.

    ``name`` is the model's name in the run (``"family"`` for a shared model, a task's name for one
    of a ``separate`` family); ``tasks`` default to every task of ``spec``.

    ``branch`` None trains on ``exp-<run_id>`` (``exp-<run_id>-<name>`` for a model other than
    ``"family"``) created from the data commit, and refuses one that exists: Ray Train would resume
    the earlier run's checkpoints as this run's. A named branch is created when missing and resumed
    when it exists: a sweep's trial that Tune starts again goes on from the checkpoints on its branch.
    """

    spec: FamilySpec
    data: DataRef
    run_id: str
    name: str = "family"
    tasks: tuple[TaskSpec, ...] = ()
    parent: ModelLocation | None = None
    branch: str | None = None
    rank: CheckpointRank = None
    wandb_group: str | None = None  # the W&B group (default: the run id; a sweep: the sweep's id)
    wandb_name: str | None = None  # the W&B run's name (default: ``<run_id>/<name>``; a sweep: the trial id)
    folder: Path | None = None  # W&B's folder as the caller chose it (default: $WANDB_DIR, else $FLOTILLA_HOME/runs/<run_id>)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks) or tuple(resolve_tasks(self.spec.tasks)))
        if isinstance(self.rank, str) and self.rank != "last":
            raise ValueError(f"rank: {self.rank!r} is not 'last', None or a (score, mode) pair")

    @property
    def branch_name(self) -> str:
        """The name :meth:`Repo.transact` makes the branch from when ``branch`` is None."""
        return self.run_id if self.name == "family" else f"{self.run_id}-{self.name}"


@dataclass(frozen=True)
class TrackingPlan:
    """Rank 0's W&B run, decided where the model's training starts (:func:`flotilla.training.tracking.plan_tracking`).

    ``id`` is the model's branch: unique in the repository, free of W&B's reserved characters, and the
    same when Ray Train restarts the run, so the restart goes on logging into the same W&B run.
    """

    project: str
    id: str
    group: str
    name: str
    mode: str  # online | offline (| disabled, from WANDB_MODE)
    dir: str  # W&B writes its ``wandb/`` folder here


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a training worker needs, pickled to each one by Ray.

    ``credentials`` is an object-store reference (``ray.put(hub.credentials)``) that the worker
    resolves: the keys never sit in this object, so neither a pickle of it nor W&B's run config
    (built from named fields, see :mod:`flotilla.training.tracking`) can carry them.
    """

    spec: FamilySpec
    tasks: tuple[TaskSpec, ...]
    data: DataRef
    credentials: Any  # ray.ObjectRef[HubCredentials]
    run_id: str
    model_name: str
    branch: str
    parent: ModelLocation | None = None
    hooks: tuple[WorkerHook, ...] = field(default=())
    tracking: TrackingPlan | None = None  # None: no W&B (spec.tracking.wandb false)
