"""Importers of real-world face dataset formats into :class:`~flotilla.data.layout.Sample` s.

``import_source(kind, path, labels_csv=None)`` dispatches to one of ``KINDS``:
``"utkface"`` (:func:`import_utkface`), ``"fer2013"`` (:func:`import_fer2013`),
``"folder"`` (:func:`import_folder`, a folder plus a labels CSV). Contract:

* Image bytes are passed on **as found** (FER pixel rows become 48x48 grey PNGs).
  ``format`` comes from the magic bytes (:func:`detect_format`); unknown bytes
  give ``"unknown"`` and the sample is *kept*, for the validation gate to report.
* Labels use flotilla's vocabularies (gender 0=female 1=male, emotion = index
  into ``layout.EMOTIONS``). A missing label is ``None``, never 0.
* No range checks, no decoding: a value that parses (age 200, gender 5, emotion
  9) is passed through unchanged for the gate to report. Entries that cannot be
  parsed at all (broken file name, a CSV row with 17 pixels, a missing file, a
  path escaping the folder, lexically or through a symlink, a duplicate sample id) become :class:`ImportProblem`
  s on :attr:`ImportResult.problems` and never crash the import.
* Errors that make the whole input unusable (missing path, wrong CSV header,
  unknown column) raise :class:`ImportFormatError` when the importer is called;
  a CSV whose structure breaks further down (a parse error, a stray quote running
  over several lines, a row with the wrong number of fields) raises it while the
  samples are read, naming the file and line, so no partial dataset is ingested.
"""

from __future__ import annotations

import csv
import difflib
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
from PIL import Image

from flotilla.data.layout import EMOTIONS, Sample
from flotilla.errors import InvalidNameError, SpecError
from flotilla.names import check_object_path

Kind = Literal["utkface", "fer2013", "folder"]
KINDS: tuple[str, ...] = ("utkface", "fer2013", "folder")
FER_HEADER = ("emotion", "pixels", "Usage")
FER_SIDE = 48
FER_USAGE = {"training": "train", "publictest": "val", "privatetest": "test"}
FOLDER_COLUMNS = ("file", "path", "sample_id", "age", "gender", "emotion", "split")
GENDER_NAMES = {"female": 0, "f": 0, "male": 1, "m": 1}
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test", "testing": "test", **FER_USAGE}


class ImportFormatError(SpecError):
    """The input as a whole does not have the expected structure (path, header, columns)."""


class ImportProblem(NamedTuple):
    """One entry that could not be imported: where it is and why (a plain ``(source, reason)`` tuple)."""

    source: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


class ImportResult:
    """A lazy stream of samples plus the problems met while producing them.

    Iterate it (``for s in result`` or ``result.samples``); ``problems`` fills
    up during the pass and is complete once ``complete`` is True. Each new pass
    re-reads the input and resets ``problems``; passes are deterministic.
    """

    def __init__(self, kind: str, path: Path, produce: Callable[[list[ImportProblem]], Iterator[Sample]]) -> None:
        self.kind, self.path, self._produce = kind, path, produce
        self.problems: list[ImportProblem] = []
        self.complete = False

    def __iter__(self) -> Iterator[Sample]:
        self.problems = []
        self.complete = False
        seen: dict[str, str] = {}
        for s in self._produce(self.problems):
            if s.sample_id in seen:
                self.problems.append(ImportProblem(
                    s.source, f"duplicate sample_id {s.sample_id!r} (first seen at {seen[s.sample_id]}); skipped"))
                continue
            seen[s.sample_id] = s.source
            yield s
        self.complete = True

    @property
    def samples(self) -> Iterator[Sample]:
        """A fresh pass over the samples (same as ``iter(result)``)."""
        return iter(self)

    def collect(self) -> tuple[list[Sample], list[ImportProblem]]:
        """Read everything: ``(samples, problems)``. Fine for small sources; stream big ones."""
        return list(self), list(self.problems)  # left to right: the pass runs first


def detect_format(data: bytes) -> str:
    """``"jpeg"`` (``FF D8``), ``"png"`` (``89 50 4E 47``) or ``"unknown"``, from the magic bytes only."""
    return "jpeg" if data[:2] == b"\xff\xd8" else "png" if data[:4] == b"\x89PNG" else "unknown"


def _did_you_mean(word: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word.lower(), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _escapes(path: Path, root: Path) -> bool:
    """Whether ``path`` leads outside ``root`` (resolved) through a symlink: an import uploads what it reads, so a
    link in a downloaded folder must not pull in ``~/.flotilla/hub/credentials.json``. Links inside are followed."""
    try:
        return not path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # a symlink loop: nothing readable there anyway
        return True


def _read(path: Path, source: str, problems: list[ImportProblem], root: Path) -> bytes | None:
    if _escapes(path, root):
        problems.append(ImportProblem(source, "is a symbolic link (or inside one) that leads outside the import folder; "
                                              "refused, so files elsewhere on this machine are never uploaded"))
        return None
    try:
        return path.read_bytes()
    except OSError as e:
        problems.append(ImportProblem(source, f"cannot read file: {e.strerror or e}"))
        return None


def _require(path: str | os.PathLike[str], *, directory: bool) -> Path:
    p = Path(path)
    what = "a folder of images" if directory else "a CSV file"
    if not p.exists() or (p.is_dir(), p.is_file()) != (directory, not directory):
        raise ImportFormatError(f"{p} {'is not ' + what if p.exists() else 'does not exist'}",
                                hint=f"this format expects the path of {what}")
    return p


def _walk(root: Path) -> Iterator[Path]:
    """Non-hidden files under ``root``, sorted; symlinked folders are not followed (:func:`_read` checks linked files)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath, name)


def _csv_rows(path: Path, problems: list[ImportProblem], width: int | None = None) -> Iterator[tuple[int, list[str] | None]]:
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
                    raise _broken(path, start, f"a quoted field opened on line {start} runs on to line {reader.line_num}"
                                               " (an unbalanced '\"'?)")
                if width is not None and any(cell.strip() for cell in row) and len(row) != width:
                    raise _broken(path, start, f"the row has {len(row)} field(s), expected {width}")
                try:
                    "".join(row).encode("utf-8")
                except UnicodeEncodeError:
                    problems.append(ImportProblem(f"{path.name}:line {start}", "row is not valid UTF-8; skipped"))
                    row = None
                if row is None or any(cell.strip() for cell in row):
                    yield start, row
                start = reader.line_num + 1
        except csv.Error as e:
            raise _broken(path, start, f"it cannot be parsed from here on ({e})") from None


def _broken(path: Path, line: int, why: str) -> ImportFormatError:
    return ImportFormatError(
        f"CSV {path} is malformed at line {line}: {why}; nothing was imported",
        hint=f"fix line {line} of {path.name} (balance or remove the stray '\"', quote fields that contain commas, "
             "one row per line), then run the import again")


def _header(path: Path) -> list[str]:
    problems: list[ImportProblem] = []
    try:
        first = next(_csv_rows(path, problems), None)
    except OSError as e:
        raise ImportFormatError(f"cannot read CSV {path}: {e.strerror or e}") from e
    if problems:
        raise ImportFormatError(f"cannot read the header of CSV {path}: {problems[0]}")
    if first is None or first[1] is None:
        raise ImportFormatError(f"CSV {path} is empty", hint="the first line must be the header")
    return [c.strip() for c in first[1]]


# ---------------------------------------------------------------------------------------------- UTKFace
def parse_utkface_name(name: str) -> tuple[float, int] | str:
    """``(age, flotilla gender)`` from a UTKFace file name, or the reason it cannot be parsed.

    UTKFace encodes gender as **0=male, 1=female**; flotilla uses 0=female, 1=male,
    so 0 and 1 are swapped. Other values (and any age) pass through for the gate.
    """
    fields = name.split(".", 1)[0].split("_")
    if len(fields) != 4:
        return (f"name does not match UTKFace's '<age>_<gender>_<race>_<datetime>.jpg': "
                f"{len(fields)} '_'-separated field(s) instead of 4")
    if bad := [f"{k} {t!r}" for k, t in zip(("age", "gender", "race"), fields) if not (t.isascii() and t.isdigit())]:
        return f"UTKFace field(s) not a non-negative integer: {', '.join(bad)}"
    age, gender = int(fields[0]), int(fields[1])
    return (float(age), {0: 1, 1: 0}.get(gender, gender)) if fields[3] else "UTKFace datetime field is empty"


def import_utkface(root: str | os.PathLike[str]) -> ImportResult:
    """Import a UTKFace-style folder, recursively (hidden files and folders skipped).

    ``sample_id`` is ``"utk-" + stem`` (name before its first '.'): stable across
    re-imports and folder moves. ``source`` is the path relative to ``root``. No
    emotion or split (None). Names that do not parse (e.g. the real dataset's
    ``39_1_20170116174525125.jpg.chip.jpg``, lacking race) are problems.
    """
    base = _require(root, directory=True)
    real_base = base.resolve()

    def produce(problems: list[ImportProblem]) -> Iterator[Sample]:
        for path in _walk(base):
            rel = path.relative_to(base).as_posix()
            parsed = parse_utkface_name(path.name)
            if isinstance(parsed, str):
                problems.append(ImportProblem(rel, parsed))
                continue
            if (data := _read(path, rel, problems, real_base)) is None:
                continue
            age, gender = parsed
            yield Sample(sample_id="utk-" + path.name.split(".", 1)[0], image=data, format=detect_format(data),
                         age=age, gender=gender, emotion=None, split=None, source=rel)

    return ImportResult("utkface", base, produce)


# ---------------------------------------------------------------------------------------------- FER2013
def fer_pixels_to_png(pixels: str) -> bytes | str:
    """Encode FER's ``"p0 p1 ... p2303"`` as a 48x48 greyscale PNG, or return why it cannot be."""
    tokens = pixels.split()
    if len(tokens) != FER_SIDE * FER_SIDE:
        return f"pixels has {len(tokens)} values, expected {FER_SIDE * FER_SIDE} (48x48)"
    ints = []
    for t in tokens:
        try:
            ints.append(int(t))
        except ValueError:
            return f"pixels contains a non-integer value {t[:20]!r}"
    values = np.array(ints, dtype=np.int64)
    if values.min() < 0 or values.max() > 255:
        return f"pixels has values outside 0..255 (min {values.min()}, max {values.max()})"
    Image.fromarray(values.astype(np.uint8).reshape(FER_SIDE, FER_SIDE)).save(buf := io.BytesIO(), format="PNG")
    return buf.getvalue()


def import_fer2013(csv_path: str | os.PathLike[str]) -> ImportResult:
    """Import a FER2013 CSV (header ``emotion,pixels,Usage``: any order, case-insensitive).

    FER's emotion order (Angry, Disgust, Fear, Happy, Sad, Surprise, Neutral)
    is flotilla's, so the index is kept as-is (out-of-range values included;
    parsed by :func:`parse_label`, empty = None). No age or gender (None). ``Usage`` maps
    Training→train, PublicTest→val, PrivateTest→test; an empty cell gives None
    and any other value is passed through stripped, for the gate to report.
    ``sample_id`` is ``"fer-%05d"`` of the 0-based data row (blank lines not
    counted); ``source`` is ``"<file>:line N (row R)"``.
    """
    path = _require(csv_path, directory=False)
    header = _header(path)
    names = [h.lower() for h in header]
    expected = [c.lower() for c in FER_HEADER]
    if sorted(names) != sorted(expected):
        missing = [c for c, low in zip(FER_HEADER, expected) if low not in names]
        extra = [c for c, low in zip(header, names) if low not in expected]
        raise ImportFormatError(
            f"{path.name} is not a FER2013 CSV: expected the header {','.join(FER_HEADER)!r}, got {','.join(header)!r}",
            [f"missing column {c!r}" for c in missing] + [f"unknown column {c!r}{_did_you_mean(c, FER_HEADER)}" for c in extra],
            hint="FER2013's header is 'emotion,pixels,Usage'; for other labelled images use --format folder")
    col = {name: names.index(name.lower()) for name in FER_HEADER}

    def produce(problems: list[ImportProblem]) -> Iterator[Sample]:
        rows = _csv_rows(path, problems, width=len(header))
        next(rows, None)  # the header
        for index, (line, cells) in enumerate(rows):
            src = f"{path.name}:line {line} (row {index})"
            if cells is None:
                continue
            emotion, image = parse_label("emotion", cells[col["emotion"]]), fer_pixels_to_png(cells[col["pixels"]])
            if reasons := [r for r in (emotion, image) if isinstance(r, str)]:
                problems.append(ImportProblem(src, "; ".join(reasons)))
                continue
            usage = cells[col["Usage"]].strip()
            split = FER_USAGE.get(usage.lower(), usage) if usage else None
            yield Sample(sample_id=f"fer-{index:05d}", image=image, format="png", age=None, gender=None,
                         emotion=emotion, split=split, source=src)  # type: ignore[arg-type]

    return ImportResult("fer2013", path, produce)


# ---------------------------------------------------------------------------------------------- folder + CSV
def parse_label(column: str, text: str) -> float | int | None | str:
    """Parse one ``age``/``gender``/``emotion`` cell: None if empty, the value, or a reason string.

    age: any float (passed through, NaN too). gender: an integer as-is, or
    female/f (0) / male/m (1). emotion: an integer as-is, or a name from
    ``EMOTIONS``. Names are case-insensitive; integral floats ("1.0", as pandas
    writes int columns with gaps) count as integers.
    """
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = None
    if column == "age":
        return value if value is not None else f"age {text[:40]!r} is not a number"
    names = GENDER_NAMES if column == "gender" else {e: i for i, e in enumerate(EMOTIONS)}
    if text.lower() in names:
        return names[text.lower()]
    if value is not None and value.is_integer():
        return int(value)
    return f"{column} {text[:40]!r} is not an integer or one of {'/'.join(names)}{_did_you_mean(text, list(names))}"


def _folder_header(path: Path) -> tuple[dict[str, int], int]:
    header = _header(path)
    names = [h.lower() for h in header]
    problems = [(f"unknown column {raw!r}" if name else f"column {i + 1} has an empty name")
                + _did_you_mean(name, FOLDER_COLUMNS) for i, (raw, name) in enumerate(zip(header, names))
                if name not in FOLDER_COLUMNS]
    problems += [f"column {d!r} appears more than once" for d in FOLDER_COLUMNS if names.count(d) > 1]
    if "file" in names and "path" in names:
        problems.append("both 'file' and 'path' columns: use only one")
    if "file" not in names and "path" not in names:
        problems.append("no 'file' (or 'path') column naming each image relative to the folder")
    if problems:
        raise ImportFormatError(
            f"labels CSV {path.name} has an invalid header {','.join(header)!r}", problems,
            hint=f"allowed columns (case-insensitive): {', '.join(FOLDER_COLUMNS)}; "
                 "'file' (or 'path') is required, every other column is optional")
    return {("file" if n == "path" else n): i for i, n in enumerate(names)}, len(header)


def import_folder(root: str | os.PathLike[str], labels_csv: str | os.PathLike[str] | None = None) -> ImportResult:
    """Import a folder of images described by a labels CSV (default ``<root>/labels.csv``).

    Columns (case-insensitive): ``file`` or ``path`` (required; relative POSIX
    path inside ``root``) and any of ``sample_id``, ``age``, ``gender``,
    ``emotion``, ``split`` (cells parsed by :func:`parse_label`; empty = None).
    ``split`` maps train/val/test and aliases (training, validation, dev, FER's
    Usage names...); other values pass through for the gate. ``sample_id``
    defaults to the file path as written (leading ``./`` dropped). Only listed
    files are imported. Rows that do not parse, whose file is missing, or whose
    path is absolute or escapes ``root`` (lexically, with
    :func:`flotilla.names.check_object_path`, or through a symlink) are
    problems. A default ``labels.csv`` that links outside ``root`` is refused. ``source`` is
    ``"<csv>:line N (<file>)"``.
    """
    base = _require(root, directory=True)
    real_base = base.resolve()
    csv_file = _require(labels_csv if labels_csv is not None else base / "labels.csv", directory=False)
    if labels_csv is None and _escapes(csv_file, real_base):  # its header would be quoted in errors
        raise ImportFormatError(f"{csv_file} is a symbolic link that leads outside the folder; refused",
                                hint="pass the labels CSV you mean explicitly (--labels)")
    col, width = _folder_header(csv_file)

    def produce(problems: list[ImportProblem]) -> Iterator[Sample]:
        rows = _csv_rows(csv_file, problems, width=width)
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
            age, gender, emotion = (parse_label(c, get(c, "")) for c in ("age", "gender", "emotion"))
            reasons += [v for v in (age, gender, emotion) if isinstance(v, str)]
            if not reasons and not (base / rel).is_file():
                reasons.append("file not found" if not (base / rel).exists() else "not a regular file")
            if reasons:
                problems.append(ImportProblem(src, "; ".join(reasons)))
                continue
            if (data := _read(base / rel, src, problems, real_base)) is None:
                continue
            split_text = get("split", "").strip()
            split = SPLIT_ALIASES.get(split_text.lower(), split_text) if split_text else None
            yield Sample(sample_id=get("sample_id", "").strip() or rel, image=data, format=detect_format(data),
                         age=age, gender=gender, emotion=emotion, split=split, source=src)  # type: ignore[arg-type]

    return ImportResult("folder", base, produce)


# ---------------------------------------------------------------------------------------------- dispatcher
IMPORTERS: dict[str, Callable[..., ImportResult]] = {"utkface": import_utkface, "fer2013": import_fer2013,
                                                     "folder": import_folder}


def import_source(kind: Kind | str, path: str | os.PathLike[str],
                  labels_csv: str | os.PathLike[str] | None = None) -> ImportResult:
    """Run the importer of ``kind`` (one of ``KINDS``) on ``path`` (a folder; the CSV for fer2013).

    ``labels_csv`` is only for ``"folder"``; an unknown kind raises :class:`ImportFormatError`.
    """
    key = str(kind).strip().lower()
    if key not in IMPORTERS:
        raise ImportFormatError(f"unknown import format {kind!r}{_did_you_mean(key, KINDS)}",
                                hint=f"choose one of: {', '.join(KINDS)}")
    if key == "folder":
        return import_folder(path, labels_csv)
    if labels_csv is not None:
        raise ImportFormatError(f"a labels CSV is only used by the 'folder' format, not {key!r}",
                                hint="drop --labels, or use --format folder")
    return IMPORTERS[key](path)
