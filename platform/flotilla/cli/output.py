"""How the CLI speaks: ``-q``/``-v``/``--json`` on every command that prints a result, Ray's console
output kept in the run's log, and tables that survive a pipe.

One mechanism, not per-command copies: :func:`with_output` adds the three options to a command and
:func:`mode` tells the command (and the helpers here) which were given. Ray and Tune print to the
process's ``sys.stdout``/``sys.stderr`` and to their loggers' stream handlers; :func:`ray_console`
points all of them at the run's log file for the length of a run (``-v``: at the log and the
terminal), while flotilla's own console keeps the real streams.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import io
import json
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from flotilla.progress import NullView, ProgressView, make_view

P = ParamSpec("P")
R = TypeVar("R")
TAIL_LINES = 25  # of Ray's log, shown when a run fails


@dataclass(frozen=True)
class OutputMode:
    """``quiet``: only the result and errors; ``verbose``: Ray's log streamed too; ``json``: the result
    as JSON on stdout (progress, if any, on stderr)."""

    quiet: bool = False
    verbose: bool = False
    json: bool = False


_MODE: contextvars.ContextVar[OutputMode | None] = contextvars.ContextVar("flotilla_output", default=None)


def mode() -> OutputMode:
    """The output options of the command running now (defaults outside one)."""
    return _MODE.get() or OutputMode()


def flag(*names: str, help: str, default: bool = False, **options: Any) -> Any:
    """A bool flag (``-f``, ``--follow``, or ``--wait/--no-wait``): Typer's help showed ``<bool>`` after
    each, as if it took a value (``--follow true`` then failed); a flag takes none, so none is shown."""
    return typer.Option(default, *names, help=help, metavar="", **options)


_OPTIONS = (
    ("quiet", "-q --quiet", "print only the result and errors"),
    ("verbose", "-v --verbose", "stream Ray's and Tune's own output (kept in the run's log otherwise)"),
    ("as_json", "--json", "print the result as JSON on stdout (for jq, python -m json.tool); progress on stderr"),
)


def with_output(fn: Callable[P, R]) -> Callable[..., R]:
    """Add ``-q``, ``-v`` and ``--json`` to a Typer command; inside it, :func:`mode` says which were given.

    A command that declares one of them itself (``as_json``, say, to pick its JSON) keeps its own
    parameter and is passed its value; :func:`mode` still sees it.
    """
    sig = inspect.signature(fn)
    own = {name for name, _, _ in _OPTIONS if name in sig.parameters}
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=flag(*names.split(), help=help), annotation=bool)
        for name, names, help in _OPTIONS
        if name not in own
    ]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> R:
        given = {name: bool(kwargs[name] if name in own else kwargs.pop(name, False)) for name, _, _ in _OPTIONS}
        if given["quiet"] and given["verbose"]:
            raise typer.BadParameter("-q and -v contradict each other: give one", param_hint="'-q'")
        token = _MODE.set(OutputMode(quiet=given["quiet"], verbose=given["verbose"], json=given["as_json"]))
        try:
            return fn(*args, **kwargs)
        finally:
            _MODE.reset(token)

    wrapper.__signature__ = sig.replace(parameters=[*sig.parameters.values(), *extra])  # type: ignore[attr-defined]
    return wrapper


def print_json(data: Any) -> None:
    """The result, machine-readable, alone on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def progress_view(title: str = "") -> ProgressView:
    """flotilla's progress for this command: a live table on a terminal, plain lines when piped or with
    ``-v`` (Ray's lines interleave), none with ``-q``; on stderr under ``--json``."""
    m = mode()
    if m.quiet:
        return NullView()
    stream = sys.stderr if m.json else sys.stdout
    live = stream.isatty() and not m.verbose
    return make_view(stream, live=live, title=title)


def table_rows(table: Table) -> tuple[list[str], list[list[str]]]:
    """A rich table's header and rows as plain text (markup stripped)."""

    def plain(cell: Any) -> str:
        if isinstance(cell, Text):
            return cell.plain
        return Text.from_markup(str(cell)).plain if isinstance(cell, str) else str(cell)

    header = [plain(c.header) for c in table.columns]
    columns = [[plain(cell) for cell in c.cells] for c in table.columns]
    return header, [list(row) for row in zip(*columns, strict=True)] if columns else []


def print_table(table: Table, console: Console | None = None) -> None:
    """Print ``table`` so that every cell can be copied whole.

    On a terminal: rich's table with cells folded onto more lines rather than cut with "…" (ids and
    branch names must survive). Piped (or to a file): tab-separated rows with a header, no ANSI, no
    box — rich sized a piped table to 80 columns and squeezed columns down to nothing.
    """
    console = console or Console(emoji=False)
    if console.is_terminal:
        for column in table.columns:
            column.overflow = "fold"
            column.no_wrap = False
        console.print(table)
        return
    header, rows = table_rows(table)
    out = console.file
    if table.title:
        out.write(Text.from_markup(str(table.title)).plain + "\n")
    for row in [header, *rows]:
        out.write("\t".join(cell.replace("\t", " ").replace("\n", " ") for cell in row) + "\n")
    if table.caption:
        out.write(Text.from_markup(str(table.caption)).plain + "\n")
    out.flush()


class _Tee(io.TextIOBase):
    """Writes to the log and, with ``-v``, to the terminal as well."""

    def __init__(self, *streams: IO[str]) -> None:
        self.streams = streams

    def write(self, s: str) -> int:
        for stream in self.streams:
            stream.write(s)
        return len(s)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()

    def fileno(self) -> int:
        return self.streams[0].fileno()

    def isatty(self) -> bool:
        return False


def _retarget(old: set[int], new: IO[str]) -> None:
    """Point every logging stream handler writing to one of ``old`` (by id) at ``new``."""
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            # Ray's own handler (a StreamHandler subclass) keeps the stderr it was made with
            if not isinstance(handler, logging.StreamHandler) or isinstance(handler, logging.FileHandler):
                continue
            if id(handler.stream) in old:
                with contextlib.suppress(AttributeError):  # a handler that looks sys.stderr up at each record
                    handler.setStream(new)


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def ray_console(log: Path, err: Console) -> Iterator[None]:
    """Ray's and Tune's console output goes to ``log`` while the block runs (``-v``: to the terminal too).

    On an error the log's last lines and its path are shown on ``err``. A Ray this block started is shut
    down inside it, so the worker lines Ray flushes at shutdown land in the log too, not on the terminal.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    verbose = mode().verbose
    ray_was_up = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    real_out, real_err = sys.stdout, sys.stderr
    failed = False
    with open(log, "a", buffering=1, errors="replace") as fh:
        sink: IO[str] = _Tee(fh, real_err) if verbose else fh  # type: ignore[assignment]  # a TextIOBase is an IO[str]
        _retarget({id(real_out), id(real_err)}, sink)
        sys.stdout = sys.stderr = sink
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            if not ray_was_up and "ray" in sys.modules and sys.modules["ray"].is_initialized():
                sys.modules["ray"].shutdown()
            sys.stdout, sys.stderr = real_out, real_err
            _retarget({id(sink)}, real_err)
            if failed and not verbose:
                if text := tail(log).rstrip():
                    err.print(f"[dim]last lines of Ray's log ({log}):[/]", highlight=False)
                    err.print(text, markup=False, highlight=False)
                else:
                    err.print(f"[dim]Ray's log: {log}[/]", highlight=False)
