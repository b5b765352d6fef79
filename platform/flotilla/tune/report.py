"""Sweep results people would rather see than read: a rich table and PNG plots.

Plots: Optuna's optimisation history, parallel coordinates and parameter
importances over finished trials, and every trial's learning curve (trials the
scheduler stopped are pruned in the study, so their curves end at the rung that
stopped them) — from the study in ``optuna.db``; the Pareto front too for a
multi-objective search — each as PNG and as interactive HTML — and a per-task trade-off scatter
(age MAE against gender accuracy, coloured by emotion accuracy) over trials.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flotilla.tune.results import COMPLETED
from flotilla.tune.store import write_result
from flotilla.tune.study import PRUNED, names_by_number
from flotilla.tune.study import load as load_study

if TYPE_CHECKING:
    from rich.table import Table

    from flotilla.tune.results import SweepResult, TrialRecord

log = logging.getLogger(__name__)


SHORT_SHA = 12
"""Characters of a commit id the table shows (flotilla's messages abbreviate commits to 12 as well)."""


def trials_table(result: SweepResult) -> Table:
    """Every trial, best first: its params, the data commit it read (when the sweep has several data
    variants; the caption names the one commit otherwise), its objective(s) and its branch."""
    from rich.table import Table

    objectives = getattr(result, "objectives", None) or {result.objective: result.mode}
    what = ", ".join(f"{m} ({mode})" for m, mode in objectives.items())
    # several data variants: each row says which commit it read; one: the caption says it once
    by_data = len(set(result.data_commits.values())) > 1 or len({tr.data_commit for tr in result.trials}) > 1
    caption = None if by_data else ", ".join(f"data {ref} @ {c[:SHORT_SHA]}" for ref, c in result.data_commits.items())
    if any(tr.status == PRUNED for tr in result.trials):
        caption = f"{caption + '; ' if caption else ''}{PRUNED}: stopped early by ASHA (PRUNED in the Optuna study)"
    t = Table(
        title=f"sweep {result.sweep_id} — {'Pareto search over ' if len(objectives) > 1 else 'objective '}{what}",
        caption=caption or None,
    )
    params = sorted({k for tr in result.trials for k in tr.params})
    t.add_column("trial", no_wrap=True, min_width=10)  # the trial's one name: never cut to "1e1a4f…"
    for col in ("status", "epochs", *params, *(["data commit"] if by_data else []), *objectives):
        t.add_column(col)
    t.add_column("branch")
    sign = 1.0 if result.mode == "min" else -1.0  # best first; a trial without the metric last

    def key(tr: TrialRecord) -> float:
        return sign * tr.metrics.get(result.objective, sign * float("inf"))

    for tr in sorted(result.trials, key=key):
        star = " ★" if result.winner and tr.trial_id == result.winner.trial_id else ""
        star += " ◆" if tr.trial_id in (getattr(result, "pareto", None) or []) else ""
        row = [tr.trial_id + star, tr.status, str(tr.epochs)]
        row += [_fmt(tr.params.get(p)) for p in params]
        row += [tr.data_commit[:SHORT_SHA] or "-"] if by_data else []
        row += [_fmt(tr.metrics.get(m)) for m in objectives]
        row += [tr.branch if tr.kept else "(deleted)"]
        t.add_row(*row)
    return t


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _plotly_js(out_dir: Path) -> str:
    """plotly.js written once beside all sweeps (not 4 MB per sweep, and no CDN: machines may be offline);
    returns its path relative to ``out_dir`` for the pages' script tag."""
    import os

    import plotly
    from plotly.offline import get_plotlyjs

    asset = out_dir.parent.parent / "_assets" / f"plotly-{plotly.__version__}.min.js"
    if not asset.exists():
        asset.parent.mkdir(exist_ok=True)
        tmp = asset.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(get_plotlyjs())
        tmp.replace(asset)
    return os.path.relpath(asset, out_dir)


def missing_plots_note(plots: dict[str, str], statuses: list[str]) -> str | None:
    """Why a sweep has no history / parallel / importance plot, when the reason is ASHA and not a bug.

    Those plots are over trials that trained to the end (Optuna leaves pruned ones out); a small
    sweep whose scheduler stopped all but one has none to draw, and a silent absence reads as a fault.
    """
    if "history" in plots or "pareto" in plots:
        return None
    done, stopped = statuses.count(COMPLETED), statuses.count(PRUNED)
    if done >= 2 or not stopped:
        return None
    return (
        f"no history/parallel/importance plots: they need 2 trials trained to the end, and ASHA pruned "
        f"{stopped} of {len(statuses)}; every trial's learning curve is in the curves plot"
    )


OPTUNA_LABEL = re.compile(r"^Trial ?(\d+)$")
"""How Optuna's plots name a trial (``Trial3``): by its number, which is no name of flotilla's."""


def trial_labels(study: Any) -> dict[str, str]:
    """Optuna's label of each trial -> flotilla's: the trial's id, and ``(pruned)`` for one ASHA stopped."""
    import optuna

    names = names_by_number(study.trials)
    pruned = {t.number for t in study.trials if t.state == optuna.trial.TrialState.PRUNED}
    return {f"Trial{n}": f"{name} ({PRUNED})" if n in pruned else name for n, name in names.items()}


def relabel(label: str, labels: Mapping[str, str]) -> str:
    """An Optuna legend entry (``Trial3``) in flotilla's words; anything else as it is."""
    m = OPTUNA_LABEL.match(label)
    return labels.get(f"Trial{m.group(1)}", label) if m else label


def _whole_epochs(fig_or_ax: Any) -> None:
    """Epoch (and trial-number) axes ticked at whole numbers, never 1.2, 1.4."""
    from matplotlib.ticker import MaxNLocator

    fig_or_ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def draw_in_background(d: Path, sweep_id: str, result: SweepResult) -> threading.Thread:
    """Draw the sweep's plots into ``result.plots`` on a (non-daemon) thread, off the sweep's critical path.

    Drawing imports matplotlib and plotly and renders a dozen figures: seconds that every sweep used to
    spend between its last trial and its result. A plot that cannot be drawn is a warning, not a failed
    sweep: the trials, the branches and the promotion are the result.
    """

    def draw() -> None:
        try:
            result.plots.update(write_plots(d, sweep_id, result))
            write_result(result)  # `sweep show` lists them
        except Exception as exc:
            log.warning("the plots of sweep %s could not be drawn: %s", sweep_id, exc)

    thread = threading.Thread(target=draw, name=f"flotilla-plots-{sweep_id}", daemon=False)
    thread.start()
    return thread


def write_plots(d: Path, sweep_id: str, result: SweepResult) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    import optuna.visualization.matplotlib as ov

    out_dir = d / "plots"
    out_dir.mkdir(exist_ok=True)
    paths: dict[str, str] = {}
    import warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # importance is asked for low target values on purpose (see below); flat axes are fine in a small sweep
    warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes")
    warnings.filterwarnings("ignore", message="Attempting to set identical low and high")
    study = load_study(d, sweep_id)
    labels = trial_labels(study)
    numbers = names_by_number(study.trials)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    multi = len(study.directions) > 1
    # Optuna draws these for one objective; a Pareto study shows them for the first metric listed
    one: dict[str, Any] = {"target": lambda t: t.values[0]} if multi else {}
    one["target_name"] = result.objective
    plots: list[tuple[str, Any, dict[str, Any]]] = [
        ("history", ov.plot_optimization_history, one),
        ("parallel", ov.plot_parallel_coordinate, one),
        # Optuna ranks importance for *low* target values: flip a maximised first metric
        (
            "importance",
            ov.plot_param_importances,
            {**one, "target": lambda t: t.values[0] if result.mode == "min" else -t.values[0]} if multi else one,
        ),
    ]
    if multi and len(study.directions) <= 3:
        plots.append(("pareto", ov.plot_pareto_front, {"target_names": list(result.objectives)}))
    curves = [t for t in study.trials if t.intermediate_values]
    if not multi:  # every trial's learning curve, pruned ones ending at the ASHA rung that stopped them
        plots.append(("curves", ov.plot_intermediate_values, {}))
    for name, fn, kwargs in plots:
        if len(curves if name == "curves" else complete) < (2 if name != "importance" else 3):
            continue
        try:
            ax = fn(study, **kwargs)
            first = ax[0] if hasattr(ax, "__len__") else ax
            if name == "curves":  # Optuna's generic labels, said in the sweep's terms
                first.set(xlabel="epoch", ylabel=result.objective, title=f"learning curves (pruned ones end early) — {sweep_id}")
                for line in first.get_lines():
                    line.set_label(relabel(str(line.get_label()), labels))
                if first.get_legend() is not None:
                    first.legend(bbox_to_anchor=(1.05, 1), loc="upper left", borderaxespad=0.0, fontsize=7)
            if name == "curves":
                _whole_epochs(first)
            if name == "history":  # Optuna's x is the trial's number: show the trial's id there instead
                first.set_xticks(list(numbers), [numbers[n] for n in numbers], rotation=45, ha="right", fontsize=7)
                first.set_xlabel("trial (in the order they were suggested)")
            fig = first.figure
            fig.set_size_inches(9, 5)
            fig.tight_layout()
            fig.savefig(out_dir / f"{name}.png", dpi=90)
            plt.close(fig)
            paths[name] = str(out_dir / f"{name}.png")
            # the same plot, interactive (hover a trial, brush the parallel axes), drawn by Optuna's plotly twin
            twin: Any = getattr(optuna.visualization, fn.__name__)
            interactive = twin(study, **kwargs)
            interactive.for_each_trace(lambda tr: tr.update(name=relabel(tr.name, labels)) if tr.name else None)
            if name == "curves":
                interactive.update_layout(xaxis_title="epoch", yaxis_title=result.objective)
            if name == "curves":
                interactive.update_xaxes(tickformat="d", dtick=1)
            if name == "history":
                interactive.update_xaxes(
                    title="trial (in the order they were suggested)", tickvals=list(numbers), ticktext=list(numbers.values())
                )
            interactive.write_html(out_dir / f"{name}.html", include_plotlyjs=_plotly_js(out_dir), full_html=True)
            paths[f"{name}.html"] = str(out_dir / f"{name}.html")
        except Exception:  # a plot Optuna cannot draw for this study (e.g. one distinct value) is skipped
            plt.close("all")
    pts = [t for t in result.trials if {"val/age/mae", "val/gender/accuracy"} <= set(t.metrics)]
    if pts:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        sc = ax.scatter(
            [t.metrics["val/age/mae"] for t in pts],
            [t.metrics["val/gender/accuracy"] for t in pts],
            c=[t.metrics.get("val/emotion/accuracy", 0.0) for t in pts],
            cmap="viridis",
            s=60,
        )
        for t in pts:
            ax.annotate(
                t.trial_id
                + (f" ({PRUNED})" if t.status == PRUNED else "")
                + (" ★" if result.winner and t is result.winner else ""),
                (t.metrics["val/age/mae"], t.metrics["val/gender/accuracy"]),
                fontsize=7,
            )
        ax.set_xlabel("age MAE (years, lower is better)")
        ax.set_ylabel("gender accuracy")
        fig.colorbar(sc, label="emotion accuracy")
        ax.set_title(f"per-task trade-off — {sweep_id}")
        fig.tight_layout()
        fig.savefig(out_dir / "tradeoff.png", dpi=90)
        plt.close(fig)
        paths["tradeoff"] = str(out_dir / "tradeoff.png")
    return paths
