"""A folder of images described by a labels CSV: the format for any labelled set that is not UTKFace or FER2013."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from flotilla.data.importers.files import csv_header, csv_rows, escapes_root, read_file, require_path
from flotilla.data.importers.labels import SPLIT_ALIASES, parse_label, parse_split
from flotilla.data.importers.result import ImportFormatError, ImportProblem, ImportResult, detect_format, did_you_mean
from flotilla.data.layout import Sample
from flotilla.errors import InvalidNameError
from flotilla.names import check_object_path

FOLDER_COLUMNS = ("file", "path", "sample_id", "age", "gender", "emotion", "split")


def _folder_header(path: Path) -> tuple[dict[str, int], int]:
    header = csv_header(path)
    names = [h.lower() for h in header]
    problems = [
        (f"unknown column {raw!r}" if name else f"column {i + 1} has an empty name") + did_you_mean(name, FOLDER_COLUMNS)
        for i, (raw, name) in enumerate(zip(header, names, strict=True))
        if name not in FOLDER_COLUMNS
    ]
    problems += [f"column {d!r} appears more than once" for d in FOLDER_COLUMNS if names.count(d) > 1]
    if "file" in names and "path" in names:
        problems.append("both 'file' and 'path' columns: use only one")
    if "file" not in names and "path" not in names:
        problems.append("no 'file' (or 'path') column naming each image relative to the folder")
    if problems:
        raise ImportFormatError(
            f"labels CSV {path.name} has an invalid header {','.join(header)!r}",
            problems,
            hint=f"allowed columns (case-insensitive): {', '.join(FOLDER_COLUMNS)}; "
            "'file' (or 'path') is required, every other column is optional",
        )
    return {("file" if n == "path" else n): i for i, n in enumerate(names)}, len(header)


def import_folder(root: str | os.PathLike[str], labels_csv: str | os.PathLike[str] | None = None) -> ImportResult:
    """Import a folder of images described by a labels CSV (default ``<root>/labels.csv``).

    Columns (case-insensitive): ``file`` or ``path`` (required; relative POSIX
    path inside ``root``) and any of ``sample_id``, ``age``, ``gender``,
    ``emotion``, ``split`` (cells parsed by :func:`~flotilla.data.importers.labels.parse_label`; empty = None).
    ``split`` maps train/val/test and aliases (training, validation, dev, FER's
    Usage names...); other values pass through for the gate. ``sample_id``
    defaults to the file path as written (leading ``./`` dropped). Only listed
    files are imported. Rows that do not parse, whose file is missing, or whose
    path is absolute or escapes ``root`` (lexically, with
    :func:`flotilla.names.check_object_path`, or through a symlink) are
    problems. A default ``labels.csv`` that links outside ``root`` is refused. ``source`` is
    ``"<csv>:line N (<file>)"``.
    """
    base = require_path(root, directory=True)
    real_base = base.resolve()
    csv_file = require_path(labels_csv if labels_csv is not None else base / "labels.csv", directory=False)
    if labels_csv is None and escapes_root(csv_file, real_base):  # its header would be quoted in errors
        raise ImportFormatError(
            f"{csv_file} is a symbolic link that leads outside the folder; refused",
            hint="pass the labels CSV you mean explicitly (--labels)",
        )
    col, width = _folder_header(csv_file)

    def produce(problems: list[ImportProblem]) -> Iterator[Sample]:
        rows = csv_rows(csv_file, problems, width=width)
        next(rows, None)  # the header
        for line, cells in rows:
            src = f"{csv_file.name}:line {line}"
            if cells is None:
                continue
            get = {name: cells[i] for name, i in col.items()}.get
            rel = get("file", "").strip()
            rel = rel[2:] if rel.startswith("./") else rel
            src = f"{src} ({rel})" if rel else src
            reasons = []
            try:
                check_object_path(rel)
            except InvalidNameError as e:
                reasons.append(f"file path rejected: {e.message.split(': ', 1)[-1]}")
            age = parse_label("age", get("age", ""))
            gender = parse_label("gender", get("gender", ""))
            emotion = parse_label("emotion", get("emotion", ""))
            reasons += [v for v in (age, gender, emotion) if isinstance(v, str)]
            if not reasons and not (base / rel).is_file():
                reasons.append("file not found" if not (base / rel).exists() else "not a regular file")
            if reasons or isinstance(age, str) or isinstance(gender, str) or isinstance(emotion, str):
                problems.append(ImportProblem(src, "; ".join(reasons)))
                continue
            if (data := read_file(base / rel, src, problems, real_base)) is None:
                continue
            yield Sample(
                sample_id=get("sample_id", "").strip() or rel,
                image=data,
                format=detect_format(data),
                age=age,
                gender=gender,
                emotion=emotion,
                split=parse_split(get("split", ""), SPLIT_ALIASES),
                source=src,
            )

    return ImportResult("folder", base, produce)
