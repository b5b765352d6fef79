"""``flotilla models list | show | promote | rollback | ...`` — thin over :mod:`flotilla.registry`.

A model is named the same way in every command: a ``lakefs://`` URI, a run id (``<run>[/<model>]``)
or ``<family>@<alias>``.
"""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flotilla.cli.common import friendly

models_app = typer.Typer(
    help="The model registry on the hub: list, show, aliases, lineage, reproduce, stale.", no_args_is_help=True
)
console = Console()

REPO = typer.Option("faces", "--repo", help="hub repository holding the models")
MODEL = typer.Argument(
    ..., help="a model: lakefs://<repo>/<ref>/models/<run>/<model>/model.pt, <run>[/<model>] or <family>@<alias>"
)


def _fmt_metrics(metrics: dict[str, float], limit: int = 4) -> str:
    return "  ".join(f"{k}={v:.4g}" for k, v in list(sorted(metrics.items()))[:limit])


@models_app.command("list")
@friendly
def list_cmd(
    repo: str = REPO,
    ref: str = typer.Option("main", "--ref", help="branch, tag or commit to list the models of"),
    family: str = typer.Option(None, "--family", help="only this family (the spec's name)"),
    task: str = typer.Option(None, "--task", help="only models with this task"),
    as_json: bool = typer.Option(False, "--json", help="print JSON rows instead of a table"),
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
    console.print(t)
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
