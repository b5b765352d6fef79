"""The sweep driver's Tune callback: every trial event into the journal, losers' branches deleted at once.

On a trial's first result it checks the trial's branch exists (the trial created it from the pinned
commit); every report with the objective is journalled; when Tune ends a trial, how it ended is
journalled and :class:`~flotilla.tune.branches.TrialBranches` decides about its branch. Every start
of a trial is a line in the ledger. Both logs are written here, on the driver, never by the trial
(which may run on another node). A hub that hiccups is logged, never allowed to end the sweep.

Tune pickles its callbacks into its saved state: credentials (and the hub handles built from them)
never go with them; ``attach`` gives a restored callback its credentials back.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.tune import Callback

from flotilla.hub.client import repo_for
from flotilla.hub.credentials import HubCredentials
from flotilla.tune.branches import TrialBranches
from flotilla.tune.journal import (
    INFRASTRUCTURE,
    Ended,
    Event,
    Journal,
    Ledger,
    PlacementGroupFreed,
    Reported,
    Running,
    TrialStart,
)
from flotilla.tune.results import error_cause
from flotilla.tune.trial import epochs_done, trial_branch

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

log = logging.getLogger(__name__)


class TrialBranchCallback(Callback):
    def __init__(
        self,
        credentials: HubCredentials | None,
        repo: str,
        keep: str,
        max_epochs: int,
        journal: str,
        metric: str = "",
        *,
        sweep_id: str = "",
        ledger: str = "",
    ) -> None:
        self.credentials = credentials
        self.sweep_id = sweep_id
        self.ledger = ledger
        self.metric = metric
        self.repo_name = repo
        self.keep = keep
        self.max_epochs = max_epochs
        self.journal = journal
        self._seen: set[str] = set()
        self._branches: TrialBranches | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("credentials", "_branches", "_repo")} | {"credentials": None}

    def __setstate__(self, state: dict[str, Any]) -> None:  # a sweep saved by an older flotilla lacks these
        self.__dict__.update({"sweep_id": "", "ledger": "", **state, "_branches": None})

    def attach(self, credentials: HubCredentials) -> None:
        self.credentials = credentials
        self._branches = None

    @property
    def branches(self) -> TrialBranches:
        if self._branches is None:
            if self.credentials is None:
                raise RuntimeError("a restored TrialBranchCallback needs attach(credentials) before the sweep runs")
            repo = repo_for(self.credentials, self.repo_name)
            self._branches = TrialBranches(repo, Journal(self.journal), self.sweep_id, self.keep)
        return self._branches

    def _branch(self, trial: Trial) -> str | None:
        """The trial's branch; named from the ids when the trial died before its first report."""
        branch: str | None = (trial.last_result or {}).get("branch")
        if not branch and self.sweep_id:
            branch = trial_branch(self.sweep_id, trial.trial_id)
        return branch

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        if self.ledger:
            params = {k: v for k, v in (trial.config or {}).items() if v is not None}
            Ledger(self.ledger).append(TrialStart(trial.trial_id, params))

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any) -> None:
        journal = Journal(self.journal)
        value = result.get(self.metric)
        if isinstance(value, (int, float)):  # every report, in arrival order: what benchmarks count
            metrics = {k: float(v) for k, v in result.items() if k.startswith("val/") and isinstance(v, (int, float))}
            journal.append(Reported(trial.trial_id, epochs_done(result), float(value), metrics))
        branch = result.get("branch")
        if branch and trial.trial_id not in self._seen:
            self._seen.add(trial.trial_id)
            try:
                live: bool | None = self.branches.repo.branch_exists(branch)
            except Exception as exc:  # a hub hiccup must not end the sweep: Tune would let it through
                log.warning("could not check branch %s: %s", branch, exc)
                live = None
            journal.append(Running(trial.trial_id, branch, live))

    def _end(self, trial: Trial, how: Event) -> None:
        branch = self._branch(trial)
        epochs = epochs_done(trial.last_result)
        if how is Event.COMPLETE and epochs < self.max_epochs:
            how = Event.STOPPED
        infra = how is Event.ERRORED and _failed_by_infrastructure(trial)
        Journal(self.journal).append(Ended(how, trial.trial_id, branch, epochs, infrastructure=infra))
        if how is not Event.COMPLETE:
            self._free_placement_group((trial.last_result or {}).get("placement_group"))
        try:
            self.branches.on_end(trial.trial_id, branch, how, infrastructure=infra)
        except Exception as exc:  # no hub handle (say, no credentials): cleanup is retried at the end of the sweep
            log.warning("could not clean up the branch of trial %s: %s", trial.trial_id, exc)

    def _free_placement_group(self, pg_hex: str | None) -> None:
        """Remove the killed trial's Train placement group if Ray Train's own cleaner has not.

        Ray Train frees it from a monitor that polls the state API; on a loaded machine that API
        times out and the group leaks, and then the next trial's workers wait forever for CPUs.
        """
        if not pg_hex:
            return
        import ray
        from ray.util.placement_group import PlacementGroup

        try:
            state = ray.util.placement_group_table().get(pg_hex, {}).get("state")
            if state and state != "REMOVED":
                ray.util.remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_hex))))
                Journal(self.journal).append(PlacementGroupFreed(pg_hex))
        except Exception as exc:
            log.warning("could not free placement group %s: %s", pg_hex, exc)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._end(trial, Event.COMPLETE)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._end(trial, Event.ERRORED)


def _failed_by_infrastructure(trial: Trial) -> bool:
    """Whether the error Tune recorded for ``trial`` is the infrastructure's.

    Tune writes the error (pickled, and as text) into the trial's local folder before it tells the
    callbacks, and copies it to the sweep's storage only later: it is read from the local files.
    """
    from ray import cloudpickle

    try:
        pickled, text = trial.pickled_error_file, trial.error_file
        error: Any = None
        if pickled and Path(pickled).exists():
            error = cloudpickle.loads(Path(pickled).read_bytes())
        elif text and Path(text).exists():
            error = Path(text).read_text()
    except Exception as exc:  # an error that does not unpickle here: the trial's own, as before
        log.warning("could not read the error of trial %s: %s", trial.trial_id, exc)
        return False
    return bool(error) and error_cause(error) == INFRASTRUCTURE
