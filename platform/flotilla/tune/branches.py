"""Trial branches have one owner for deletion: :class:`TrialBranches`.

A trial creates its branch (``trial-<sweep>-<trial>``, through the run's one branch lifecycle,
``Repo.transact``) and keeps it whatever happens to it: it holds the model, or the checkpoints a
resumed trial goes on from. Which branches outlive the sweep is the sweep's decision
(``retention.keep``), taken in two places: while the sweep runs, a trial the scheduler stopped or
that failed loses its branch as soon as Tune ends it (unless everything is kept), so a long sweep
never piles up dead branches; at its end, every trial the policy does not keep, and every start
lost in a kill. Both go through this class, and every deletion is journalled (``branch_deleted``).

A trial that errored because of the infrastructure (the hub down past its retry budget, a lost
connection, a dead node: :func:`~flotilla.errors.is_infrastructure`) is not a loser: it keeps its
branch and checkpoints whatever the policy, and ``sweep resume`` continues it from them.

Deletion is cleanup: a hub that does not answer is logged, never allowed to end the sweep, and the
branch is deleted at the end of the sweep, or by the next ``resume``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from flotilla.errors import FlotillaError
from flotilla.hub.repo import Repo
from flotilla.tune.journal import INFRASTRUCTURE, BranchDeleted, Event, Journal, TrialState
from flotilla.tune.results import ERRORED, SweepResult
from flotilla.tune.trial import trial_branch

log = logging.getLogger(__name__)


class TrialBranches:
    """The branches of one sweep's trials in ``repo``, under retention policy ``keep``."""

    def __init__(self, repo: Repo, journal: Journal, sweep_id: str, keep: str) -> None:
        self.repo = repo
        self.journal = journal
        self.sweep_id = sweep_id
        self.keep = keep

    def delete(self, trial_id: str, branch: str) -> bool:
        """Delete one trial's branch (gone already is fine); False, and a warning, when the hub failed."""
        try:
            self.repo.delete_branch(branch, missing_ok=True)
        except Exception as exc:  # any failure: Tune would let an exception in a callback end the sweep
            message = exc.message if isinstance(exc, FlotillaError) else str(exc)
            log.warning("could not delete trial branch %s (the end of the sweep or resume retries): %s", branch, message)
            return False
        self.journal.append(BranchDeleted(trial_id, branch))
        return True

    def on_end(self, trial_id: str, branch: str | None, how: Event, *, infrastructure: bool = False) -> None:
        """Tune ended a trial: a stopped or errored one loses its branch at once, unless all are kept or
        the infrastructure, not the trial, failed it."""
        if infrastructure and how is Event.ERRORED:
            return
        if branch and how in (Event.STOPPED, Event.ERRORED) and self.keep != "all":
            self.delete(trial_id, branch)

    def at_sweep_end(self, result: SweepResult, states: Mapping[str, TrialState]) -> None:
        """Delete the branches the policy does not keep and set each record's ``kept``.

        The winner and, for a Pareto search, the whole front are always kept, and so is a trial the
        infrastructure failed (for ``resume``); ``keep: completed`` keeps every trial trained to the end,
        ``keep: all`` everything. A start lost in a kill (``lost`` in the journal, unknown to Tune) has
        nothing worth keeping and no record: its branch goes too.
        """
        existing = self._existing()
        for t in result.trials:
            keep = (
                t is result.winner
                or t.trial_id in result.pareto
                or self.keep == "all"
                or (self.keep == "completed" and t.status == "completed")
                or (t.status == ERRORED and t.cause == INFRASTRUCTURE)
            )
            there = existing is None or t.branch in existing  # unknown while the hub does not answer: assume so
            if not keep and existing is not None and there:
                self.delete(t.trial_id, t.branch)
            t.kept = keep and there
        ran = {t.trial_id for t in result.trials}
        for trial_id, state in self._lost(states, ran):
            branch = state.branch or trial_branch(self.sweep_id, trial_id)
            if existing is not None and branch in existing:
                self.delete(trial_id, branch)

    def _existing(self) -> set[str] | None:
        try:
            return set(self.repo.branches())
        except FlotillaError as exc:  # results and the promotion attempt must not hang on cleanup; resume retries it
            log.warning("could not list the branches of %s to clean up trial branches: %s", self.repo.name, exc.message)
            return None

    @staticmethod
    def _lost(states: Mapping[str, TrialState], ran: Iterable[str]) -> list[tuple[str, TrialState]]:
        done = set(ran)
        return [(t, s) for t, s in states.items() if s.lost and t not in done]
