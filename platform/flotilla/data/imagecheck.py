"""What the gate learns from one image shard, apart from what it does with it.

The expensive half of the gate — hashing every image, walking its PNG chunks, decoding it with
Pillow — depends on one shard's bytes alone. :func:`inspect_shard` does that half and returns
:class:`ShardFacts` (small, picklable); the gate (:mod:`flotilla.data.validate`) does the cheap
bookkeeping half over the facts of every shard in order. Split like this, an ingest worker that has
just encoded a shard inspects it while its bytes are in hand, and the gate's report is the one it
would compute from the hub, without downloading and decoding every image a second time.
"""

from __future__ import annotations

import hashlib
import io
import re
import zlib
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image, ImageFile

from flotilla.data import layout

_PIL_FORMATS = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg"}
_PNG_SIG = b"\x89PNG\r\n\x1a\n"
# Pillow names the file object it could not read, memory address included: a report must not differ run to run
_ADDRESS = re.compile(r" ?<_io\.BytesIO object at 0x[0-9a-f]+>")


@dataclass(frozen=True)
class ImageFacts:
    """One image row as the gate needs it: ids and columns as stored, then what its bytes are.

    ``problem`` is ``(kind, why)`` with kind ``truncated`` or ``decode``; ``size``, ``mode`` and ``got``
    (the format the bytes are) are set only for an image that decoded.
    """

    sample_id: str
    fmt: str | None
    sha: str | None
    n_bytes: int
    hexdigest: str = ""
    digest: bytes = b""
    problem: tuple[str, str] | None = None
    size: tuple[int, int] | None = None
    mode: str = ""
    got: str = ""


@dataclass(frozen=True)
class ShardFacts:
    """One shard as the gate needs it: its schema problems, whether its rows could be read, every image's facts."""

    problems: tuple[tuple[str, str], ...]
    skipped: bool
    has_fmt: bool
    has_sha: bool
    images: tuple[ImageFacts, ...]


def stringlike(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def compatible(have: pa.DataType, want: pa.DataType) -> bool:
    """Whether a column of type ``have`` stores what the layout declares as ``want``."""
    if pa.types.is_string(want):
        return stringlike(have)
    if pa.types.is_binary(want):
        return pa.types.is_binary(have) or pa.types.is_large_binary(have) or pa.types.is_binary_view(have)
    return have == want


def usable(col: pa.ChunkedArray, want: pa.DataType) -> pa.ChunkedArray | None:
    """The column cast to a type the checks can read, or None when its values cannot be checked."""
    t = col.type
    if pa.types.is_integer(want) or pa.types.is_floating(want):
        ok = pa.types.is_integer(t) or pa.types.is_floating(t)
        return pc.cast(col, pa.float64()) if ok else None
    if pa.types.is_binary(want):
        return col if compatible(t, want) else None
    try:
        return pc.cast(col, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def png_problem(data: bytes) -> tuple[str, str] | None:
    """Walk the PNG chunks: ('truncated' | 'decode', why) or None. Pillow skips IDAT CRCs and a missing end."""
    view, pos, n = memoryview(data), 8, len(data)
    while pos + 8 <= n:
        length = int.from_bytes(view[pos : pos + 4], "big")
        ctype = bytes(view[pos + 4 : pos + 8])
        end = pos + 12 + length
        if end > n:
            return "truncated", f"{ctype.decode('latin-1')!r} chunk runs past the end of the file"
        if zlib.crc32(view[pos + 4 : end - 4]) != int.from_bytes(view[end - 4 : end], "big"):
            return "decode", f"CRC mismatch in the {ctype.decode('latin-1')!r} chunk (corrupt bytes)"
        if ctype == b"IEND":
            return None
        pos = end
    return "truncated", "the file ends before the IEND chunk"


def inspect_image(sample_id: str, data: bytes | None, fmt: str | None, sha: str | None) -> ImageFacts:
    """Hash, chunk-check and decode one image (Pillow strict: truncated images are errors, not padded)."""
    if not data:
        return ImageFacts(sample_id, fmt, sha, 0)
    digest = hashlib.sha256(data)
    facts = ImageFacts(sample_id, fmt, sha, len(data), digest.hexdigest(), digest.digest())
    problem = png_problem(data) if data[:8] == _PNG_SIG else None
    if problem is None:
        strict, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                got = _PIL_FORMATS.get(im.format or "", str(im.format).lower())
                return replace(facts, size=im.size, mode=im.mode, got=got)
        except Exception as e:  # Pillow raises many types for bad bytes
            msg = _ADDRESS.sub("", f"{type(e).__name__}: {e}")
            problem = ("truncated" if "truncat" in msg or isinstance(e, EOFError) else "decode", msg)
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = strict
    return replace(facts, problem=problem)


def inspect_shard(k: int, table: Any) -> ShardFacts:
    """Everything the gate reads from shard ``k`` (a table, a record batch or Parquet bytes); never raises on bad data."""
    try:
        if isinstance(table, (bytes, bytearray, memoryview)):
            table = layout.decode_table(bytes(table))
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
    except Exception as e:  # an unreadable shard is a finding, not a crash
        table = f"unreadable Parquet ({type(e).__name__}: {e})"
    if not isinstance(table, pa.Table):
        why = str(table) if isinstance(table, str) else f"not a pyarrow Table but {type(table).__name__}"
        return ShardFacts((("schema.shard", why),), True, False, False, ())
    names, cols, problems = table.column_names, {}, []
    for f in layout.IMAGE_SCHEMA:
        if f.name not in names:
            problems.append(("schema.missing_column", f"no {f.name!r} column"))
            continue
        col = table.column(names.index(f.name))
        if not compatible(col.type, f.type):
            problems.append(("schema.type", f"{f.name!r} is {col.type}, expected {f.type}"))
        if (ok := usable(col, f.type)) is not None:
            cols[f.name] = ok.to_pylist()
    for c in sorted(set(names) - set(layout.IMAGE_SCHEMA.names)):
        problems.append(("schema.unknown_column", f"unknown column {c!r}"))
    fmts, shas = cols.get("format"), cols.get("sha256")
    if "sample_id" not in cols or "image" not in cols:
        return ShardFacts(tuple(problems), True, fmts is not None, shas is not None, ())
    images = tuple(
        inspect_image(
            sid if sid and sid.strip() else f"<shard {k} row {i}>",
            cols["image"][i],
            fmts[i] if fmts else None,
            shas[i] if shas else None,
        )
        for i, sid in enumerate(cols["sample_id"])
    )
    return ShardFacts(tuple(problems), False, fmts is not None, shas is not None, images)
