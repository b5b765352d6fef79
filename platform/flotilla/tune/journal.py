"""The trial journal: what the sweep driver saw happen to each trial, and resume's source of truth.

Tune saves its experiment state at the end of a controller step, after it has told its callbacks what
happened in it; a driver killed in between leaves Tune's state behind what the callbacks saw. So the
driver's callback writes every event to ``lifecycle.jsonl`` the moment it happens, and ``resume``
brings Tune's saved state up to the journal before restoring it.

As in Optuna's journal storage, the journal is a log of typed operations: each line is one record of
an :class:`Event` kind, appended (and fsynced) by one writer, :meth:`Journal.append`, and read back by
one reader, :meth:`Journal.records`, which :func:`fold` turns into a :class:`TrialState` per trial.
The lines are JSON with the keys an older flotilla wrote (``trial_id``, ``event``, ``iteration`` ...),
so a sweep journalled by it resumes, and ``bench/hpo.py`` reads the reports as it always has.

``ledger.jsonl`` is the second, smaller log: one :class:`TrialStart` per start of a trial, which is
how a resumed sweep tells a start Tune never saved ("lost") and shows that no finished trial ran twice.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

log = logging.getLogger(__name__)

JOURNAL = "lifecycle.jsonl"
LEDGER = "ledger.jsonl"


class Event(StrEnum):
    """The kinds of journal record; the value is the ``event`` key of its line."""

    RESULT = "result"  # a report with the objective: one epoch of a trial's curve
    RUNNING = "running"  # the trial's first report: its branch, and whether the hub had it
    COMPLETE = "complete"  # Tune ended the trial after its last epoch
    STOPPED = "stopped"  # ended early (the scheduler, or budget.target)
    ERRORED = "errored"
    BRANCH_DELETED = "branch_deleted"
    LOST = "lost"  # started, but Tune's saved state never held it (resume found it in the ledger)
    PLACEMENT_GROUP_FREED = "placement_group_freed"


INFRASTRUCTURE, OWN_FAULT = "infrastructure", "trial"
"""Why a trial errored (an errored end's ``cause``): the hub, a connection or a node; or the trial itself."""

ENDS = (Event.COMPLETE, Event.STOPPED, Event.ERRORED)
FINISHES = (Event.COMPLETE, Event.STOPPED)


def _now() -> float:
    return time.time()


@dataclass(frozen=True)
class Reported:
    """One epoch's report: the objective's ``value`` and the ``val/`` metrics that came with it."""

    kind: ClassVar[Event] = Event.RESULT
    trial_id: str
    epochs: int  # epochs the trial's model has trained (``epochs_done``), its line's "iteration"
    value: float
    metrics: Mapping[str, float] = field(default_factory=dict)
    t: float = field(default_factory=_now)

    def fields(self) -> dict[str, Any]:
        return {"iteration": self.epochs, "value": self.value, "metrics": dict(self.metrics)}


@dataclass(frozen=True)
class Running:
    kind: ClassVar[Event] = Event.RUNNING
    trial_id: str
    branch: str
    seen_live: bool | None  # None: the hub did not answer
    t: float = field(default_factory=_now)

    def fields(self) -> dict[str, Any]:
        return {"branch": self.branch, "seen_live": self.seen_live}


@dataclass(frozen=True)
class Ended:
    """Tune ended the trial: ``how`` is complete (every epoch trained), stopped or errored.

    ``infrastructure``: an error of the hub, a connection or a node, not of the trial itself
    (:func:`flotilla.errors.is_infrastructure`); such a trial keeps its branch for ``sweep resume``.
    """

    how: Event
    trial_id: str
    branch: str | None
    epochs: int
    t: float = field(default_factory=_now)
    infrastructure: bool = False

    def __post_init__(self) -> None:
        if self.how not in ENDS:
            raise ValueError(f"a trial ends complete, stopped or errored, not {self.how.value!r}")

    @property
    def kind(self) -> Event:
        return self.how

    def fields(self) -> dict[str, Any]:
        cause = {"cause": INFRASTRUCTURE if self.infrastructure else OWN_FAULT} if self.how is Event.ERRORED else {}
        return {"branch": self.branch, "epochs": self.epochs, **cause}


@dataclass(frozen=True)
class BranchDeleted:
    kind: ClassVar[Event] = Event.BRANCH_DELETED
    trial_id: str
    branch: str
    t: float = field(default_factory=_now)

    def fields(self) -> dict[str, Any]:
        return {"branch": self.branch}


@dataclass(frozen=True)
class Lost:
    kind: ClassVar[Event] = Event.LOST
    trial_id: str
    t: float = field(default_factory=_now)

    def fields(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class PlacementGroupFreed:
    """A stopped trial's Train placement group, removed by the driver (no trial's record: ``trial_id`` "-")."""

    kind: ClassVar[Event] = Event.PLACEMENT_GROUP_FREED
    placement_group: str
    t: float = field(default_factory=_now)
    trial_id: str = "-"

    def fields(self) -> dict[str, Any]:
        return {"placement_group": self.placement_group}


Record = Reported | Running | Ended | BranchDeleted | Lost | PlacementGroupFreed


def to_line(record: Record) -> dict[str, Any]:
    return {"trial_id": record.trial_id, "event": record.kind.value, **record.fields(), "t": record.t}


def from_line(line: Mapping[str, Any]) -> Record | None:
    """A journal line as its record; None for a kind this flotilla does not know (a newer one wrote it)."""
    try:
        kind = Event(line["event"])
    except ValueError:
        return None
    trial_id, t = str(line["trial_id"]), float(line.get("t") or 0.0)
    if kind is Event.RESULT:
        metrics = {k: float(v) for k, v in (line.get("metrics") or {}).items()}  # older journals: no metrics
        return Reported(trial_id, int(line["iteration"]), float(line["value"]), metrics, t)
    if kind is Event.RUNNING:
        seen = line.get("seen_live")
        return Running(trial_id, str(line["branch"]), None if seen is None else bool(seen), t)
    if kind in ENDS:
        infra = line.get("cause") == INFRASTRUCTURE  # older journals: no cause, as every error then was
        return Ended(kind, trial_id, line.get("branch"), int(line.get("epochs") or 0), t, infrastructure=infra)
    if kind is Event.BRANCH_DELETED:
        return BranchDeleted(trial_id, str(line["branch"]), t)
    if kind is Event.LOST:
        return Lost(trial_id, t)
    return PlacementGroupFreed(str(line.get("placement_group", "")), t)


@dataclass(frozen=True)
class TrialState:
    """One trial as the journal tells it, folded from its records in order."""

    trial_id: str
    branch: str | None = None
    seen_live: bool = False  # its branch was there while it ran
    curve: tuple[Reported, ...] = ()  # by epoch; a restart from an earlier checkpoint rewrites it from there
    ends: tuple[Event, ...] = ()  # each time Tune ended it (a resume may run an errored trial again)
    branch_deleted: bool = False
    lost: bool = False
    infrastructure: bool = False  # its last end is an error of the hub, a connection or a node

    @property
    def finished(self) -> bool:
        """Its last end is a finish: an errored trial that a resume re-ran and finished counts; one whose
        last end is an error is re-run by the resume."""
        return bool(self.ends) and self.ends[-1] in FINISHES

    @property
    def ever_finished(self) -> bool:
        """Some attempt of it finished: its model is published on its branch."""
        return any(e in FINISHES for e in self.ends)

    def reached(self, target: float, mode: str) -> bool:
        """Some report of it reached ``budget.target``."""
        return any((r.value >= target if mode == "max" else r.value <= target) for r in self.curve)

    def best(self, mode: str) -> Reported | None:
        """The report of its best epoch by the objective (ties: the earlier epoch, as the trial chose the
        checkpoint it published); reports from an older journal, without metrics, are left out."""
        sign = 1.0 if mode == "max" else -1.0
        scored = [r for r in self.curve if r.metrics]
        return max(scored, key=lambda r: (sign * r.value, -r.epochs)) if scored else None

    def apply(self, record: Record) -> TrialState:
        if isinstance(record, Reported):
            curve = self.curve
            if curve and record.epochs <= curve[-1].epochs:  # the trial went back to an earlier checkpoint (or the start)
                curve = tuple(r for r in curve if r.epochs < record.epochs)
            return replace(self, curve=(*curve, record))
        branch = getattr(record, "branch", None) or self.branch
        if isinstance(record, Running):
            return replace(self, branch=branch, seen_live=self.seen_live or bool(record.seen_live))
        if isinstance(record, Ended):
            return replace(self, branch=branch, ends=(*self.ends, record.how), infrastructure=record.infrastructure)
        if isinstance(record, BranchDeleted):
            return replace(self, branch=branch, branch_deleted=True)
        if isinstance(record, Lost):
            return replace(self, lost=True)
        return self


def fold(records: Iterable[Record]) -> dict[str, TrialState]:
    """Per trial, its state after every record of it (records not about one trial are skipped)."""
    out: dict[str, TrialState] = {}
    for record in records:
        if isinstance(record, PlacementGroupFreed):
            continue
        out[record.trial_id] = out.get(record.trial_id, TrialState(record.trial_id)).apply(record)
    return out


def finished(states: Mapping[str, TrialState]) -> set[str]:
    return {t for t, s in states.items() if s.finished}


def reached_target(states: Mapping[str, TrialState], target: float, mode: str) -> str | None:
    """The first trial (by id) whose reports, as the journal has them, reached ``budget.target``."""
    hit = [t for t, s in sorted(states.items()) if s.reached(target, mode)]
    return hit[0] if hit else None


def _append(path: Path, line: Mapping[str, Any]) -> None:
    """One JSON line, on disk before the call returns: the journal is what a killed driver leaves behind."""
    with open(path, "a") as fh:
        fh.write(json.dumps(line, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _lines(path: Path) -> Iterable[dict[str, Any]]:
    if not path.exists():
        return
    for n, text in enumerate(path.read_text().splitlines(), 1):
        if not text.strip():
            continue
        try:
            yield json.loads(text)
        except json.JSONDecodeError:  # a line cut short by a kill mid-write: the lines around it still count
            log.warning("%s line %d is not whole JSON; skipped", path, n)


class Journal:
    """``lifecycle.jsonl`` of one sweep: the one writer and the one reader of its records."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def append(self, record: Record) -> None:
        _append(self.path, to_line(record))

    def records(self) -> list[Record]:
        return [r for r in map(from_line, _lines(self.path)) if r is not None]

    def trials(self) -> dict[str, TrialState]:
        return fold(self.records())


@dataclass(frozen=True)
class TrialStart:
    trial_id: str
    params: Mapping[str, Any]
    started: float = field(default_factory=_now)


class Ledger:
    """``ledger.jsonl``: every start of a trial, written by the driver when Tune starts it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def append(self, start: TrialStart) -> None:
        _append(self.path, {"trial_id": start.trial_id, "params": dict(start.params), "started": start.started})

    def starts(self) -> list[TrialStart]:
        return [TrialStart(str(x["trial_id"]), x.get("params") or {}, float(x.get("started") or 0.0)) for x in _lines(self.path)]
