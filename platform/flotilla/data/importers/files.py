"""Reading an import's files safely: the path checks, the folder walk and the strict CSV reader the importers share.

An import uploads what it reads, so every file read goes through :func:`read_file`, which refuses a symlink leading
out of the import folder; and a CSV whose structure breaks is fatal (:func:`csv_rows`), because skipping there
would ingest a silently partial dataset that still passes the gate.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

from flotilla.data.importers.result import ImportFormatError, ImportProblem


def escapes_root(path: Path, root: Path) -> bool:
    """Whether ``path`` leads outside ``root`` (resolved) through a symlink: an import uploads what it reads, so a
    link in a downloaded folder must not pull in ``~/.flotilla/hub/credentials.json``. Links inside are followed."""
    try:
        return not path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # a symlink loop: nothing readable there anyway
        return True


def read_file(path: Path, source: str, problems: list[ImportProblem], root: Path) -> bytes | None:
    """The bytes of ``path``, or None after adding a problem (unreadable, or a link leading outside ``root``)."""
    if escapes_root(path, root):
        problems.append(
            ImportProblem(
                source,
                "is a symbolic link (or inside one) that leads outside the import folder; "
                "refused, so files elsewhere on this machine are never uploaded",
            )
        )
        return None
    try:
        return path.read_bytes()
    except OSError as e:
        problems.append(ImportProblem(source, f"cannot read file: {e.strerror or e}"))
        return None


def require_path(path: str | os.PathLike[str], *, directory: bool) -> Path:
    """``path`` as a :class:`Path` if it is an existing folder (``directory``) or file; else :class:`ImportFormatError`."""
    p = Path(path)
    what = "a folder of images" if directory else "a CSV file"
    if not p.exists() or (p.is_dir(), p.is_file()) != (directory, not directory):
        raise ImportFormatError(
            f"{p} {'is not ' + what if p.exists() else 'does not exist'}", hint=f"this format expects the path of {what}"
        )
    return p


def walk_files(root: Path) -> Iterator[Path]:
    """Non-hidden files under ``root``, sorted; symlinked folders are not followed (:func:`read_file` checks linked
    files)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath, name)


def csv_rows(path: Path, problems: list[ImportProblem], width: int | None = None) -> Iterator[tuple[int, list[str] | None]]:
    """``(line number, cells)`` of a UTF-8 CSV (BOM tolerated), skipping blank lines.

    A row that is not valid UTF-8 gives ``cells=None`` and a problem (so row
    indices stay stable). A CSV whose *structure* breaks is fatal
    (:class:`ImportFormatError` naming the file and line), never a skipped row:
    a parse error (e.g. a field over the csv module's size limit), a row that
    spans several lines (no field of these formats holds a newline, so that is
    a stray ``"`` swallowing the lines after it, up to the end of the file), or,
    with ``width``, a row with the wrong number of fields (a stray delimiter or
    quote shifts columns). Skipping there would import a silently partial dataset
    that still passes the gate.
    """
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        reader = csv.reader(f)
        start = 1
        try:
            for row in reader:
                if reader.line_num > start:
                    raise _malformed(
                        path,
                        start,
                        f"a quoted field opened on line {start} runs on to line {reader.line_num} (an unbalanced '\"'?)",
                    )
                if width is not None and any(cell.strip() for cell in row) and len(row) != width:
                    raise _malformed(path, start, f"the row has {len(row)} field(s), expected {width}")
                cells: list[str] | None = row
                try:
                    "".join(row).encode("utf-8")
                except UnicodeEncodeError:
                    problems.append(ImportProblem(f"{path.name}:line {start}", "row is not valid UTF-8; skipped"))
                    cells = None
                if cells is None or any(cell.strip() for cell in cells):
                    yield start, cells
                start = reader.line_num + 1
        except csv.Error as e:
            raise _malformed(path, start, f"it cannot be parsed from here on ({e})") from None


def _malformed(path: Path, line: int, why: str) -> ImportFormatError:
    return ImportFormatError(
        f"CSV {path} is malformed at line {line}: {why}; nothing was imported",
        hint=f"fix line {line} of {path.name} (balance or remove the stray '\"', quote fields that contain commas, "
        "one row per line), then run the import again",
    )


def csv_header(path: Path) -> list[str]:
    """The stripped cells of the CSV's first non-blank line; :class:`ImportFormatError` if unreadable or empty."""
    problems: list[ImportProblem] = []
    try:
        first = next(csv_rows(path, problems), None)
    except OSError as e:
        raise ImportFormatError(f"cannot read CSV {path}: {e.strerror or e}") from e
    if problems:
        raise ImportFormatError(f"cannot read the header of CSV {path}: {problems[0]}")
    if first is None or first[1] is None:
        raise ImportFormatError(f"CSV {path} is empty", hint="the first line must be the header")
    return [c.strip() for c in first[1]]
