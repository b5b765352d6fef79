"""The one lifecycle of every short-lived branch: the lakeFS way to run one experiment.

Experiments, ingests, validation receipts, gate installs, promotion staging and sweep trials all go
through :class:`Experiment` (usually as ``repo.transact(...)``), the shape of the lakeFS SDK's
``transact()``: create from a pinned commit, commit on success, merge if asked, delete on failure
unless kept, and a retention policy for afterwards. Nothing else in flotilla creates a branch.

::

    with repo.experiment("lr 3e-4 / bs 64", source="main", merge_into="main") as exp:
        exp.put("models/age/model.pt", weights)
        exp.put("models/age/card.json", card)
    # committed on the experiment branch, merged into main, branch kept or deleted by policy

On entry the source ref is resolved **once** to a commit id and the branch is
created from that commit, so everything the experiment reads is pinned even if
``main`` moves meanwhile. On success pending changes are committed (with the
experiment's metadata plus the pinned base commit), then optionally merged; on
failure the branch is deleted (or kept for debugging), so nothing half-done
reaches the destination. A failed merge is the exception: the experiment's work
is already committed, so whatever stopped the merge (a conflict, the data gate,
uncommitted changes on the destination, the hub going down), its branch is
kept and the error names it and says how to merge it again.

While it runs, the branch is *claimed* by this process (:mod:`flotilla.hub.owners`): a branch left
with staged data by a killed process, or one an abort could not delete because the hub was down,
is then listed as orphaned by ``flotilla hub branches`` (and pruned by ``--prune`` unless its
retention keeps it on failure); the error of such an abort names the branch and that command.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Literal

from flotilla.errors import FlotillaError, MergeConflictError
from flotilla.hub import owners
from flotilla.lineage import ExperimentStamp
from flotilla.names import branch_id, check_branch_id

if TYPE_CHECKING:
    from flotilla.hub.repo import CommitInfo, ObjectInfo, Repo


@dataclass(frozen=True)
class Retention:
    """What happens to the experiment branch afterwards.

    ``on_success``: ``"keep"`` (default: the branch is the experiment's record) or
    ``"delete"`` (only sensible after a merge, which keeps its commits reachable).
    ``on_failure``: ``"delete"`` (default) or ``"keep"`` to inspect what went wrong.
    """

    on_success: Literal["keep", "delete"] = "keep"
    on_failure: Literal["keep", "delete"] = "delete"


# A branch that only carries one merge (a receipt, a gate install, promotion staging): gone either way.
SCRATCH = Retention(on_success="delete", on_failure="delete")


class Experiment:
    """Context manager owning one experiment branch; also usable with explicit start()/finish()."""

    def __init__(
        self,
        repo: Repo,
        name: str,
        source: str = "main",
        *,
        merge_into: str | None = None,
        message: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        retention: Retention = Retention(),
        prefix: str = "exp-",
        resume: bool = False,
        allow_empty_merge: bool = False,
        branch: str | None = None,
    ) -> None:
        self.repo = repo
        self.name = name
        # ``branch``: an id the caller derived already (a trial's, stable across resumes); else from the name
        self.branch = check_branch_id(branch) if branch else branch_id(name, prefix=prefix)
        self.resume = resume
        self.allow_empty_merge = allow_empty_merge
        self.source = source
        self.merge_into = merge_into
        self.message = message or f"experiment {name}"
        self.metadata = dict(metadata or {})
        self.retention = retention
        self.base_commit: str | None = None
        self.commit_id: str | None = None
        self.merge_commit: str | None = None
        self.deleted = False

    def __repr__(self) -> str:
        return f"Experiment({self.name!r} -> branch {self.branch!r} @ {self.base_commit or 'not started'})"

    # ---- lifecycle ----------------------------------------------------------------
    def start(self) -> Experiment:
        """Pin the source to its commit id and create the branch there.

        ``resume``: the branch may exist already (a sweep trial restarted after a kill goes on where
        its checkpoints are); otherwise an existing branch is a :class:`~flotilla.errors.ConflictError`.
        The branch is claimed for this process before it exists (see :mod:`flotilla.hub.owners`).
        """
        self.base_commit = self.repo.resolve(self.source)
        before = owners.owner_of(self._home, self.repo.name, self.branch)
        owners.claim(self._home, self.repo.name, self.branch, keep=self.retention.on_failure == "keep")
        try:
            self.repo.create_branch(self.branch, self.base_commit, exist_ok=self.resume)
        except BaseException:  # not ours after all (e.g. it exists): the record goes back to what it was
            if before is None:
                self.release()
            else:
                owners.write(self._home, self.repo.name, self.branch, before)
            raise
        return self

    @property
    def _home(self) -> Path:
        return self.repo.hub.settings.home

    def release(self) -> None:
        """This process is done with the branch, whatever it holds (a caller that ends the work itself, not by
        :meth:`finish`/:meth:`abort`: a training run's branch after publishing or failing)."""
        owners.release(self._home, self.repo.name, self.branch)

    def __enter__(self) -> Experiment:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        if exc_type is None:
            self.finish()
        else:
            self.abort(exc)
        return False

    def finish(self) -> str | None:
        """Commit pending changes, merge if asked, apply retention; return the final commit id.

        Once the experiment has a commit, a failed merge (conflict, data gate
        refusal, dirty destination, hub down...) keeps the branch whatever
        ``on_failure`` says: deleting it would throw away committed work that only
        needs the merge retried. The error then names the branch and how to retry.
        """
        try:
            if self.repo.uncommitted(self.branch):
                self.commit(self.message)
        except BaseException:
            self.abort()
            raise
        if self.merge_into:
            meta = {**self.metadata, **ExperimentStamp(self.name, self.base_commit).to_metadata()}
            try:
                self.merge_commit = self.repo.merge(
                    self.branch,
                    self.merge_into,
                    f"Merge experiment {self.name} into {self.merge_into}",
                    meta,
                    allow_empty=self.allow_empty_merge,
                )
            except BaseException as exc:
                if self.commit_id is None and not self._committed_elsewhere():  # nothing of its own committed
                    self.abort()
                    raise
                self.release()
                self._explain_kept(exc)
                raise
        if self.retention.on_success == "delete":
            self.delete()
        self.release()
        return self.merge_commit or self.commit_id

    def _committed_elsewhere(self) -> bool:
        """Work committed on the branch other than through ``commit()`` (e.g. ``repo.commit(exp.branch, ...)``)."""
        try:
            return self.repo.resolve(self.branch) != self.base_commit
        except Exception:  # the hub is down: keep the branch rather than guess it holds nothing
            return True

    def _explain_kept(self, exc: BaseException) -> None:
        """Name the kept branch, and how to retry the merge, in the error that is about to propagate."""
        kept = f"the experiment's commit {self.commit_id or '(made on the branch)'} stays on branch {self.branch!r}"
        retry = f"then merge it again (repo.merge({self.branch!r}, {self.merge_into!r})), or delete the branch"
        if isinstance(exc, MergeConflictError):  # resolving a conflict happens on that branch
            exc.reword(hint=f"{kept}: commit the wanted version of each path there, {retry}")
        elif isinstance(exc, FlotillaError):
            exc.reword(
                f"{exc.message}\n  ({kept}; the merge into {self.merge_into!r} did not complete)",
                hint=f"{exc.hint + '; ' if exc.hint else 'fix the cause, '}{retry}",
            )
        else:  # not ours (e.g. KeyboardInterrupt): leave it as it is, with a note for the traceback
            exc.add_note(f"{kept}; {retry}")

    def abort(self, exc: BaseException | None = None) -> None:
        """The work failed (``exc``, when the caller has it): delete the branch unless retention keeps it.

        When the delete fails too (the hub is down), the branch is marked abandoned, so it reads as
        orphaned, and ``exc`` (which stays the error raised) names it and how to remove it; without
        ``exc`` the delete's own error is raised.
        """
        if self.retention.on_failure != "delete":
            self.release()
            return
        try:
            self.delete()
        except Exception as gone_wrong:
            owners.abandon(self._home, self.repo.name, self.branch)
            if exc is None:
                raise
            left = (
                f"its branch {self.branch!r} could not be deleted ({type(gone_wrong).__name__}) and may hold staged data; "
                "'flotilla hub branches --prune' deletes it once the hub answers"
            )
            if isinstance(exc, FlotillaError):
                exc.reword(f"{exc.message}\n  ({left})")
            else:
                exc.add_note(left)

    def delete(self) -> None:
        """Delete the branch now (idempotent): for a caller that decides after the experiment ended."""
        self.repo.delete_branch(self.branch, missing_ok=True)
        self.deleted = True
        self.release()

    # ---- work on the branch -------------------------------------------------------
    def put(self, path: str, data: bytes | str | IO[bytes]) -> ObjectInfo:
        return self.repo.put(self.branch, path, data)

    def get(self, path: str) -> bytes:
        return self.repo.get(self.branch, path)

    def commit(self, message: str, metadata: Mapping[str, Any] | None = None) -> CommitInfo:
        meta = {**self.metadata, **(metadata or {}), **ExperimentStamp(self.name, self.base_commit).to_metadata()}
        info = self.repo.commit(self.branch, message, meta)
        self.commit_id = info.id
        return info
