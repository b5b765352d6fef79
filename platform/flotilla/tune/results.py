"""A sweep's results: each trial as a :class:`TrialRecord`, the ranking, and the winner.

A trial's score is its best epoch's objective, and that epoch's checkpoint is the model it
publishes (see :mod:`flotilla.tune.trial`), so the trial ranked first is the model promoted and the
promotion commit's metrics are that model's. Tune's own result for a trial holds its *last*
report; the journal holds every one, so the record takes its metrics from there.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from flotilla.display import html_table, metric_text, short_commit
from flotilla.errors import FlotillaError, is_infrastructure
from flotilla.tune.journal import INFRASTRUCTURE, OWN_FAULT, TrialState
from flotilla.tune.spec import Objective, SweepSpec
from flotilla.tune.study import PRUNED
from flotilla.tune.trial import epochs_done, trial_branch, trial_id_of_dir

COMPLETED, ERRORED = "completed", "errored"
STATUSES = (COMPLETED, PRUNED, ERRORED)
"""How a trial ended, in flotilla's words (docs/sweeps.md, "Trial ids and states"): trained every epoch;
stopped early by the scheduler (ASHA) or the time budget, which Optuna calls ``PRUNED`` too; failed."""


def status_word(status: str) -> str:
    """A status as this flotilla says it: results.json of an older sweep says ``stopped`` for ``pruned``."""
    return PRUNED if status == "stopped" else status


@dataclass
class TrialRecord:
    trial_id: str
    params: dict[str, Any]
    status: str  # one of STATUSES: completed | pruned | errored
    epochs: int
    metrics: dict[str, float]
    branch: str
    run_id: str = ""
    kept: bool = False
    seen_live: bool = False
    error: str = ""  # an errored trial's exception, its last line (the rest is in the trial's Ray log)
    cause: str = ""  # an errored trial's: INFRASTRUCTURE (branch kept, resume continues it) or OWN_FAULT
    data_ref: str = ""  # the data ref the trial picked (``data.ref`` in its params, else the base spec's)
    data_commit: str = ""  # the commit that ref was pinned to when the sweep started: the data the trial read

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.params.items())
        error = f", error {self.error[:80]!r}" if self.error else ""
        return (
            f"TrialRecord({self.trial_id} {self.status}, {self.epochs} epoch(s), {metric_text(self.metrics)}, "
            f"params {{{params}}}, branch {self.branch}{error})"
        )


@dataclass
class SweepResult:
    sweep_id: str
    directory: str
    data_commits: dict[str, str]
    objective: str
    mode: str
    trials: list[TrialRecord] = field(default_factory=list)
    winner: TrialRecord | None = None
    promotion_commit: str | None = None
    promoted_into: str | None = None
    objectives: dict[str, str] = field(default_factory=dict)  # metric -> min|max; several for a Pareto search
    pareto: list[str] = field(default_factory=list)  # trial ids on the Pareto front (multi-objective only)
    plots: dict[str, str] = field(default_factory=dict)
    promotion_error: str | None = None  # why the winner is not merged yet ('resume' retries it)
    promoted_trial: str | None = None  # the trial merged; not the winner when a resume re-ranked after promoting
    alias: str | None = None  # ``<family>@<alias>`` moved to the promoted model (promote.alias)
    _drawing: ClassVar[threading.Thread | None] = None  # per result once drawing starts (see drawn_by)

    def drawn_by(self, thread: threading.Thread) -> None:
        """The thread drawing :attr:`plots`: an attribute of this result, not a field (``to_json`` stays whole)."""
        object.__setattr__(self, "_drawing", thread)  # a ClassVar's per-instance value, out of asdict's way

    def wait_for_plots(self, timeout: float | None = None) -> dict[str, str]:
        """The plots, once drawn. A sweep returns its result (winner, promotion) before its plots are drawn,
        which takes seconds; :attr:`plots` fills in when they are, and the process waits for them at exit."""
        if self._drawing is not None:
            self._drawing.join(timeout)
        return self.plots

    def _summary(self) -> str:
        states = Counter(t.status for t in self.trials)
        counts = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
        if self.winner is None:
            outcome = "no winner"
        else:
            score = self.winner.metrics.get(self.objective)
            shown = f" {self.objective}={score:.4g}" if isinstance(score, (int, float)) else ""
            outcome = f"winner {self.winner.trial_id}{shown} on {self.winner.branch}"
        if self.promotion_commit:
            outcome += f", promoted into {self.promoted_into} at {short_commit(self.promotion_commit)}"
        elif self.promotion_error:
            outcome += ", not promoted yet (resume retries)"
        if self.alias:
            outcome += f", alias {self.alias}"
        return f"sweep {self.sweep_id}: {len(self.trials)} trial(s) ({counts or 'none'}), {outcome}"

    def __repr__(self) -> str:
        return f"SweepResult({self._summary()})"

    def _repr_html_(self) -> str:
        rows = [
            (t.trial_id, t.status, t.epochs, metric_text(t.metrics, limit=6), t.branch if t.kept else "(deleted)")
            for t in self.trials
        ]
        return html_table(self._summary(), ("trial", "status", "epochs", "metrics", "branch"), rows, [self.directory])

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=float)

    @classmethod
    def from_json(cls, text: str) -> SweepResult:
        data = json.loads(text)

        def record(t: dict[str, Any]) -> TrialRecord:
            return TrialRecord(**{**t, "status": status_word(t["status"])})

        data["trials"] = [record(t) for t in data["trials"]]
        data["winner"] = record(data["winner"]) if data["winner"] else None
        return cls(**data)


class NoWinner(FlotillaError):
    """The sweep ended without a trial trained to the end: nothing to promote. ``result`` holds the trials."""

    def __init__(self, message: str, *, hint: str | None = None, result: SweepResult | None = None) -> None:
        super().__init__(message, hint=hint)
        self.result = result


def trial_record(
    r: Any,
    states: Mapping[str, TrialState],
    sweep_id: str,
    full_epochs: int,
    mode: str,
    *,
    multi: bool,
    commits: Mapping[str, str] | None = None,
    base_ref: str = "",
) -> TrialRecord:
    """One Tune result (an item of a ``ResultGrid``) as a trial: its metrics are those of the epoch
    whose checkpoint it published, its data the commit its ref was pinned to (``commits``, the sweep's
    ref -> commit; ``base_ref`` for a trial whose params pick none)."""
    m = r.metrics or {}
    # a trial that died before its first report has no metrics: its id is its folder's name
    trial_id = m.get("trial_id") or (trial_id_of_dir(Path(r.path).name) if r.path else "?")
    state = states.get(trial_id)
    epochs = epochs_done(m)
    status = ERRORED if r.error else (COMPLETED if epochs >= full_epochs else PRUNED)
    metrics = {k: float(v) for k, v in m.items() if k.startswith("val/") and isinstance(v, (int, float))}
    best = state.best(mode) if state and not multi else None
    if best is not None:
        metrics = dict(best.metrics)
    params = {k: v for k, v in (r.config or {}).items() if v is not None}
    branch = m.get("branch") or (state.branch if state else None) or trial_branch(sweep_id, trial_id)
    data_ref = str(params.get("data.ref", base_ref))
    return TrialRecord(
        trial_id,
        params,
        status,
        epochs,
        metrics,
        branch,
        run_id=m.get("run_id", ""),
        seen_live=bool(state and state.seen_live),
        error=last_line(r.error),
        cause=error_cause(r.error) if r.error else "",
        data_ref=data_ref,
        data_commit=(commits or {}).get(data_ref, ""),
    )


def journal_record(
    state: TrialState,
    params: Mapping[str, Any],
    sweep_id: str,
    full_epochs: int,
    mode: str,
    *,
    commits: Mapping[str, str] | None = None,
    base_ref: str = "",
) -> TrialRecord:
    """A trial that finished but that Tune's saved state never held, as the journal and the ledger tell it.

    A driver killed within Tune's save period of a trial's start loses the trial from what Tune
    restores, though the trial may have trained to the end and published its model on its branch
    before the kill: the resume adds it back from here, so it is ranked (and may win) like the others.
    """
    last = state.curve[-1] if state.curve else None
    epochs = last.epochs if last else 0
    best = state.best(mode) or last
    data_ref = str(params.get("data.ref", base_ref))
    return TrialRecord(
        state.trial_id,
        {k: v for k, v in params.items() if v is not None},
        COMPLETED if epochs >= full_epochs else PRUNED,
        epochs,
        dict(best.metrics) if best else {},
        state.branch or trial_branch(sweep_id, state.trial_id),
        seen_live=state.seen_live,
        data_ref=data_ref,
        data_commit=(commits or {}).get(data_ref, ""),
    )


def last_line(error: Any) -> str:
    """What a trial died of, in one line: Tune wraps the trial's exception in a multi-line traceback.

    A flotilla error's hint, its last line, is left out: written for a standalone run, it names the
    trial's branch, which the sweep may delete (see :class:`~flotilla.tune.branches.TrialBranches`).
    """
    if not error:
        return ""
    lines = [ln.strip() for ln in str(error).strip().splitlines() if ln.strip()]
    said = [ln for ln in lines if not ln.startswith("hint:")] or lines
    return (said[-1] if said else type(error).__name__)[:500]


INFRASTRUCTURE_ERRORS = ("InfrastructureError", "HubUnavailableError")
"""The classes a trial raises when the infrastructure failed it, as the text of Tune's error file names them."""


def error_cause(error: Any) -> str:
    """Why a trial errored, from what Tune kept of its error: the exception (:func:`is_infrastructure`),
    or the text Tune saved when it could not pickle it."""
    if isinstance(error, BaseException):
        infra = is_infrastructure(error)
    else:
        infra = any(f"{name}:" in str(error) for name in INFRASTRUCTURE_ERRORS)
    return INFRASTRUCTURE if infra else OWN_FAULT


def ranked(
    sweep_id: str,
    directory: Path,
    commits: Mapping[str, str],
    objective: Objective,
    trials: Iterable[TrialRecord],
    *,
    front: Collection[str] | None = None,
) -> SweepResult:
    """The sweep's result: its trials, the Pareto front (several objectives) and the winner, the
    trial trained to the end that ranks first (for a Pareto search: the front's best on the first metric).

    ``front``: for a Pareto search, the ids of the trials on it as the study has them
    (:func:`flotilla.tune.study.pareto_ids`, Optuna's ``study.best_trials``).
    """
    metric, mode = objective.primary
    objectives: dict[str, str] = dict(objective.metrics) if objective.metrics else {metric: mode}
    result = SweepResult(sweep_id, str(directory), dict(commits), metric, mode, trials=list(trials), objectives=objectives)
    done = [t for t in result.trials if t.status == COMPLETED and set(result.objectives) <= set(t.metrics)]
    best = [t for t in done if t.trial_id in (front or ())] if objective.multi else done
    result.pareto = [t.trial_id for t in best] if objective.multi else []
    if best:
        pick = min if mode == "min" else max
        result.winner = pick(best, key=lambda t: t.metrics[metric])
    return result


def no_winner(result: SweepResult, spec: SweepSpec) -> NoWinner:
    """No trial trained to the end: say how each ended and, for errors, what the first one died of."""
    sweep_id = result.sweep_id
    counts = Counter(t.status for t in result.trials)
    how = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no trial ran"
    errored = [t for t in result.trials if t.status == "errored"]
    own = [t for t in errored if t.cause != INFRASTRUCTURE]
    infra = [t for t in errored if t.cause == INFRASTRUCTURE]
    first = (own or errored)[0] if errored else None
    why = f"; trial {first.trial_id} failed with: {first.error or 'see its log'}" if first else ""
    kept = [t for t in infra if t.kept]
    went_on = (
        f"{len(kept)} trial(s) failed by the infrastructure (the hub or a connection), not their own fault: "
        f"their branches ({', '.join(t.branch for t in kept)}) and checkpoints are kept, and "
        f"'flotilla sweep resume {sweep_id}' continues them from their last checkpoints once the hub is back"
        if kept
        else ""
    )
    if own:
        hint = (
            f"fix the cause (all trials failing alike usually means the spec: try 'flotilla sweep <spec> --check'), "
            f"then 'flotilla sweep resume {sweep_id}' runs the errored trials again; the full tracebacks are in the Ray logs"
            + (f"; {went_on}" if went_on else "")
        )
    elif went_on:
        hint = went_on + " ('flotilla hub status' says whether it is up)"
    elif errored:
        hint = f"'flotilla sweep resume {sweep_id}' runs the errored trials again once the hub is back"
    elif spec.budget.time_limit_s:
        hint = (
            f"budget.time_limit_s ({spec.budget.time_limit_s:g} s) ran out before a trial finished: raise it, "
            "or train fewer epochs"
        )
    else:
        hint = "every trial was stopped early: check the scheduler (grace_period) and the objective's mode"
    return NoWinner(
        f"sweep {sweep_id!r} ended without a trial trained to the end ({how}){why}; nothing was promoted",
        hint=hint,
        result=result,
    )
