"""``import_source``: the one entry point that picks an importer by format name (the CLI's ``--format``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Literal

from flotilla.data.importers.fer2013 import import_fer2013
from flotilla.data.importers.folder import import_folder
from flotilla.data.importers.result import ImportFormatError, ImportResult, did_you_mean
from flotilla.data.importers.utkface import import_utkface

Kind = Literal["utkface", "fer2013", "folder"]
KINDS: tuple[str, ...] = ("utkface", "fer2013", "folder")
IMPORTERS: dict[str, Callable[..., ImportResult]] = {
    "utkface": import_utkface,
    "fer2013": import_fer2013,
    "folder": import_folder,
}


def import_source(
    kind: Kind | str, path: str | os.PathLike[str], labels_csv: str | os.PathLike[str] | None = None
) -> ImportResult:
    """Run the importer of ``kind`` (one of ``KINDS``) on ``path`` (a folder; the CSV for fer2013).

    ``labels_csv`` is only for ``"folder"``; an unknown kind raises :class:`ImportFormatError`.
    """
    key = str(kind).strip().lower()
    if key not in IMPORTERS:
        raise ImportFormatError(
            f"unknown import format {kind!r}{did_you_mean(key, KINDS)}", hint=f"choose one of: {', '.join(KINDS)}"
        )
    if key == "folder":
        return import_folder(path, labels_csv)
    if labels_csv is not None:
        raise ImportFormatError(
            f"a labels CSV is only used by the 'folder' format, not {key!r}", hint="drop --labels, or use --format folder"
        )
    return IMPORTERS[key](path)
