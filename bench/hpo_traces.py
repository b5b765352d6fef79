"""The sweep benchmark's bookkeeping: each sweep's trace of reports, the target, the cost to it, the curves.

Kept apart from ``bench/hpo.py`` (which runs the sweeps) so that a saved JSON of traces can be scored and
plotted again without training anything (``bench/hpo.py --replot traces.json``), and so that how a trace
is scored reads in one place.

A *trace* is every objective report of one sweep, in the order the sweep driver journalled them
(``lifecycle.jsonl``, the order Tune received them): each report is one trial-epoch, stamped with the
wall time since ``sweep()`` was called. An arm's cost to the target is the trial-epochs and the wall time
of the first report at or past the target; an arm that never reports it is *censored*: infinite in the
medians, shown as ``>=N`` with what it spent.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ARMS = ("asha+tpe", "tpe", "random")
COLOURS = {"asha+tpe": "tab:blue", "tpe": "tab:orange", "random": "tab:grey"}
INF = math.inf


@dataclass(frozen=True)
class Report:
    trial_id: str
    epoch: int  # the trial's own epoch count at this report
    value: float  # the objective (maximised)
    wall_s: float  # since the sweep was started
    trial_epochs: int  # every epoch any trial of this sweep has trained, this one included


@dataclass
class Trace:
    arm: str
    seed: int
    sweep_id: str
    wall_s: float  # the whole sweep, start to return (ranking, branch clean-up and plots included)
    trials: int
    reports: list[Report] = field(default_factory=list)

    @property
    def best(self) -> float:
        return max((r.value for r in self.reports), default=-INF)

    @property
    def trial_epochs(self) -> int:
        return len(self.reports)


@dataclass(frozen=True)
class Cost:
    """What an arm spent until its first report at or past the target (infinite: never, censored)."""

    trial_epochs: float
    wall_s: float
    spent_epochs: int  # all it spent (what a censored arm is shown with)
    spent_s: float

    @property
    def reached(self) -> bool:
        return self.trial_epochs < INF

    def shown(self, what: str) -> str:
        if what == "epochs":
            return f"{self.trial_epochs:.0f}" if self.reached else f">={self.spent_epochs}"
        return f"{self.wall_s:.0f}s" if self.reached else f">={self.spent_s:.0f}s"


def read_trace(journal: Path, arm: str, seed: int, sweep_id: str, started: float, wall_s: float, trials: int) -> Trace:
    """The reports of the sweep whose journal is ``journal``, ``started`` being ``time.time()`` at its call."""
    lines = [json.loads(x) for x in journal.read_text().splitlines() if x.strip()]
    results = [x for x in lines if x["event"] == "result"]
    reports = [
        Report(x["trial_id"], int(x["iteration"]), float(x["value"]), float(x["t"]) - started, i)
        for i, x in enumerate(results, 1)
    ]
    return Trace(arm, seed, sweep_id, wall_s, trials, reports)


def target_of(random_traces: list[Trace]) -> float:
    """The median, over seeds, of the best objective each full-budget random search reached.

    The lower median for an even number of seeds, so that at least half the random searches reach
    it and the random arm's own median cost is finite.
    """
    return float(statistics.median_low([t.best for t in random_traces]))


def cost(trace: Trace, target: float) -> Cost:
    spent_s = trace.reports[-1].wall_s if trace.reports else trace.wall_s
    for r in trace.reports:
        if r.value >= target:
            return Cost(r.trial_epochs, r.wall_s, trace.trial_epochs, spent_s)
    return Cost(INF, INF, trace.trial_epochs, spent_s)


def median(xs: list[float]) -> float:
    """The median with censored (infinite) values ranked last: finite while over half the seeds got there."""
    return float(statistics.median(xs)) if xs else INF


def ratio(a: float, b: float) -> float:
    if b == INF or b == 0:
        return math.nan
    return a / b


def shown_ratio(x: float) -> str:
    if math.isnan(x):
        return "n/a"
    return "inf (never, on the median seed)" if x == INF else f"{x:.2f}x"


def best_so_far(trace: Trace, xs: list[float], by: str) -> list[float]:
    """The trace's best objective at each x (wall seconds or trial-epochs); -inf before its first report."""
    out, best, i = [], -INF, 0
    reps = trace.reports
    for x in xs:
        while i < len(reps) and (reps[i].wall_s if by == "wall" else reps[i].trial_epochs) <= x:
            best = max(best, reps[i].value)
            i += 1
        out.append(best)
    return out


def plot(png: Path, traces: dict[str, list[Trace]], target: float, title: str) -> None:
    """Best objective so far against wall time and against trial-epochs: each seed thin, the median over seeds bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    png.parent.mkdir(parents=True, exist_ok=True)
    with plt.style.context("default"):  # the sweeps' own plots, drawn in this process, may leave a style set
        _draw(plt, png, traces, target, title)


def _draw(plt: Any, png: Path, traces: dict[str, list[Trace]], target: float, title: str) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    finals = [t.best for ts in traces.values() for t in ts if t.reports]
    low = min([*finals, target]) - 0.15 if finals else target - 0.5
    high = max([*finals, target]) + 0.03
    for ax, by, label in zip(axes, ("wall", "epochs"), ("wall time since the sweep started (s)", "trial-epochs"), strict=True):
        end = max(
            ((r.wall_s if by == "wall" else r.trial_epochs) for ts in traces.values() for t in ts for r in t.reports),
            default=1.0,
        )
        xs = [end * i / 400 for i in range(401)]
        for arm in ARMS:
            curves = [best_so_far(t, xs, by) for t in traces.get(arm, [])]
            if not curves:
                continue
            for c in curves:
                ax.step(xs, [v if v > -INF else math.nan for v in c], where="post", color=COLOURS[arm], alpha=0.3, lw=0.8)
            med = [statistics.median(col) for col in zip(*curves, strict=True)]
            ax.step(
                xs,
                [v if v > -INF else math.nan for v in med],
                where="post",
                color=COLOURS[arm],
                lw=2.2,
                label=f"{arm} (median of {len(curves)} seeds)",
            )
        ax.axhline(target, color="tab:red", ls="--", lw=1.2, label=f"target {target:.4f}")
        ax.set_ylim(low, high)
        ax.set_xlim(0, end)
        ax.set_xlabel(label)
        ax.set_ylabel("best objective so far")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def save(path: Path, design: dict[str, object], traces: dict[str, list[Trace]], target: float | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"design": design, "target": target, "traces": {a: [asdict(t) for t in ts] for a, ts in traces.items()}}
    path.write_text(json.dumps(data, indent=1))


def load(path: Path) -> tuple[dict[str, object], dict[str, list[Trace]], float | None]:
    data = json.loads(path.read_text())
    traces = {
        arm: [Trace(**{**t, "reports": [Report(**r) for r in t["reports"]]}) for t in ts] for arm, ts in data["traces"].items()
    }
    return data["design"], traces, data["target"]
