"""``budget.target``: stop launching trials once one reaches the objective a team would settle for.

Tune's own ``stop`` criteria end *trials*; a ``Stopper.stop_all`` ends the whole
experiment at once, killing the very trial that reached the target before it can
publish its model on its branch. What a team wants from "good enough" is
different: no new trials, and the running ones (the one that got there
included) finish and are promoted as usual. A searcher wrapper gives exactly
that — once a reported objective crosses the target it answers ``FINISHED`` —
and it survives a driver restart because its flag is saved with the searcher.
"""

from __future__ import annotations

from typing import Any

from ray.tune.search import Searcher


class UntilTarget(Searcher):
    """Delegate to ``searcher`` until some trial reports ``metric`` at or beyond ``target``."""

    def __init__(self, searcher: Searcher, metric: str, mode: str, target: float) -> None:
        self.searcher = searcher
        self.target = float(target)
        self.reached_by: str | None = None
        super().__init__(metric=metric, mode=mode)

    def reached(self, value: Any) -> bool:
        if not isinstance(value, (int, float)):
            return False
        return value >= self.target if self.mode == "max" else value <= self.target

    # Tune calls these; everything else is delegated as is.
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return self.searcher.set_max_concurrency(max_concurrent)

    # Ray's annotation of Searcher.suggest (a config or None) leaves out its own Searcher.FINISHED
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]
        if self.reached_by is not None:
            return Searcher.FINISHED
        return self.searcher.suggest(trial_id)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if self.reached_by is None and self.reached(result.get(self.metric)):
            self.reached_by = trial_id
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if self.reached_by is None and not error and self.reached((result or {}).get(self.metric)):
            self.reached_by = trial_id
        self.searcher.on_trial_complete(trial_id, result=result, error=error)

    # Tune saves a wrapper (anything with a ``.searcher``) through get_state/set_state and the
    # innermost searcher through its own save/restore: the flag rides with the experiment state.
    def get_state(self) -> dict[str, Any]:
        return {"reached_by": self.reached_by, "target": self.target}

    def set_state(self, state: dict[str, Any]) -> None:
        self.reached_by = state.get("reached_by")
