"""flotilla's own progress, told on the driver: epochs of a run's models, trials of a sweep.

Ray's and Tune's console output is for debugging (the CLI sends it to the run's log); what a person
follows is this: one line per model with its epoch and validation metrics, one per trial with its
state and objective. Events are plain frozen records, so the same events drive a rich live table on a
terminal and one plain line per event when the output is piped (a log, CI) — no ANSI there. Training
(:mod:`flotilla.training.run`) and sweeps (:mod:`flotilla.tune.watch`) both report here.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from rich.console import Console
from rich.live import Live
from rich.table import Table

RUNNING = "running"  # a trial's state until it ends: completed, pruned or errored (flotilla.tune.results)
SHOWN_METRICS = 4  # per line: the loss and the first few validation metrics stay on one terminal line


@dataclass(frozen=True)
class EpochEvent:
    """A model finished an epoch (``epoch`` counts from 1); ``metrics`` as the workers reported them."""

    model: str
    epoch: int
    epochs: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TrialEvent:
    """A trial changed state or reported; ``state``: running, completed, pruned (by the scheduler) or errored."""

    trial: str
    state: str
    epoch: int = 0
    epochs: int = 0
    metric: str = ""
    value: float | None = None
    best: float | None = None  # best objective value over the sweep so far


class ProgressView(Protocol):
    def epoch(self, event: EpochEvent) -> None: ...

    def trial(self, event: TrialEvent) -> None: ...

    def close(self) -> None: ...


def short_metrics(metrics: dict[str, Any], limit: int = SHOWN_METRICS) -> dict[str, float]:
    """The metrics worth a glance: the training loss, then validation metrics without their ``val/``
    prefix; counts (``/n``), throughput and bookkeeping keys left out."""
    out: dict[str, float] = {}
    if isinstance(metrics.get("train/loss"), (int, float)):
        out["loss"] = float(metrics["train/loss"])
    for key, value in metrics.items():
        if key.startswith("val/") and not key.endswith("/n") and isinstance(value, (int, float)):
            out[key.removeprefix("val/")] = float(value)
    return dict(list(out.items())[:limit])


def _num(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4g}"


def format_epoch(event: EpochEvent) -> str:
    """``family  epoch 2/4  loss 6.404  age/mae 22.36 ...`` — one line, no markup."""
    shown = "  ".join(f"{k} {_num(v)}" for k, v in short_metrics(event.metrics).items())
    return f"{event.model}  epoch {event.epoch}/{event.epochs}" + (f"  {shown}" if shown else "")


def format_trial(event: TrialEvent) -> str:
    """``trial 88bb400d  pruned  epoch 1/4  val/age/mae 22.36  (best 20.1)`` — one line, no markup."""
    parts = [f"trial {event.trial}", event.state]
    if event.epochs and event.epoch:  # a trial just started has reported no epoch yet
        parts.append(f"epoch {event.epoch}/{event.epochs}")
    if event.metric and event.value is not None:
        parts.append(f"{event.metric} {_num(event.value)}")
    if event.best is not None:
        parts.append(f"(best {_num(event.best)})")
    return "  ".join(parts)


class PlainView:
    """One line per event on ``stream``: for pipes, logs and ``-v`` (where Ray's lines interleave)."""

    def __init__(self, stream: IO[str], prefix: str = "") -> None:
        self.stream = stream
        self.prefix = prefix  # a job's "[flotilla] ": its lines stand out among Ray's in the job log
        self._lock = threading.Lock()

    def _line(self, text: str) -> None:
        with self._lock:
            self.stream.write(self.prefix + text + "\n")
            self.stream.flush()

    def epoch(self, event: EpochEvent) -> None:
        self._line(format_epoch(event))

    def trial(self, event: TrialEvent) -> None:
        self._line(format_trial(event))

    def close(self) -> None:
        pass


_STATE_STYLE = {RUNNING: "cyan", "completed": "green", "pruned": "yellow", "errored": "red"}


class LiveView:
    """A rich live table on a terminal: a row per model (or trial), updated in place."""

    def __init__(self, console: Console, title: str = "") -> None:
        self.title = title
        self._epochs: dict[str, EpochEvent] = {}
        self._trials: dict[str, TrialEvent] = {}
        self._lock = threading.Lock()
        # the CLI redirects sys.stdout/sys.stderr to the run's log itself: Live must not take them back
        self._live = Live(self._render(), console=console, redirect_stdout=False, redirect_stderr=False, auto_refresh=False)
        self._live.start()

    def _render(self) -> Table:
        table = Table(title=self.title or None, title_justify="left", box=None, pad_edge=False)
        if self._trials:
            for col in ("trial", "state", "epoch", "metric", "best"):
                table.add_column(col, overflow="fold")
            best = next((t.best for t in reversed(list(self._trials.values())) if t.best is not None), None)
            for t in self._trials.values():
                style = _STATE_STYLE.get(t.state, "white")
                table.add_row(
                    t.trial,
                    f"[{style}]{t.state}[/]",
                    f"{t.epoch}/{t.epochs}" if t.epochs else "-",
                    f"{t.metric} {_num(t.value)}" if t.metric else "-",
                    _num(best),
                )
        else:
            table.add_column("model", overflow="fold")
            table.add_column("epoch")
            table.add_column("metrics", overflow="fold")
            for e in self._epochs.values():
                shown = "  ".join(f"{k} {_num(v)}" for k, v in short_metrics(e.metrics).items())
                table.add_row(e.model, f"{e.epoch}/{e.epochs}", shown)
        return table

    def _update(self) -> None:
        self._live.update(self._render(), refresh=True)

    def epoch(self, event: EpochEvent) -> None:
        with self._lock:
            self._epochs[event.model] = event
            self._update()

    def trial(self, event: TrialEvent) -> None:
        with self._lock:
            self._trials[event.trial] = event
            self._update()

    def close(self) -> None:
        with self._lock:
            self._live.stop()


class NullView:
    """No progress (``-q``, ``--json`` without a terminal, the Python API by default)."""

    def epoch(self, event: EpochEvent) -> None:
        pass

    def trial(self, event: TrialEvent) -> None:
        pass

    def close(self) -> None:
        pass


def make_view(stream: IO[str], *, live: bool, title: str = "") -> ProgressView:
    """A live table when ``live`` (a terminal), else one plain line per event on ``stream``."""
    if live:
        return LiveView(Console(file=stream, emoji=False), title)
    return PlainView(stream)
