"""What every importer gives back: a lazy :class:`ImportResult`, its :class:`ImportProblem` s, and the one error
(:class:`ImportFormatError`) for an input that is unusable as a whole.

One module for the three importers so they report alike: a bad entry is a problem on the result and the import
goes on; a bad input raises, with a did-you-mean hint where a name was mistyped.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

from flotilla.data.layout import Sample
from flotilla.data.schema import FACE_SCHEMA, LabelSchema
from flotilla.errors import SpecError


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
    re-reads the input and resets ``problems``; passes are deterministic. ``schema``: the label
    columns the samples fill (the face three, plus whatever the format has besides), for the manifest.
    """

    def __init__(
        self,
        kind: str,
        path: Path,
        produce: Callable[[list[ImportProblem]], Iterator[Sample]],
        schema: LabelSchema = FACE_SCHEMA,
    ) -> None:
        self.kind, self.path, self._produce, self.schema = kind, path, produce, schema
        self.problems: list[ImportProblem] = []
        self.complete = False

    def __iter__(self) -> Iterator[Sample]:
        self.problems = []
        self.complete = False
        seen: dict[str, str] = {}
        for s in self._produce(self.problems):
            if s.sample_id in seen:
                self.problems.append(
                    ImportProblem(s.source, f"duplicate sample_id {s.sample_id!r} (first seen at {seen[s.sample_id]}); skipped")
                )
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


def did_you_mean(word: str, choices: tuple[str, ...] | list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or ``""``: the tail of a problem or error message."""
    close = difflib.get_close_matches(word.lower(), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
