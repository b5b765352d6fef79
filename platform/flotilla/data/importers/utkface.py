"""UTKFace: a folder of faces whose labels are in the file names (``<age>_<gender>_<race>_<datetime>.jpg``)."""

from __future__ import annotations

import os
from collections.abc import Iterator

from flotilla.data.importers.files import read_file, require_path, walk_files
from flotilla.data.importers.result import ImportProblem, ImportResult, detect_format
from flotilla.data.layout import Sample
from flotilla.data.schema import FACE_SCHEMA, LabelColumn

# UTKFace's race field, in its 0..4 order
ETHNICITIES = ("White", "Black", "Asian", "Indian", "Others")
UTKFACE_SCHEMA = FACE_SCHEMA.extended(LabelColumn("ethnicity", "categorical", classes=ETHNICITIES))
"""What a UTKFace import declares: the face labels plus ``ethnicity`` (its file names' race field)."""


def parse_utkface_name(name: str) -> tuple[float, int, int] | str:
    """``(age, flotilla gender, ethnicity)`` from a UTKFace file name, or the reason it cannot be parsed.

    UTKFace encodes gender as **0=male, 1=female**; flotilla uses 0=female, 1=male,
    so 0 and 1 are swapped. The race field is kept as ``ethnicity`` (codes into :data:`ETHNICITIES`).
    Other values (and any age) pass through for the gate.
    """
    fields = name.split(".", 1)[0].split("_")
    if len(fields) != 4:
        return (
            f"name does not match UTKFace's '<age>_<gender>_<race>_<datetime>.jpg': "
            f"{len(fields)} '_'-separated field(s) instead of 4"
        )
    if bad := [
        f"{k} {t!r}" for k, t in zip(("age", "gender", "race"), fields, strict=False) if not (t.isascii() and t.isdigit())
    ]:
        return f"UTKFace field(s) not a non-negative integer: {', '.join(bad)}"
    age, gender, race = int(fields[0]), int(fields[1]), int(fields[2])
    return (float(age), {0: 1, 1: 0}.get(gender, gender), race) if fields[3] else "UTKFace datetime field is empty"


def import_utkface(root: str | os.PathLike[str]) -> ImportResult:
    """Import a UTKFace-style folder, recursively (hidden files and folders skipped).

    ``sample_id`` is ``"utk-" + stem`` (name before its first '.'): stable across
    re-imports and folder moves. ``source`` is the path relative to ``root``. No
    emotion or split (None); the race field becomes the declared ``ethnicity`` column
    (:data:`UTKFACE_SCHEMA`). Names that do not parse (e.g. the real dataset's
    ``39_1_20170116174525125.jpg.chip.jpg``, lacking race) are problems.
    """
    base = require_path(root, directory=True)
    real_base = base.resolve()

    def produce(problems: list[ImportProblem]) -> Iterator[Sample]:
        for path in walk_files(base):
            rel = path.relative_to(base).as_posix()
            parsed = parse_utkface_name(path.name)
            if isinstance(parsed, str):
                problems.append(ImportProblem(rel, parsed))
                continue
            if (data := read_file(path, rel, problems, real_base)) is None:
                continue
            age, gender, ethnicity = parsed
            yield Sample(
                sample_id="utk-" + path.name.split(".", 1)[0],
                image=data,
                format=detect_format(data),
                age=age,
                gender=gender,
                emotion=None,
                split=None,
                source=rel,
                labels={"ethnicity": ethnicity},
            )

    return ImportResult("utkface", base, produce, UTKFACE_SCHEMA)
