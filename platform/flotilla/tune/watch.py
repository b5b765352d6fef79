"""A sweep's trials as flotilla's progress (:mod:`flotilla.progress`), from a Tune callback.

Tune's callbacks run on the driver, so this one tells the view directly: a trial is running (with its
epoch and objective), completed, pruned (ended by the scheduler before its last epoch) or errored —
the words of ``sweep show`` and the study — and the best objective so far. Tune pickles its callbacks
into its saved state: the view never goes with it, and ``attach`` gives a restored callback a view again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ray.tune import Callback

from flotilla.progress import RUNNING, NullView, ProgressView, TrialEvent
from flotilla.tune.results import COMPLETED, ERRORED
from flotilla.tune.study import PRUNED
from flotilla.tune.trial import epochs_done

if TYPE_CHECKING:
    from ray.tune.experiment import Trial


class TrialProgressCallback(Callback):
    def __init__(self, view: ProgressView | None, metric: str, mode: str, max_epochs: int) -> None:
        self.view: ProgressView = view or NullView()
        self.metric = metric
        self.mode = mode
        self.max_epochs = max_epochs
        self.best: float | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "view"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({**state, "view": NullView()})

    def attach(self, view: ProgressView | None) -> None:
        self.view = view or NullView()

    def _better(self, value: float) -> bool:
        return self.best is None or (value > self.best if self.mode == "max" else value < self.best)

    def _tell(self, trial: Trial, state: str, result: dict[str, Any] | None) -> None:
        result = result or {}
        value = result.get(self.metric)
        value = float(value) if isinstance(value, (int, float)) else None
        if value is not None and state in (RUNNING, COMPLETED) and self._better(value):
            self.best = value
        self.view.trial(TrialEvent(trial.trial_id, state, epochs_done(result), self.max_epochs, self.metric, value, self.best))

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._tell(trial, RUNNING, trial.last_result)

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any) -> None:
        self._tell(trial, RUNNING, result)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        done = epochs_done(trial.last_result) >= self.max_epochs
        self._tell(trial, COMPLETED if done else PRUNED, trial.last_result)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._tell(trial, ERRORED, trial.last_result)
