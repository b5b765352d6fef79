"""``flotilla label install | up | down | status``: the local Label Studio, thin over flotilla.labelstudio."""

from __future__ import annotations

import typer
from rich.console import Console

from flotilla.cli.common import friendly
from flotilla.labelstudio import LABEL_STUDIO_VERSION, local

label_app = typer.Typer(help="The local Label Studio flotilla runs for labelling rounds.", no_args_is_help=True)
console = Console(emoji=False)
err = Console(stderr=True, emoji=False)


def _say(msg: str) -> None:
    err.print(f"[dim]{msg}[/]", highlight=False)


@label_app.command("install")
@friendly
def label_install() -> None:
    """Make sure Label Studio is installed in its own cached virtualenv (first time: a minute or two)."""
    path = local.install(report=_say)
    console.print(f"Label Studio {LABEL_STUDIO_VERSION}  ({path})", highlight=False)


@label_app.command("up")
@friendly
def label_up(timeout: float = typer.Option(180.0, help="seconds to wait for /health/ to answer UP")) -> None:
    """Start the local Label Studio (idempotent) and wait until it is healthy."""
    st = local.up(timeout=timeout, report=_say)
    console.print(f"[green]✓[/] {st.describe()}", highlight=False)
    console.print(f"log in as the user and password in {local.local_server().credentials_path}", highlight=False)


@label_app.command("down")
@friendly
def label_down() -> None:
    """Stop the local Label Studio (its projects and annotations stay)."""
    console.print(local.down(), highlight=False)


@label_app.command("status")
@friendly
def label_status() -> None:
    """Is the local Label Studio running and healthy? (exit 3 when it is not running)"""
    st = local.status()
    console.print(st.describe(), highlight=False)
    if not st.running:
        raise typer.Exit(3)
