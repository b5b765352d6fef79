"""``flotilla sweep run SPEC | resume ID | show ID | list | dashboard ID`` — thin over :mod:`flotilla.tune`.

``flotilla sweep SPEC`` (a spec file as the first word) is ``run``, as before there were subcommands.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from flotilla.cli.common import err, friendly
from flotilla.cli.output import flag, mode, print_json, print_table, progress_view, ray_console, with_output
from flotilla.errors import ConfigError

console = Console(soft_wrap=True, emoji=False)  # paths and branch names stay whole on one line, piped or not


def _show(result) -> None:
    from flotilla.tune.journal import INFRASTRUCTURE
    from flotilla.tune.report import SHORT_SHA, missing_plots_note, trials_table

    if mode().json:
        print_json(json.loads(result.to_json()))
        return
    print_table(trials_table(result), console)
    for t in result.trials:
        if getattr(t, "error", ""):
            console.print(f"  [red]✗[/] trial {t.trial_id} errored: {escape(t.error)}", highlight=False)
            if getattr(t, "cause", "") == INFRASTRUCTURE and t.kept:
                console.print(
                    f"    the hub or a connection failed it, not its own fault: its checkpoints are kept on branch {t.branch}; "
                    f"'flotilla sweep resume {result.sweep_id}' continues it from them",
                    highlight=False,
                )
    if result.winner:
        w = result.winner
        score = w.metrics.get(result.objective, float("nan"))
        console.print(f"[green]✓[/] winner {w.trial_id}: {result.objective} = {score:.4f}  params {escape(str(w.params))}")
        if len(set(result.data_commits.values())) > 1 and w.data_commit:
            console.print(f"  trained on data {escape(w.data_ref)} @ {w.data_commit[:SHORT_SHA]}")
        if result.promotion_commit:
            into = getattr(result, "promoted_into", None) or "main"
            promoted = getattr(result, "promoted_trial", None) or w.trial_id
            if promoted == w.trial_id:
                console.print(f"[green]✓[/] promoted into {into} as {result.promotion_commit[:12]} (branch {w.branch})")
            else:  # a resume re-ran an errored trial that now ranks first; a sweep promotes once
                console.print(
                    f"[yellow]![/] trial {promoted} was promoted into {into} as {result.promotion_commit[:12]}; "
                    f"winner {w.trial_id} ranks first now: merge branch {w.branch} by hand to promote it"
                )
        elif getattr(result, "promotion_error", None):
            console.print(
                f"[red]✗[/] not promoted into {result.promoted_into}: {escape(result.promotion_error)}\n"
                f"  retry with 'flotilla sweep resume {result.sweep_id}' (no trial runs again)"
            )
    if getattr(result, "pareto", None):
        console.print(f"  Pareto front (◆, branches kept): {', '.join(result.pareto)}")
    for name, path in result.wait_for_plots().items():
        console.print(f"  plot ({name}): {path}")
    if note := missing_plots_note(result.plots, [t.status for t in result.trials]):
        console.print(f"  [dim]{note}[/]")
    console.print(f"  Optuna study: optuna-dashboard sqlite:///{result.directory}/optuna.db --host 127.0.0.1")


class _SweepGroup(TyperGroup):
    """``flotilla sweep SPEC`` stays the short way to ``flotilla sweep run SPEC``: a first word that is no
    subcommand but names a spec file (it exists, or ends in .yaml/.yml/.json) runs it; 'run' then says
    what is wrong with a path that is no spec (a folder, a missing file)."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:  # Typer's own (vendored) click types
        if args and args[0] not in self.commands and _names_a_spec(args[0]):
            args = ["run", *args]
        return super().resolve_command(ctx, args)


def _names_a_spec(word: str) -> bool:
    return not word.startswith("-") and (Path(word).suffix in (".yaml", ".yml", ".json") or Path(word).exists())


sweep_app = typer.Typer(
    cls=_SweepGroup,
    no_args_is_help=True,
    help="Hyperparameter sweeps: 'flotilla sweep run SPEC' (or 'flotilla sweep SPEC'), then resume | show | list | dashboard.",
)


@sweep_app.command("run")
@with_output
def run_command(
    spec: str = typer.Argument(..., help="a sweep spec YAML (tuning/face_family.yaml)"),
    address: str = typer.Option(None, "--address", help="Ray cluster address (default: a local Ray)"),
    check: bool = flag("--check", help="validate the spec (keys, space values, objective metrics) and exit"),
) -> None:
    """Run a sweep: a branch per trial, ASHA prunes, the winner merged (`flotilla sweep run tuning/face_family.yaml`)."""
    (_check if check else _run)(spec, address)


@sweep_app.command("resume")
@with_output
def resume_command(
    sweep_id: str = typer.Argument(..., help="the sweep's id (see 'flotilla sweep list')"),
    address: str = typer.Option(None, "--address", help="Ray cluster address (default: a local Ray)"),
    repo: str = typer.Option(
        None, "--repo", help="the hub repository of the sweep's mirror (its data repository; default: searched for)"
    ),
    force: bool = flag("--force", help="take the sweep over from another driver whose lease is fresh (confirm it is dead first)"),
) -> None:
    """Finish an interrupted sweep without re-running finished trials; from any machine (its state is on the hub)."""
    resume(sweep_id, address, repo=repo, force=force)


@sweep_app.command("show")
@with_output
def show_command(sweep_id: str = typer.Argument(..., help="the sweep's id (see 'flotilla sweep list')")) -> None:
    """Show a finished sweep's trials, winner and plots."""
    show(sweep_id)


@sweep_app.command("list")
@with_output
def list_command() -> None:
    """List sweeps in FLOTILLA_HOME."""
    list_()


@sweep_app.command("dashboard")
def dashboard_command(
    sweep_id: str = typer.Argument(..., help="the sweep's id (see 'flotilla sweep list')"),
    port: int = typer.Option(8080, "--port", help="optuna-dashboard port on 127.0.0.1"),
) -> None:
    """Open the sweep's Optuna study in optuna-dashboard (trials carry their flotilla id as 'flotilla_trial')."""
    dashboard(sweep_id, port)


@friendly
def _check(spec: str, address: str | None = None) -> None:
    from flotilla.tune.spec import load_sweep_spec

    s = load_sweep_spec(spec)  # raises one SpecError listing every problem
    family = s.family()  # its base already resolved against the spec file's folder
    obj = s.objective
    what = obj.metrics or obj.weights or {obj.metric: obj.mode}
    console.print(
        f"[green]✓[/] {spec}: {len(s.space)} dimensions ({', '.join(s.space)}), objective {what}, "
        f"{s.searcher.type} + {s.scheduler.type}, {s.budget.trials} trials × {family.epochs} epochs, "
        f"{s.budget.concurrency} at a time, data {family.data.repo}@{family.data.ref}"
    )


@friendly
def _run(spec: str, address: str | None) -> None:
    from flotilla.tune import load_sweep_spec, sweep
    from flotilla.tune.run import new_sweep_id

    sweep_id = new_sweep_id(load_sweep_spec(spec).name)
    _show_then_raise(sweep_id, lambda view: sweep(spec, address=address, sweep_id=sweep_id, progress=view))


@friendly
def resume(sweep_id: str, address: str | None = None, *, repo: str | None = None, force: bool = False) -> None:
    """Finish an interrupted sweep without re-running finished trials (pulled from its hub mirror if need be)."""
    from flotilla.hub import Hub
    from flotilla.tune import resume as run
    from flotilla.tune.mirror import find
    from flotilla.tune.store import SAVED, sweep_dir

    hub = Hub()
    if not (sweep_dir(sweep_id, hub.settings) / SAVED).exists():
        find(hub, sweep_id, repo)  # before its folder gets a log: an unknown id is an error, not a new folder
    _show_then_raise(sweep_id, lambda view: run(sweep_id, hub=hub, address=address, progress=view, repo=repo, force=force))


def _show_then_raise(sweep_id: str, run) -> None:
    """A sweep without a winner is an error (exit 1), but its trial table (with each trial's error) still shows.

    Ray's and Tune's console output goes to ``ray.log`` in the sweep's folder; flotilla shows the trials."""
    from flotilla.tune import NoWinner
    from flotilla.tune.store import sweep_dir

    log = sweep_dir(sweep_id) / "ray.log"
    if not (mode().quiet or mode().json):
        console.print(f"sweep {sweep_id}; Ray's log: {log}", highlight=False, soft_wrap=True)
    view = progress_view()
    try:
        with ray_console(log, err):
            result = run(view)
    except NoWinner as exc:
        view.close()
        if exc.result is not None:
            _show(exc.result)
        raise
    finally:
        view.close()
    _show(result)


@friendly
def show(sweep_id: str) -> None:
    """Show a finished sweep's trials, winner and plots."""
    from flotilla.tune import load_result

    _show(load_result(sweep_id))


@friendly
def list_() -> None:
    """List sweeps in FLOTILLA_HOME."""
    from flotilla.tune import list_sweeps

    if mode().json:
        print_json(list_sweeps())
        return
    for s in list_sweeps():
        console.print(s, highlight=False)


@friendly
def dashboard(sweep_id: str, port: int = 8080) -> None:
    """Open the sweep's Optuna study in optuna-dashboard (bound to 127.0.0.1)."""
    from flotilla.tune.store import require_sweep

    db = require_sweep(sweep_id) / "optuna.db"
    if not db.exists():
        raise ConfigError(f"sweep {sweep_id!r} has no Optuna study at {db}", hint="list sweeps with 'flotilla sweep list'")
    exe = shutil.which("optuna-dashboard") or str(Path(sys.executable).parent / "optuna-dashboard")
    if not Path(exe).exists():
        raise ConfigError(
            "optuna-dashboard is not installed in this environment", hint="pip install optuna-dashboard (make venv installs it)"
        )
    console.print(f"optuna-dashboard on http://127.0.0.1:{port} (Ctrl-C to stop)")
    subprocess.run([exe, f"sqlite:///{db}", "--host", "127.0.0.1", "--port", str(port)])
