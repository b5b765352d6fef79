"""Thumbnails from a shard's encoded images, as PNG bytes and ``data:`` URIs, and a labelled PNG grid of them.

The grid's geometry is :class:`GridLayout` (pure, tested); drawing it needs only Pillow.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

THUMB = 64


def thumbnail(image: bytes, size: int = THUMB) -> bytes:
    """``image`` (any format Pillow reads) as a ``size``-pixel-square RGB PNG."""
    from PIL import Image

    with Image.open(io.BytesIO(image)) as opened:
        rgb = opened.convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@dataclass(frozen=True)
class GridLayout:
    """One row per group: its name in a left margin, then up to ``per_row`` thumbnails."""

    rows: int
    per_row: int
    thumb: int = THUMB
    pad: int = 4
    margin: int = 120

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the whole grid in pixels."""
        step = self.thumb + self.pad
        return self.margin + self.per_row * step + self.pad, max(1, self.rows) * step + self.pad

    def cell(self, row: int, col: int) -> tuple[int, int]:
        """Top-left corner of the thumbnail at (``row``, ``col``)."""
        step = self.thumb + self.pad
        return self.margin + self.pad + col * step, self.pad + row * step


def grid_png(groups: Mapping[str, Sequence[bytes]], per_row: int, thumb: int = THUMB) -> bytes:
    """A PNG with one labelled row per group (in ``groups``' order) of its encoded images, thumbnailed."""
    from PIL import Image, ImageDraw

    layout = GridLayout(len(groups), per_row, thumb)
    canvas = Image.new("RGB", layout.size, "white")
    draw = ImageDraw.Draw(canvas)
    for r, (name, images) in enumerate(groups.items()):
        y = layout.cell(r, 0)[1]
        draw.text((layout.pad, y + thumb // 2 - 6), f"{name} ({len(images)})"[:20], fill="black")
        for c, image in enumerate(images[:per_row]):
            with Image.open(io.BytesIO(thumbnail(image, thumb))) as small:
                canvas.paste(small, layout.cell(r, c))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()
