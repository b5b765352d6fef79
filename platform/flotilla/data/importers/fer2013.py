"""FER2013: one CSV of 48x48 grey faces as pixel rows, with an emotion and a usage (split) per row."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import numpy as np
from PIL import Image

from flotilla.data.importers.files import csv_header, csv_rows, require_path
from flotilla.data.importers.labels import FER_USAGE, parse_label, parse_split
from flotilla.data.importers.result import ImportFormatError, ImportProblem, ImportResult, did_you_mean
from flotilla.data.layout import Sample
from flotilla.data.schema import FACE_SCHEMA, LabelColumn

FER_HEADER = ("emotion", "pixels", "Usage")
FER_SIDE = 48
FER_USAGES = ("Training", "PublicTest", "PrivateTest")
FER2013_SCHEMA = FACE_SCHEMA.extended(LabelColumn("usage", "categorical", classes=FER_USAGES))
"""What a FER2013 import declares: the face labels plus ``usage`` (the CSV's Usage column, kept beside the split)."""


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
    parsed by :func:`~flotilla.data.importers.labels.parse_label`, empty = None). No age or gender (None). ``Usage``
    maps Training→train, PublicTest→val, PrivateTest→test; an empty cell gives None
    and any other value is passed through stripped, for the gate to report. The Usage is also kept as
    the declared ``usage`` column (a code into :data:`FER_USAGES`; null when it is none of them).
    ``sample_id`` is ``"fer-%05d"`` of the 0-based data row (blank lines not
    counted); ``source`` is ``"<file>:line N (row R)"``.
    """
    path = require_path(csv_path, directory=False)
    header = csv_header(path)
    names = [h.lower() for h in header]
    expected = [c.lower() for c in FER_HEADER]
    if sorted(names) != sorted(expected):
        missing = [c for c, low in zip(FER_HEADER, expected, strict=True) if low not in names]
        extra = [c for c, low in zip(header, names, strict=True) if low not in expected]
        raise ImportFormatError(
            f"{path.name} is not a FER2013 CSV: expected the header {','.join(FER_HEADER)!r}, got {','.join(header)!r}",
            [f"missing column {c!r}" for c in missing] + [f"unknown column {c!r}{did_you_mean(c, FER_HEADER)}" for c in extra],
            hint="FER2013's header is 'emotion,pixels,Usage'; for other labelled images use --format folder",
        )
    col = {name: names.index(name.lower()) for name in FER_HEADER}

    def produce(problems: list[ImportProblem]) -> Iterator[Sample]:
        rows = csv_rows(path, problems, width=len(header))
        next(rows, None)  # the header
        for index, (line, cells) in enumerate(rows):
            src = f"{path.name}:line {line} (row {index})"
            if cells is None:
                continue
            emotion, image = parse_label("emotion", cells[col["emotion"]]), fer_pixels_to_png(cells[col["pixels"]])
            if isinstance(emotion, str) or isinstance(image, str):
                problems.append(ImportProblem(src, "; ".join(r for r in (emotion, image) if isinstance(r, str))))
                continue
            yield Sample(
                sample_id=f"fer-{index:05d}",
                image=image,
                format="png",
                age=None,
                gender=None,
                emotion=emotion,
                split=parse_split(cells[col["Usage"]], FER_USAGE),
                source=src,
                labels={"usage": _usage_code(cells[col["Usage"]])},
            )

    return ImportResult("fer2013", path, produce, FER2013_SCHEMA)


def _usage_code(cell: str) -> int | None:
    names = [u.lower() for u in FER_USAGES]
    value = cell.strip().lower()
    return names.index(value) if value in names else None
