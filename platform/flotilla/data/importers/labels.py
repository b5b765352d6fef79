"""Label cells as the importers read them, in flotilla's vocabularies (gender 0=female 1=male, emotion = index into
``layout.EMOTIONS``, split train/val/test).

One parser for every format, so a cell means the same in a FER CSV and a folder's labels CSV. It parses but never
range-checks: a value that parses (age 200, gender 5) is passed through for the validation gate to report.
"""

from __future__ import annotations

from typing import Literal, overload

from flotilla.data.importers.result import did_you_mean
from flotilla.data.layout import EMOTIONS

FER_USAGE = {"training": "train", "publictest": "val", "privatetest": "test"}
GENDER_NAMES = {"female": 0, "f": 0, "male": 1, "m": 1}
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
    **FER_USAGE,
}


@overload
def parse_label(column: Literal["age"], text: str) -> float | str | None: ...
@overload
def parse_label(column: Literal["gender", "emotion"], text: str) -> int | str | None: ...
@overload
def parse_label(column: str, text: str) -> float | int | str | None: ...
def parse_label(column: str, text: str) -> float | int | str | None:
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
    return f"{column} {text[:40]!r} is not an integer or one of {'/'.join(names)}{did_you_mean(text, list(names))}"


def parse_split(text: str, aliases: dict[str, str]) -> str | None:
    """A split cell through ``aliases`` (case-insensitive); None if empty, any other value stripped, for the gate."""
    text = text.strip()
    return aliases.get(text.lower(), text) if text else None
