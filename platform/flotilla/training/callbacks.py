"""Lifecycle callbacks on the Ray Train controller: the run's story as commits on its branch.

After each checkpoint is persisted (through the S3 gateway, onto the branch),
commit it with the epoch and validation metrics as metadata; after a worker
failure, record an empty commit saying so, so that the branch history shows the
crash and the resume from the last checkpoint.
"""

from __future__ import annotations

import logging
from typing import Any

import ray.train

from flotilla.hub.client import repo_for
from flotilla.hub.repo import Repo
from flotilla.lineage import CheckpointCommit, FailureCommit

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
        m = metrics[0]
        resumed = m.get("resumed_from_epoch", -1)
        meta = CheckpointCommit(
            self.model,
            m.get("epoch"),
            {k: v for k, v in m.items() if isinstance(v, float)},
            resumed if resumed >= 0 else None,
        ).to_metadata()
        try:
            self.repo.commit(self.branch, f"{self.model}: checkpoint epoch {m.get('epoch')}", meta)
        except Exception as exc:  # never fail training because a commit failed; the files stay on the branch
            log.warning("could not commit checkpoint to %s: %s", self.branch, exc)

    def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]) -> None:
        ranks = ", ".join(str(r) for r in sorted(worker_exceptions))
        why = "; ".join(f"rank {r}: {type(e).__name__}" for r, e in sorted(worker_exceptions.items()))
        try:
            self.repo.commit(
                self.branch,
                # Ray calls this for the last, fatal failure too: whether a restart follows is failure.max_failures'
                f"{self.model}: worker failure on rank(s) {ranks} (Ray Train restarts from the last checkpoint "
                "while failure.max_failures allows)",
                FailureCommit(self.model, why).to_metadata(),
                allow_empty=True,
            )
        except Exception as exc:
            log.warning("could not record the failure on %s: %s", self.branch, exc)
