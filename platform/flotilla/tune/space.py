"""The search space and the search as Tune and Optuna take them: the define-by-run space, the searcher
(Optuna's sampler behind Tune's OptunaSearch, told the truth about stopped trials, and the
``budget.target`` wrapper) and the scheduler (ASHA, or none)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flotilla.errors import ConfigError
from flotilla.tune.searcher import StoppedAsPrunedOptunaSearch, SweepStudyStorage
from flotilla.tune.spec import Param, SweepSpec
from flotilla.tune.study import set_metric_names
from flotilla.tune.trial import EPOCHS_DONE
from flotilla.tune.until import UntilTarget


class DefineByRun:
    """Optuna define-by-run space (picklable: Tune checkpoints its searcher); a param with ``when``
    is only suggested when the params it names took those values, so conditional spaces work."""

    def __init__(self, space: Mapping[str, Param]) -> None:
        self.space = space

    def __call__(self, trial: Any) -> None:
        chosen: dict[str, Any] = {}
        for name, p in self.space.items():
            if p.when and any(chosen.get(k) != v for k, v in p.when.items()):
                continue
            if p.type == "choice":
                chosen[name] = trial.suggest_categorical(name, p.values)
            elif p.type == "int":
                assert p.low is not None and p.high is not None  # the spec requires both
                chosen[name] = trial.suggest_int(name, int(p.low), int(p.high), step=p.step or 1)
            else:
                chosen[name] = trial.suggest_float(name, p.low, p.high, log=p.type == "loguniform")


def searcher(spec: SweepSpec, epochs: int, study: Path, study_name: str) -> Any:
    """A new sweep's searcher: Optuna (TPE or random) over the space, its study in SQLite at ``study``
    (what optuna-dashboard opens), wrapped to stop suggesting once ``budget.target`` is reached."""
    import optuna

    s = spec.searcher
    sampler: optuna.samplers.BaseSampler = (
        optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=s.n_startup_trials, multivariate=s.multivariate)
        if s.type == "tpe"
        else optuna.samplers.RandomSampler(seed=s.seed)
    )
    obj = spec.objective
    # Optuna >= 5 runs TPE with constant_liar on by default: with several trials at once, running
    # ones count as bad so concurrent suggestions spread out instead of landing side by side.
    # A list of metrics and modes makes Optuna search for the Pareto front (TPE and random both can).
    metric: str | list[str] = list(obj.metrics) if obj.metrics else obj.metric
    mode: str | list[str] = list(obj.metrics.values()) if obj.metrics else obj.mode
    search = StoppedAsPrunedOptunaSearch(
        space=DefineByRun(spec.space),
        sampler=sampler,
        full_iterations=epochs,
        metric=metric,
        mode=mode,
        storage=SweepStudyStorage(study, study_name),  # unpickled in another home, it opens the study there
        study_name=study_name,
    )
    set_metric_names(search.study, [metric] if isinstance(metric, str) else metric)  # not "Objective 0"
    if spec.budget.target is None:
        return search
    return UntilTarget(search, obj.metric, obj.mode, spec.budget.target)


def scheduler(spec: SweepSpec, epochs: int) -> Any:
    from ray.tune.schedulers import FIFOScheduler

    return asha(spec, epochs) if spec.scheduler.type == "asha" else FIFOScheduler()


def asha(spec: SweepSpec, epochs: int) -> Any:
    """ASHA whose rungs all lie before the last epoch.

    A rung *at* the last epoch saves nothing and would kill a trial at its final report, before it
    publishes its model and card on its branch; so the rungs are laid out up to ``epochs - 1`` and
    a trial that passes them always finishes (``stop_last_trials=False``).
    """
    from ray.tune.schedulers import ASHAScheduler

    grace = spec.scheduler.grace_period
    if grace >= epochs:
        raise ConfigError(
            f"scheduler.grace_period {grace} leaves ASHA nothing to stop: trials train {epochs} epochs",
            hint=f"set scheduler.grace_period below {epochs}, or scheduler.type: none",
        )
    return ASHAScheduler(
        time_attr=EPOCHS_DONE,
        max_t=epochs - 1,
        grace_period=grace,
        reduction_factor=spec.scheduler.reduction_factor,
        stop_last_trials=False,
    )
