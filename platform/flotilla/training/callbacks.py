"""Lifecycle callbacks on the Ray Train controller: the run's story as commits on its branch, and its progress.

After each checkpoint is persisted (through the S3 gateway, onto the branch),
commit it with the epoch and validation metrics as metadata; after a worker
failure, record an empty commit saying so, so that the branch history shows the
crash and the resume from the last checkpoint. Each report is also handed to the
driver (:class:`ProgressPump`), whose view shows it: the controller is an actor, so
a Ray queue carries the events across.
"""

from __future__ import annotations

import logging
import queue as stdqueue
import threading
from collections.abc import Mapping
from typing import Any

import ray.train

from flotilla.hub.client import repo_for
from flotilla.hub.repo import Repo
from flotilla.lineage import CheckpointCommit, FailureCommit
from flotilla.progress import EpochEvent, ProgressView

log = logging.getLogger(__name__)


class HubCommitCallback(ray.train.UserCallback):
    """Commits on the run's branch from the Train controller.

    ``credentials`` is best an object-store reference (``ray.put(creds)``): the callback is pickled
    to the controller, and a reference keeps the keys themselves out of that pickle.
    """

    def __init__(self, credentials: Any, repo: str, branch: str, model: str) -> None:
        self.credentials = credentials
        self.repo_name = repo
        self.branch = branch
        self.model = model
        self._repo: Repo | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_repo"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._repo = None

    @property
    def repo(self) -> Repo:
        if self._repo is None:
            creds = ray.get(self.credentials) if isinstance(self.credentials, ray.ObjectRef) else self.credentials
            self._repo = repo_for(creds, self.repo_name)
        return self._repo

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if checkpoint is None or not metrics:
            return
        message, meta = checkpoint_commit(self.model, metrics[0])
        try:
            self.repo.commit(self.branch, message, meta)
        except Exception as exc:  # never fail training because a commit failed; the files stay on the branch
            log.warning("could not commit checkpoint to %s: %s", self.branch, exc)

    def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]) -> None:
        message, meta = failure_commit(self.model, worker_exceptions)
        try:
            self.repo.commit(self.branch, message, meta, allow_empty=True)
        except Exception as exc:
            log.warning("could not record the failure on %s: %s", self.branch, exc)


def checkpoint_commit(model: str, metrics: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The message and metadata of the commit that records one epoch's checkpoint on the run's branch.

    One place for both ways a model trains (the Ray Train callback above, the in-process session of
    :mod:`flotilla.training.inprocess`), so a branch tells the same story whichever ran it.
    """
    resumed = metrics.get("resumed_from_epoch", -1)
    meta = CheckpointCommit(
        model,
        metrics.get("epoch"),
        {k: v for k, v in metrics.items() if isinstance(v, float)},
        resumed if resumed >= 0 else None,
    ).to_metadata()
    return f"{model}: checkpoint epoch {metrics.get('epoch')}", meta


def failure_commit(model: str, errors: Mapping[int, BaseException]) -> tuple[str, dict[str, Any]]:
    """The message and metadata of the empty commit that records a failure of the model's workers (rank -> error)."""
    ranks = ", ".join(str(r) for r in sorted(errors))
    why = "; ".join(f"rank {r}: {type(e).__name__}" for r, e in sorted(errors.items()))
    # Ray calls this for the last, fatal failure too: whether a restart follows is failure.max_failures'
    message = (
        f"{model}: worker failure on rank(s) {ranks} (Ray Train restarts from the last checkpoint "
        "while failure.max_failures allows)"
    )
    return message, FailureCommit(model, why).to_metadata()


class ProgressCallback(ray.train.UserCallback):
    """Hands each report of rank 0 (epoch from 1, metrics) to the driver through ``queue``."""

    def __init__(self, queue: Any, model: str, epochs: int) -> None:
        self.queue = queue
        self.model = model
        self.epochs = epochs

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if not metrics:
            return
        m = metrics[0]
        numbers = {k: float(v) for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        try:
            self.queue.put_nowait(EpochEvent(self.model, int(m.get("epoch", 0)) + 1, self.epochs, numbers))
        except Exception as exc:  # progress is never worth failing a run for
            log.debug("progress event lost: %s", exc)


class ProgressPump:
    """On the driver: a Ray queue the controllers' :class:`ProgressCallback` fill, drained into ``view``.

    Used as a context manager around the runs; ``callback(model, epochs)`` makes one per model.
    """

    def __init__(self, view: ProgressView) -> None:
        from ray.util.queue import Queue

        self.view = view
        self.queue = Queue(actor_options={"num_cpus": 0})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="flotilla-progress", daemon=True)

    def callback(self, model: str, epochs: int) -> ProgressCallback:
        return ProgressCallback(self.queue, model, epochs)

    def _drain(self) -> None:
        from ray.util.queue import Empty

        while True:
            try:
                event = self.queue.get(timeout=0.5)
            except (Empty, stdqueue.Empty):
                if self._stop.is_set():
                    return
                continue
            except Exception:  # the queue's actor went away (Ray shut down): nothing more to show
                return
            if isinstance(event, EpochEvent):
                self.view.epoch(event)

    def __enter__(self) -> ProgressPump:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.queue.shutdown()
        except Exception as err:
            log.debug("progress queue shutdown: %s", err)
