"""``flotilla`` command line: a thin shell over the Python API.

Heavy modules are imported inside commands so ``flotilla --help`` stays fast.
Every ``FlotillaError`` becomes a short red message (with its hint) and exit 1;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from flotilla.cli.al import al_app
from flotilla.cli.common import friendly
from flotilla.cli.data import app as data_app
from flotilla.cli.infer import infer_command
from flotilla.cli.jobs import cluster_app, jobs_app
from flotilla.cli.label import label_app
from flotilla.cli.models import models_app
from flotilla.cli.monitor import monitor_command
from flotilla.cli.output import flag, mode, print_json, print_table, progress_view, ray_console, with_output
from flotilla.cli.sweep import sweep_app
from flotilla.hub import Hub, flotilla_branches, local, protection, prune_branches
from flotilla.hub.binary import binary_version
from flotilla.specs import load_family_spec, parse_sets
from flotilla.version import __version__

app = typer.Typer(help="Train model families on Ray from zero-copy branches of a lakeFS data hub.", no_args_is_help=True)
hub_app = typer.Typer(help="The local lakeFS data hub flotilla runs itself.", no_args_is_help=True)
app.add_typer(hub_app, name="hub")
app.add_typer(data_app, name="data")
app.add_typer(cluster_app, name="cluster")
app.add_typer(jobs_app, name="jobs")
app.add_typer(models_app, name="models")
app.add_typer(label_app, name="label")
app.add_typer(al_app, name="al")
app.add_typer(sweep_app, name="sweep")
app.command("infer")(infer_command)
app.command("monitor")(monitor_command)

console = Console(emoji=False)
err = Console(stderr=True, emoji=False)


def _print_version(value: bool) -> None:
    if value:
        console.print(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = flag("--version", is_eager=True, callback=_print_version, help="print flotilla's version and exit"),
) -> None:
    """Train model families on Ray from zero-copy branches of a lakeFS data hub."""


def _say(msg: str) -> None:
    err.print(f"[dim]{msg}[/]")


@hub_app.command("install")
@friendly
def hub_install(
    rebuild: bool = flag("--rebuild", help="build the cached binary again (say, after installing Node.js)"),
) -> None:
    """Make sure the lakeFS server binary is there (env var, PATH, cache, download or Go build with its web UI)."""
    path = local.install(report=_say, rebuild=rebuild)
    console.print(f"{binary_version(path)}  ({path})")


@hub_app.command("credentials")
@friendly
def hub_credentials() -> None:
    """Print the local hub's web UI address and the access key pair to log in with (this shows the secret)."""
    creds = local.credentials()
    console.print(f"web UI:            {creds.endpoint}/", highlight=False)
    console.print(f"Access Key ID:     {creds.access_key_id}", highlight=False)
    console.print(f"Secret Access Key: {creds.secret_access_key}", highlight=False)
    err.print("[dim]paste both into the UI's login form; lakectl and the SDKs take the same pair[/]")


@hub_app.command("up")
@friendly
def hub_up(timeout: float = typer.Option(60.0, help="seconds to wait for the server to become healthy")) -> None:
    """Start the local hub (idempotent) and wait until it is healthy."""
    st = local.up(timeout=timeout, report=_say)
    if st.note:
        err.print(f"[yellow]{st.note}[/]")
    console.print(f"[green]✓[/] {st.describe()}")


@hub_app.command("down")
@friendly
def hub_down() -> None:
    """Stop the local hub gracefully (its data stays)."""
    console.print(local.down())


@hub_app.command("status")
@friendly
def hub_status() -> None:
    """Is the local hub running and healthy? (exit 3 when it is not running)"""
    st = local.status()
    console.print(st.describe(), highlight=False)
    if not st.running:
        raise typer.Exit(3)


@hub_app.command("logs")
@friendly
def hub_logs(
    lines: int = typer.Option(50, "-n", "--lines", help="how many trailing lines"),
    follow: bool = flag("-f", "--follow", help="keep printing new lines"),
) -> None:
    """Show the local hub's server log."""
    hub = local.attach()  # no binary needed to read a log
    console.print(hub.tail(lines), highlight=False, markup=False)
    if follow:
        with open(hub.log_path, errors="replace") as fh:
            fh.seek(0, 2)
            try:
                while True:
                    line = fh.readline()
                    if line:
                        sys.stdout.write(line)
                        sys.stdout.flush()
                    else:
                        time.sleep(0.3)
            except KeyboardInterrupt:
                pass


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


@hub_app.command("branches")
@friendly
def hub_branches(
    repo: str = typer.Option(None, "--repo", help="one repository (default: every repository of the hub)"),
    into: str = typer.Option("main", "--into", help="the protected branch the others are compared with"),
    prune: bool = flag(
        "--prune",
        help="delete the failed or already-merged ingest-* branches and the orphaned ones (a killed writer's) "
        "not kept on failure (without it: only list them)",
    ),
) -> None:
    """List the branches flotilla made (kind, age, state); --prune deletes the ones nobody needs or will finish."""
    hub = Hub()
    table = Table(title=("branches deleted" if prune else "flotilla branches") + f" on {hub.endpoint}")
    for col in ("repo", "branch", "kind", "age", "state", "why", "prune"):
        table.add_column(col, overflow="fold", no_wrap=col == "branch")
    total = 0
    for name in [repo] if repo else hub.repos():
        shown = prune_branches(hub.repo(name), into) if prune else flotilla_branches(hub.repo(name), into)
        for b in shown:
            mark = "deleted" if prune else "yes" if b.prunable else ""
            table.add_row(b.repo, b.name, b.kind, _age(b.age_s), b.state, b.why, mark)
        total += len(shown)
    print_table(table, console)
    if prune:
        console.print(f"[green]✓[/] deleted {total} branch(es)")
    else:
        console.print("[dim]prune 'yes': what 'flotilla hub branches --prune' would delete[/]")


@hub_app.command("protect")
@with_output
@friendly
def hub_protect(
    repo: str = typer.Argument(..., help="the repository"),
    branch: str = typer.Option("main", "--branch", help="the branch (or a glob such as 'release-*') to protect"),
    off: bool = flag("--off", help="remove the rule instead (direct commits are allowed again)"),
) -> None:
    """Protect a branch: lakeFS then refuses direct writes and commits to it; only merges (gated) change it."""
    hub = Hub()
    handle = hub.repo(repo)
    changed = protection.unprotect(handle, branch) if off else protection.protect(handle, branch)
    rules = protection.protection_rules(handle)
    if mode().json:
        print_json({"repo": repo, "branch": branch, "protected": not off, "changed": changed, "rules": rules})
        return
    done, already = ("no longer protected", "was not protected") if off else ("protected", "already protected")
    console.print(f"[green]✓[/] {repo}/{branch}: {done if changed else already}", highlight=False)
    console.print(f"[dim]protected in {repo}: {', '.join(rules) or '(nothing)'}[/]", highlight=False)


def train_record(result: Any, log: Path | None = None) -> dict[str, Any]:
    """A train result as plain JSON: the run, its data commit and, per model, where it lives and its metrics."""
    return {
        "run_id": result.run_id,
        "data": {"repo": result.data.repo, "ref": result.data.ref, "commit": result.data.commit, "dataset": result.data.dataset},
        "wall_s": round(result.wall_s, 3),
        "alias": result.alias,
        "log": str(log) if log else None,
        "models": [
            {
                "name": m.name,
                "tasks": list(m.tasks),
                "branch": m.branch,
                "commit": m.commit,
                "model_uri": m.model_uri,
                "merge_commit": m.merge_commit,
                "metrics": {k: v for k, v in sorted(m.metrics.items()) if not k.endswith("/n")},
            }
            for m in result.models
        ],
    }


@app.command("train")
@with_output
@friendly
def train_cmd(
    spec: str = typer.Argument(..., help="family spec YAML, e.g. jobs/face_family.yaml; or 'resume' and a run id"),
    run: str = typer.Argument(None, help="with 'resume': the id of the killed run to continue", show_default=False),
    sets: list[str] = typer.Option(None, "--set", help="override a spec field: --set epochs=3 --set optim.lr=0.01"),
    address: str = typer.Option(None, "--address", help="Ray cluster address (default: a local Ray)"),
    check: bool = flag("--check", help="validate the spec and exit"),
) -> None:
    """Train a model family (DDP or DeepSpeed) on a pinned hub commit; each model on its own branch.

    'flotilla train resume <run>' continues a run whose driver was killed, from the last committed
    checkpoint on its branches, with the spec and data commit it recorded.
    """
    if spec == "resume":
        if run is None or sets or check:
            raise typer.BadParameter(
                "'flotilla train resume <run>' takes a run id and nothing else: the run's spec and data are the recorded ones"
            )
        return _resume(run, address)
    if run is not None:
        raise typer.BadParameter(f"unexpected argument {run!r}: one spec file (or 'resume <run>')")
    family = load_family_spec(spec, parse_sets(sets))
    out = mode()
    if check:
        if out.json:
            print_json({"spec": spec, "valid": True, "tasks": len(family.tasks), "strategy": family.strategy})
        else:
            console.print(
                f"[green]✓[/] {spec} is valid: {len(family.tasks)} task(s), strategy {family.strategy}, backend {family.backend}"
            )
        return
    from flotilla.training import train
    from flotilla.training.record import run_dir
    from flotilla.training.run import new_run_id

    run_id = new_run_id(family)
    log = run_dir(run_id) / "ray.log"
    if not (out.quiet or out.json):
        what = f"{len(family.tasks)} task(s), {family.epochs} epoch(s)"
        console.print(f"run {run_id}: {what}; Ray's log: {log}", highlight=False, soft_wrap=True)
    view = progress_view()
    try:
        with ray_console(log, err):
            result = train(family, address=address, run_id=run_id, progress=view)
    finally:
        view.close()
    _show_trained(result, log)


def _resume(run_id: str, address: str | None) -> None:
    from flotilla.training import resume
    from flotilla.training.record import run_dir

    out = mode()
    log = run_dir(run_id) / "ray.log"  # appended to: the run's one log, before and after the kill
    if not (out.quiet or out.json):
        console.print(f"resuming run {run_id}; Ray's log: {log}", highlight=False, soft_wrap=True)
    view = progress_view()
    try:
        with ray_console(log, err):
            result = resume(run_id, address=address, progress=view)
    finally:
        view.close()
    _show_trained(result, log)


def _show_trained(result: Any, log: Path) -> None:
    if mode().json:
        print_json(train_record(result, log))
        return
    table = Table(
        title=f"run {result.run_id} — data lakefs://{result.data.repo}/{result.data.commit[:12]} ({result.wall_s:.0f}s)"
    )
    for col in ("model", "metric", "value", "branch"):
        table.add_column(col)
    for m in result.models:
        for k, v in sorted(m.metrics.items()):
            if not k.endswith("/n"):
                table.add_row(m.name, k, f"{v:.4f}", m.branch)
    print_table(table, console)
    for m in result.models:
        console.print(
            f"model {m.name}: {m.model_uri}" + (f" (promoted: {m.merge_commit[:12]})" if m.merge_commit else ""),
            highlight=False,
            soft_wrap=True,
        )


@app.command("demo")
@friendly
def demo(repo: str = typer.Option("faces", help="repository to use")) -> None:
    """Run the reference workflow on the embedded default (local hub)."""
    from flotilla.cli.demo import run_demo

    run_demo(repo=repo, console=console)


@app.command("version")
def version() -> None:
    """Print flotilla's version."""
    console.print(__version__)


def main() -> None:  # console-script entry point
    app()
