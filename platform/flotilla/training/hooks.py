"""Worker hooks: code of yours that runs inside every training worker, at fixed points of the loop.

Ray Train's own callbacks (``ray.train.UserCallback``, passed as ``callbacks=``) run on the
controller and see only what the workers report. A :class:`WorkerHook` runs *in* each worker
process, next to the model, so it can do what only a worker can: log something rank-local, check
an invariant, or (the tests' use, ``tests/chaos.py``) kill the worker at a chosen epoch to show
that Ray Train restarts the group from its last checkpoint.

Hooks travel to the workers inside the pickled :class:`~flotilla.training.config.WorkerConfig`:
they must pickle (build clients and open files lazily, never in ``__init__``), and the same hook
object runs on every rank, so it decides from the event which rank it is on.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EpochStart:
    """Where a worker stands when an epoch begins."""

    epoch: int
    rank: int
    world_size: int
    resumed_from: int | None
    """The checkpoint's epoch this worker group restarted from, or None on the run's first start."""


class WorkerHook:
    """Base class of the hooks ``train(..., hooks=...)`` and ``train_model(..., hooks=...)`` take.

    Override the methods you need; the others do nothing. An exception raised here fails the
    worker, which Ray Train handles as any worker failure (``failure.max_failures`` restarts).
    """

    def on_epoch_start(self, event: EpochStart) -> None:
        """Before the epoch's first batch, on every rank."""
