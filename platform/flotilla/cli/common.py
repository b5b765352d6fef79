"""What every CLI module shares: turning FlotillaError into one clear message and exit 1."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from flotilla.errors import FlotillaError, SpecError

err = Console(stderr=True, emoji=False)
P = ParamSpec("P")
R = TypeVar("R")


def friendly(fn: Callable[P, R]) -> Callable[P, R]:
    """Print a FlotillaError's message and hint (no traceback) and exit 1; anything else is a bug."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except FlotillaError as exc:
            # the message may quote user input ("values: [main, cleaned]"): as Rich markup its brackets were
            # swallowed as style tags, or ("[/x]") raised MarkupError, a traceback in place of the error
            err.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False)
            if exc.hint:
                err.print(f"[yellow]hint:[/] {escape(exc.hint)}", highlight=False)
            raise typer.Exit(1) from None

    return wrapper


def parse_data(data: str, option: str = "") -> tuple[str, str, str]:
    """``<repo>/<ref>/<dataset>`` → its three parts (a ref has no '/' in lakeFS); ``option`` names the flag in the error."""
    parts = data.split("/")
    if len(parts) != 3 or not all(parts):
        flag = f"{option} " if option else ""
        raise SpecError(
            f"{flag}{data!r} is not <repo>/<ref>/<dataset>",
            hint=f"e.g. {flag}faces/main/incoming (a ref: branch, tag or commit)",
        )
    return parts[0], parts[1], parts[2]
