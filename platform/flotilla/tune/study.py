"""The sweep's Optuna study (``optuna.db``) as flotilla names, reads and annotates it.

One trial has one name: Tune's trial id (8 hex digits, ``88bb400d``). It is Tune's trial name and
folder (:func:`~flotilla.tune.trial.trial_name`), the key of the journal and the ledger, the tail of
the trial's branch (``trial-<sweep>-<id>``) and run id, and — here — the user attribute
:data:`TRIAL_ATTR` of its Optuna trial, which optuna-dashboard lists beside Optuna's own number.
Optuna's number cannot be the name: a trial that errored and runs again on ``resume`` gets a new
Optuna trial (a new number) with the same id.

Beside it :data:`BRANCH_ATTR`, set when Optuna suggests the trial, and :data:`MODEL_ATTR` for a trial
trained to the end: its model on its branch, ``lakefs://<repo>/<branch>/models/<run>/<family>/model.pt``.
Both are set before Optuna is told how the trial ended, because Optuna refuses to change a finished
trial; so the model's address is by branch, not by commit (the commit is made after the last report),
and a branch the retention policy deletes at the sweep's end takes that address with it. The study
carries its objectives' metric names, so Optuna's charts and the dashboard say ``val/score``, not
"Objective 0".
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

TRIAL_ATTR = "flotilla_trial"
"""User attribute: the trial's id (Tune's trial id), the name ``sweep show``, the plots and the branch use."""
OLD_TRIAL_ATTR = "tune_trial_id"
"""What sweeps before the one-name change called :data:`TRIAL_ATTR` (read, never written)."""
BRANCH_ATTR = "branch"
MODEL_ATTR = "model_uri"
PRUNED = "pruned"
"""The one word for a trial stopped before its last epoch (by ASHA, or ``budget.time_limit_s``): Optuna's
``PRUNED``, flotilla's ``status``, the tables' and the plots' word (Tune itself says ``TERMINATED``)."""


def load(d: Path, sweep_id: str) -> optuna.Study:
    """The study of the sweep in folder ``d`` (its name is the sweep id)."""
    import optuna

    return optuna.load_study(study_name=sweep_id, storage=f"sqlite:///{d / 'optuna.db'}")


def trial_id(trial: optuna.trial.FrozenTrial) -> str | None:
    """The flotilla trial id of an Optuna trial; None for one flotilla never tagged."""
    value = trial.user_attrs.get(TRIAL_ATTR, trial.user_attrs.get(OLD_TRIAL_ATTR))
    return str(value) if value else None


def names_by_number(trials: Iterable[optuna.trial.FrozenTrial]) -> dict[int, str]:
    """Optuna's trial number -> the trial's id, for what Optuna labels ``Trial<number>`` (plots' legends)."""
    return {t.number: name for t in trials if (name := trial_id(t))}


def set_metric_names(study: optuna.Study, names: Sequence[str]) -> None:
    """Name the study's objectives (Optuna calls this experimental; the warning is noise here)."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(names))


def pareto_ids(study: optuna.Study) -> set[str]:
    """The ids of the trials on the study's Pareto front (``study.best_trials``: complete trials only,
    so a pruned trial, or an errored attempt of a trial a resume re-ran, is never on it)."""
    return {name for t in study.best_trials if (name := trial_id(t))}
