"""Optuna as Tune's searcher, told the truth about trials the scheduler stopped.

Ray's ``OptunaSearch`` records every trial that ends without an error as
``COMPLETE``, with the last value it reported. A trial ASHA stopped after one
epoch is then, in the Optuna study, a *finished* trial whose objective is its
epoch-1 score: optuna-dashboard lists it beside fully trained ones as if it
were comparable, and TPE ranks it against final scores on one scale.

In Optuna's own terms such a trial is ``PRUNED``, and Optuna knows what to do
with that: the dashboard shows it as pruned with its learning curve, and TPE
ranks pruned trials by how far they got first and their last score second —
a trial that survived to the epoch-3 rung counts as better evidence than one
stopped at epoch 1, which is the budget-aware reading ASHA's rungs imply.
(``study.best_trial`` also stops being able to pick a half-trained trial.)
A trial is pruned when it ended, without an error, before its full number of
epochs (``epochs_done``, which a trial restarted on resume carries on
counting); its curve is in the study (OptunaSearch reports every result it is
given, and the report that got it stopped is added here), and Optuna takes the
last point of the curve as its value. A trial
that errored is ``FAIL`` even when a last result comes with the error (Ray
would record it ``COMPLETE`` with that value).

A trial trained to the end is ``COMPLETE`` with its *best* epoch's value, not its
last: the model a trial publishes is its best epoch by the sweep's objective, so
the study's value, the sweep's ranking and the promoted checkpoint agree.

A trial that errored and that Tune runs again on ``resume`` (``resume_errored``)
gets a new Optuna trial with the same parameters when its first result arrives
(Ray's searcher would drop every result of it with a warning, leaving the study
with a ``FAIL`` where the sweep has a finished trial); the failed attempt stays
in the study as ``FAIL``, as it happened.

Every Optuna trial carries the trial's one name, its Tune trial id, as the user
attribute ``flotilla_trial``, and its branch as ``branch`` (see :mod:`flotilla.tune.study`);
a trial trained to the end gets its model's address (``model_uri``) before it is told
complete. The id links a study's trial to the sweep's table, plots and branch, and
lets a resume fail the Optuna trial of a start Tune never saved (see
:mod:`flotilla.tune.repair`), instead of leaving it RUNNING in the study for ever.
A Pareto search's stopped trial is ``PRUNED`` too (with no value: Optuna keeps no
curve for several objectives), so ``study.best_trials`` is the front of the trials
trained to the end.

Its checkpoint (``searcher-state-*.pkl``) is written atomically (a temporary file, then a
rename): Ray's ``OptunaSearch.save`` truncates the file and pickles into it, so a driver killed
during that write left an empty file, and the resume then failed to unpickle it and started the
experiment over (seen in ``test_killed_driver_resumes...``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import optuna
from ray.tune.search.optuna import OptunaSearch

from flotilla.tune.study import BRANCH_ATTR, MODEL_ATTR, TRIAL_ATTR
from flotilla.tune.trial import epochs_done, trial_branch

log = logging.getLogger(__name__)


_STUDY_AT: dict[str, Path] = {}  # sweep id -> its study in the folder this process drives it from


def open_study_at(sweep_id: str, path: Path) -> None:
    """Where an unpickled :class:`SweepStudyStorage` of sweep ``sweep_id`` opens its study: the driver
    says so before Tune unpickles its saved searcher (``resume``)."""
    _STUDY_AT[sweep_id] = path


class SweepStudyStorage(optuna.storages.RDBStorage):
    """The searcher's SQLite storage of sweep ``sweep_id``'s study, which follows the sweep's folder.

    Tune pickles the searcher (``tuner.pkl``, ``searcher-state-*.pkl``) with its storage, and an
    unpickled ``RDBStorage`` opens the URL it was made with: the path on the machine that started
    the sweep. A sweep pulled from its hub mirror into another ``FLOTILLA_HOME`` (:mod:`flotilla.tune.mirror`)
    would then fail to open that path (another machine), or write a new, empty study there (another
    home on this one). Unpickled, this one opens the study where :func:`open_study_at` says (the
    resuming driver's folder), else at the recorded path, as before.
    """

    def __init__(self, path: Path, sweep_id: str) -> None:
        super().__init__(f"sqlite:///{path}")
        self.flotilla_sweep_id = sweep_id

    def __setstate__(self, state: dict[str, Any]) -> None:
        here = _STUDY_AT.get(str(state.get("flotilla_sweep_id")))
        if here is not None and state.get("url") != f"sqlite:///{here}":
            log.info(
                "sweep %s: its Optuna study is opened at %s (saved at %s)", state["flotilla_sweep_id"], here, state.get("url")
            )
            state = {**state, "url": f"sqlite:///{here}"}
        super().__setstate__(state)


class StoppedAsPrunedOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that tells Optuna a trial ended before ``full_iterations`` reports was pruned."""

    def __init__(self, *args: Any, full_iterations: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.full_iterations = int(full_iterations)
        self._best: dict[str, float] = {}
        self._failed: set[str] = set()

    def save(self, checkpoint_path: str) -> None:
        """Ray's save, into a temporary file renamed over the checkpoint: the old state or the new, never half of one."""
        tmp = f"{checkpoint_path}.tmp-{os.getpid()}"
        try:
            super().save(tmp)
            os.replace(tmp, checkpoint_path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def __setstate__(self, state: dict[str, Any]) -> None:  # a sweep saved by an older flotilla lacks these
        self.__dict__.update({"_best": {}, "_failed": set(), **state})

    @property
    def study(self) -> optuna.Study:
        """The Optuna study (Ray sets it up once the metric and mode are known: before any trial)."""
        assert self._ot_study is not None
        return self._ot_study

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        config = super().suggest(trial_id)
        self._tag(trial_id)
        return config

    def _tag(self, trial_id: str) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None:
            return
        self._set_attrs(trial_id, {TRIAL_ATTR: trial_id, BRANCH_ATTR: trial_branch(self.study.study_name, trial_id)})

    def _set_attrs(self, trial_id: str, attrs: dict[str, Any]) -> None:
        ot_trial = self._ot_trials[trial_id]
        try:
            for key, value in attrs.items():
                ot_trial.set_user_attr(key, value)
        except Exception as exc:  # a record only: a locked study must not end the sweep
            log.warning("could not record %s on Optuna trial %s: %s", ", ".join(attrs), ot_trial.number, exc)

    def _reopen_if_retried(self, trial_id: str) -> None:
        """A result of a trial Optuna was told had failed: Tune is running it again (resume)."""
        if trial_id not in self._failed or trial_id not in self._completed_trials:
            return
        old = self._ot_trials[trial_id]
        self.study.enqueue_trial(dict(old.params), skip_if_exists=False)
        retry = self.study.ask()
        assert callable(self._space)  # a define-by-run space
        self._space(retry)  # the enqueued params are what it suggests
        self._ot_trials[trial_id] = retry
        self._tag(trial_id)
        self._completed_trials.discard(trial_id)
        self._failed.discard(trial_id)
        self._best.pop(trial_id, None)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        self._reopen_if_retried(trial_id)
        # the curve's step is the epoch, not Tune's report count: a trial restarted on resume goes on
        # from its checkpoint, and Optuna would drop reports at steps it has seen as "already reported"
        super().on_trial_result(trial_id, {**result, "training_iteration": epochs_done(result)})
        value = result.get(self.metric) if isinstance(self.metric, str) else None
        if isinstance(value, (int, float)) and trial_id not in self._completed_trials:
            prev = self._best.get(trial_id)
            if prev is None or (value > prev if self.mode == "max" else value < prev):
                self._best[trial_id] = float(value)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        told = result or {}
        if trial_id in self._ot_trials and trial_id not in self._completed_trials:
            state = None
            if error:
                state = optuna.trial.TrialState.FAIL
                self._failed.add(trial_id)
            elif told and epochs_done({"training_iteration": self.full_iterations, **told}) < self.full_iterations:
                state = optuna.trial.TrialState.PRUNED
            if state is not None:
                try:
                    if (
                        state == optuna.trial.TrialState.PRUNED
                        and isinstance(self.metric, str)  # Optuna keeps no intermediate values for a Pareto search
                        and isinstance(told.get(self.metric), (int, float))
                    ):
                        # Tune hands the report that made the scheduler stop a trial to on_trial_complete
                        # only, never to on_trial_result: without this its curve would end a rung early
                        # (and a trial stopped at the first rung would have none to be ranked by)
                        self._ot_trials[trial_id].report(float(told[self.metric]), epochs_done(told))
                    self.study.tell(self._ot_trials[trial_id], state=state)
                except Exception as exc:  # as OptunaSearch does: a study that refuses one trial must not end the sweep
                    log.warning("Optuna did not record trial %s as %s: %s", trial_id, state.name, exc)
                self._completed_trials.add(trial_id)
                return
            if not error and told.get("model_uri"):  # before the tell: Optuna refuses to change a finished trial
                self._set_attrs(trial_id, {MODEL_ATTR: told["model_uri"]})
            prev = self._best.get(trial_id)
            value = told.get(self.metric) if isinstance(self.metric, str) else None
            if prev is not None and isinstance(value, (int, float)):  # tell the best epoch's value
                best = max(prev, value) if self.mode == "max" else min(prev, value)
                result = {**told, self.metric: best}
        super().on_trial_complete(trial_id, result=result, error=error)
