"""What ``resume`` repairs before Tune restores a sweep: Tune's saved state brought up to the journal.

A SIGKILL can land inside one of Tune's controller steps, between what Tune has told its callbacks
(the trial journal, written at once) and the state it saves at the step's end. Restored as saved:

- a trial that had finished is RUNNING, and trains again from scratch: it is marked TERMINATED
  with its final report from the journal;
- trials that ended are still counted live by the ConcurrencyLimiter (with ``budget.concurrency``
  of them it never suggests again: the sweep waited forever): they leave its live set;
- ``budget.target`` reached is unknown to UntilTarget (the trial that reached it does not report
  again, so the sweep went on to ``budget.trials``): it is told which trial reached it;
- a trial started (the ledger has it) but never saved by Tune is forgotten: its Optuna trial would
  stay RUNNING for ever (and count, for TPE's constant liar, as a bad point) and its branch would
  outlive the sweep. It is journalled ``lost``, failed in the study, and its branch deleted at the end;
- unless the journal saw it finish: then its model is on its branch. Tune's trial count is moved on
  by it (the sweep runs no trial past ``budget.trials``) and the sweep's end ranks it from the
  journal (:func:`flotilla.tune.run.unsaved_finished`). The restored searcher does not learn its
  point (TPE goes on without that one observation).

The edits of Tune's files themselves are in :mod:`flotilla.tune.tune_state`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flotilla.tune import tune_state
from flotilla.tune.journal import JOURNAL, LEDGER, Journal, Ledger, Lost, finished, reached_target
from flotilla.tune.spec import SweepSpec
from flotilla.tune.store import STUDY
from flotilla.tune.study import trial_id

log = logging.getLogger(__name__)


def journal_lost_starts(exp_dir: Path, d: Path, sweep_id: str) -> set[str]:
    """Journal as ``lost`` the trials that started but that Tune's saved state never held, and fail their
    Optuna trials; returns them. A start that the journal saw finish is not lost: its model is published
    on its branch (Tune's copy of its state to the sweep folder lagged), and it is left alone."""
    ledger = Ledger(d / LEDGER)
    if not ledger.path.exists():
        return set()
    started = {s.trial_id for s in ledger.starts()}
    saved = tune_state.saved_trial_ids(exp_dir)
    if saved is None:
        return set()
    journal = Journal(d / JOURNAL)
    states = journal.trials()
    unsaved = started - saved
    done = {t for t in unsaved if t in states and states[t].ever_finished and not states[t].lost}
    # finished before Tune saved them, they count against budget.trials (and finish() ranks them); a lost
    # start does not, though a searcher state newer than the experiment's counts it (tune_state.set_created)
    tune_state.set_created(exp_dir, len(saved) + len(done))
    if done:
        log.warning(
            "sweep %s: trial(s) %s finished just before the driver died, before Tune saved them; they are "
            "ranked from the trial journal and not run again",
            sweep_id,
            ", ".join(sorted(done)),
        )
    lost = {t for t in unsaved if not (t in states and (states[t].lost or states[t].ever_finished))}
    if not lost:
        return lost
    for t in sorted(lost):
        journal.append(Lost(t))
    log.warning(
        "sweep %s: trial(s) %s started just before the driver died, before Tune saved them; another trial runs in their place",
        sweep_id,
        ", ".join(sorted(lost)),
    )
    if (d / STUDY).exists():
        _fail_in_study(d / STUDY, sweep_id, lost)
    return lost


def _fail_in_study(db: Path, sweep_id: str, lost: set[str]) -> None:
    import optuna

    try:
        study = optuna.load_study(study_name=sweep_id, storage=f"sqlite:///{db}")
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if trial_id(t) in lost:
                study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    except Exception as exc:  # the study is a record here; the sweep goes on without it
        log.warning("could not mark the lost trials failed in the Optuna study: %s", exc)


def bring_up_to_journal(exp_dir: Path, d: Path, spec: SweepSpec) -> None:
    """Tune's saved experiment and searcher state, told what the journal saw before the driver died."""
    states = Journal(d / JOURNAL).trials()
    done = finished(states)
    tune_state.mark_finished(exp_dir, {t: (states[t].curve[-1] if states[t].curve else None) for t in done})
    gone = done | {t for t, s in states.items() if s.lost}
    target, mode = spec.budget.target, spec.objective.primary[1]
    reached = reached_target(states, target, mode) if target is not None else None
    tune_state.fix_searcher_state(exp_dir, gone, reached)
