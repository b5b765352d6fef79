"""``flotilla models list | show | promote | rollback | ...`` — thin over :mod:`flotilla.registry`.

A model is named the same way in every command: a ``lakefs://`` URI, a run id (``<run>[/<model>]``)
or ``<family>@<alias>``.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flotilla.cli.common import friendly
from flotilla.cli.output import flag, print_table, with_output

models_app = typer.Typer(
    help="The model registry on the hub: list, show, aliases, lineage, reproduce, stale.", no_args_is_help=True
)
console = Console(emoji=False)

REPO = typer.Option("faces", "--repo", help="hub repository holding the models")
MODEL = typer.Argument(  # escaped: '[/<model>]' read as a Rich closing tag made every --help a MarkupError
    ..., help=escape("a model: lakefs://<repo>/<ref>/models/<run>/<model>/model.pt, <run>[/<model>] or <family>@<alias>")
)


def _fmt_metrics(metrics: dict[str, float], limit: int = 4) -> str:
    """The headline metrics: error and accuracy first, never the sample counts (``*/n``)."""
    keys = sorted((k for k in metrics if not k.endswith("/n")), key=lambda k: (not k.endswith(("/mae", "/accuracy")), k))
    return "  ".join(f"{k}={metrics[k]:.4g}" for k in keys[:limit])


@models_app.command("list")
@with_output
@friendly
def list_cmd(
    repo: str = REPO,
    ref: str = typer.Option("main", "--ref", help="branch, tag or commit to list the models of"),
    family: str = typer.Option(None, "--family", help="only this family (the spec's name)"),
    task: str = typer.Option(None, "--task", help="only models with this task"),
    as_json: bool = flag("--json", help="print JSON rows instead of a table"),
) -> None:
    """Every model on a ref: family, tasks, key metrics, data commit, when, parent and aliases."""
    from flotilla.hub.client import Hub
    from flotilla.registry import list_models

    entries = list_models(Hub(), repo, ref, family=family, task=task)
    if as_json:
        typer.echo(json.dumps([e.summary() for e in entries], indent=2))
        return
    t = Table(title=f"models on {repo}@{ref}" + (f" (family {family})" if family else "") + (f" (task {task})" if task else ""))
    for col in ("model", "family", "tasks", "metrics", "data commit", "trained at", "parent", "aliases"):
        t.add_column(col, overflow="fold")
    for e in entries:
        t.add_row(
            e.location.name,
            e.family,
            ", ".join(e.tasks),
            _fmt_metrics(dict(e.card.metrics)),
            e.card.data.commit[:12] + (f" ({e.card.data.ref})" if e.card.data.ref and len(e.card.data.ref) < 40 else ""),
            e.card.created,
            (e.card.parent.path.split("/")[1] + "/" + e.card.parent.path.split("/")[2]) if e.card.parent else "",
            "[bold green]" + ", ".join(e.aliases) + "[/]" if e.aliases else "",
        )
    print_table(t, console)
    if not entries:
        console.print("[dim]no models here yet: train with merge_into: main, or a sweep with promote.into: main[/]")


@models_app.command("show")
@friendly
def show_cmd(model: str = MODEL, repo: str = REPO) -> None:
    """One model's card: lineage, metrics, config, code and environment."""
    from flotilla.hub.client import Hub
    from flotilla.registry import show

    entry = show(Hub(), model, repo)
    console.print(f"[bold]{entry.location.name}[/]  {entry.location.uri}", highlight=False)
    if entry.aliases:
        console.print(f"aliases: [bold green]{', '.join(entry.aliases)}[/]")
    typer.echo(json.dumps(entry.card.to_dict(), indent=2, sort_keys=True))


@models_app.command("promote")
@friendly
def promote_cmd(
    model: str = MODEL,
    alias: str = typer.Option(..., "--alias", help="the alias to point at this model's run, e.g. production"),
    repo: str = REPO,
    reason: str = typer.Option("", "--reason", help="why (kept in the alias history)"),
) -> None:
    """Point <family>@<alias> at a model (atomic; a concurrent move of the same alias is refused)."""
    from flotilla.hub.client import Hub
    from flotilla.registry import promote

    a = promote(Hub(), model, alias, repo=repo, reason=reason)
    prev = a.previous
    console.print(
        f"[green]✓[/] {a.address} → run {a.current.run_id} (data commit {a.current.data_commit[:12]})"
        + (f", was run {prev.run_id}" if prev else ""),
        highlight=False,
    )


@models_app.command("rollback")
@friendly
def rollback_cmd(
    address: str = typer.Argument(..., help="<family>@<alias>, e.g. face-family@production"),
    repo: str = REPO,
    reason: str = typer.Option("", "--reason", help="why (kept in the alias history)"),
) -> None:
    """Move <family>@<alias> back to the model it named before, and say which data that model was trained on."""
    from flotilla.errors import SpecError
    from flotilla.hub.client import Hub
    from flotilla.registry import rollback

    family, _, alias = address.partition("@")
    if not family or not alias or "/" in alias:
        raise SpecError(
            f"rollback takes <family>@<alias>, not {address!r}", hint="e.g. flotilla models rollback face-family@production"
        )
    left, now = rollback(Hub(), family, alias, repo=repo, reason=reason)
    cur = now.current
    console.print(
        f"[green]✓[/] {now.address} rolled back: run {escape(left.run_id)} → run {escape(cur.run_id)}\n"
        f"  {cur.run_id} was trained on data commit {cur.data_commit} "
        f"({'the same data' if cur.data_commit == left.data_commit else 'other data than ' + left.data_commit[:12]})",
        highlight=False,
    )


@models_app.command("stale")
@with_output
@friendly
def stale_cmd(
    repo: str = REPO,
    ref: str = typer.Option(None, "--ref", help="compare each model's data with this ref's (default: main)"),
    since: str = typer.Option(None, "--since", help="a commit (e.g. a label fix's merge): the models trained without it"),
    retrain: bool = flag("--retrain", help="submit a job per stale model: retrain it, warm-started from it"),
    check: bool = flag("--check", "--dry-run", help="with --retrain: validate and pin each job and show it, submit nothing"),
    address: str = typer.Option(None, "--address", help="with --retrain: the Ray cluster's Jobs API URL"),
    as_json: bool = flag("--json", help="print the report as JSON instead of a table"),
) -> None:
    """Which models does a data change make stale: trained on other data than a ref's, or without a commit."""
    from flotilla.errors import SpecError
    from flotilla.hub.client import Hub
    from flotilla.jobs.retraining import submit_retrains
    from flotilla.registry import stale

    if check and not retrain:
        raise SpecError("--check shows the retraining jobs --retrain would submit", hint="add --retrain")
    hub = Hub()
    report = stale(hub, repo, ref=ref, since=since)
    jobs = submit_retrains(report, hub, address, dry_run=check) if retrain else []
    if as_json:
        typer.echo(json.dumps({**report.summary(), **({"retrain": [j.summary() for j in jobs]} if retrain else {})}, indent=2))
        return
    what = f"without commit {report.commit[:12]}" if report.mode == "since" else f"against {report.target} ({report.commit[:12]})"
    t = Table(title=f"stale models on {repo}@{report.models_ref}, {what}: {len(report.models)} of {report.checked}")
    for col in ("model", "family", "data commit", "what changed", "descendants"):
        t.add_column(col, overflow="fold")
    for m in report.models:
        data = m.entry.card.data
        t.add_row(
            escape(m.name),
            escape(m.entry.family),
            f"{data.commit[:12]} ({escape(data.dataset)})",
            escape(m.describe()) if m.change else f"[dim]stale by inheritance: {escape(m.describe())}[/]",
            escape(", ".join(m.descendants)),
        )
    print_table(t, console)
    if not report.models:
        console.print("[green]no model is stale[/]")
    for name, why in report.unreadable:
        console.print(f"[yellow]could not compare {escape(name)}:[/] {escape(why)}", highlight=False)
    for j in jobs:
        if j.submission_id is None:
            console.print(f"[dim]{escape(j.model)}: {escape(j.note)}[/]", highlight=False)
            continue
        verb = "would submit" if check else "submitted"
        console.print(
            f"{verb} {j.submission_id}: retrain {j.model} on data {j.data[:12]}, warm-started from it",
            highlight=False,
            markup=False,
        )


@models_app.command("lineage")
@friendly
def lineage_cmd(
    model: str = MODEL,
    repo: str = REPO,
    out: Path = typer.Option(
        Path("artifacts/lineage"), "--out", help="where lineage-<run>-<model>.html and .png go (made if missing)"
    ),
    limit: int = typer.Option(10, "--limit", min=1, help="at most this many changes listed per data commit"),
    children_on: list[str] = typer.Option(
        ["main"], "--children-on", help="ref whose models are searched for descendants (repeat for more)"
    ),
) -> None:
    """Where a model came from and what came from it: a tree here, an HTML page and a PNG on disk.

    Data commit(s) and the ingests and label fixes that made them, the training run, the parent
    models (transfer learning) with their own data, and every model started from this one.
    """
    from flotilla.hub.client import Hub
    from flotilla.registry import lineage_graph, lineage_tree, write_lineage

    graph = lineage_graph(Hub(), model, repo=repo, limit=limit, refs=children_on)
    console.print(lineage_tree(graph), highlight=False)
    page, png = write_lineage(graph, out)
    console.print(f"[green]✓[/] wrote {escape(str(page))}\n  and {escape(str(png))}", highlight=False)


@models_app.command("reproduce")
@friendly
def reproduce_cmd(
    model: str = MODEL,
    repo: str = REPO,
    allow_code_drift: bool = flag("--allow-code-drift", help="re-run it even though other code than the card's is checked out"),
    address: str = typer.Option(None, "--address", help="Ray cluster address (default: a local Ray)"),
) -> None:
    """Train a model again from its card (its config, exact data commit, seed and parent) and compare the metrics.

    Nothing is merged: the reproduction stays on its own exp-repro-... branch.
    Exit 3 when a metric is outside its tolerance, 1 when the model is refused (card edited, data missing, other code).
    """
    from flotilla.hub.client import Hub
    from flotilla.training import reproduce

    report = reproduce(Hub(), model, repo=repo, allow_code_drift=allow_code_drift, ray_address=address)
    card = report.card
    if report.code_drift:
        console.print("[yellow]code drift allowed:[/] " + escape("; ".join(report.code_drift)), highlight=False)
    t = Table(
        title=f"{report.original.name} reproduced as {report.run_id} — data {card.data.commit[:12]}, "
        f"compared at epoch {report.epoch} ({report.wall_s:.0f}s)"
    )
    for col in ("metric", "card", "reproduced", "difference", "tolerance", ""):
        t.add_column(col, justify="left" if col == "metric" else "right")
    for c in report.checks:
        t.add_row(
            c.metric,
            f"{c.card:.6g}",
            "-" if c.reproduced is None else f"{c.reproduced:.6g}",
            "-" if c.difference is None else f"{c.difference:+.3g}",
            f"±{c.tolerance:g}",
            "[green]✓[/]" if c.ok else "[red]✗[/]",
        )
    console.print(t)
    console.print(f"reproduction: {report.reproduced.uri} (branch {report.branch}, not merged)", highlight=False)
    if not report.ok:
        console.print(
            f"[red]✗[/] {len(report.failed)} metric(s) outside their tolerance: " + ", ".join(c.metric for c in report.failed),
            highlight=False,
        )
        raise typer.Exit(3)
    console.print(f"[green]✓[/] every metric of {report.original.name} within its tolerance", highlight=False)
