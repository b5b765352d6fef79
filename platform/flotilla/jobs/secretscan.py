"""What a job would show on the Ray dashboard, scanned for secrets by value before it is submitted.

The job spec's own check (:mod:`flotilla.jobs.specs`) refuses env vars *named* like secrets; a
secret under an innocent name (``HUBCFG: <the hub's secret key>``), pasted into a description or
a spec's free text, passed it, and ``jobs submit --check`` printed it back. Ray shows a job's
entrypoint, runtime env and metadata to anyone who can open its dashboard, so every string of
the pinned spec, the env vars and the metadata is compared with the secrets flotilla knows (the
hub's secret key, the cluster's Ray token) and matched against the shapes of common tokens. The
error names *where* a secret is, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from flotilla.errors import SpecError

# shapes of well-known credentials: AWS access key ids, GitHub, Slack, Hugging Face, OpenAI-style, PEM private keys
TOKEN_SHAPES: dict[str, re.Pattern[str]] = {
    "an AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "a GitHub token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})\b"),
    "a Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b"),
    "a Hugging Face token": re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"),
    "an API secret key (sk-...)": re.compile(r"\bsk-[A-Za-z0-9_-]{20,}\b"),
    "a private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
}
MIN_SECRET_CHARS = 12
"""Known secrets shorter than this are not searched for: they would match ordinary text."""


def strings(value: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a JSON-like value, keys included, with its dotted place."""
    if isinstance(value, str):
        yield where or "(value)", value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            place = f"{where}.{k}" if where else str(k)
            yield place + " (key)", str(k)
            yield from strings(v, place)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from strings(v, f"{where}[{i}]")


def find_secrets(payload: Mapping[str, Any], known: Mapping[str, str]) -> list[str]:
    """``"<place>: <what>"`` for every secret in ``payload``: a ``known`` one (name -> value) or a token shape."""
    secrets = {name: v for name, v in known.items() if v and len(v) >= MIN_SECRET_CHARS}
    found = []
    for place, text in strings(payload):
        found += [f"{place}: {name}" for name, v in secrets.items() if v in text]
        found += [f"{place}: {shape}" for shape, rx in TOKEN_SHAPES.items() if rx.search(text)]
    return found


def refuse_secrets(payload: Mapping[str, Any], known: Mapping[str, str], what: str = "the job") -> None:
    """A SpecError naming every place of ``payload`` that holds a secret; nothing when there is none."""
    found = find_secrets(payload, known)
    if found:
        raise SpecError(
            f"{what} would show secrets on the Ray dashboard (values are not repeated here):",
            _unique(found),
            hint="take them out of the spec: the hub's keys reach jobs through the nodes' LAKECTL_* variables or the "
            "local hub's credentials file, other secrets through the nodes' environment (docs/scale-out.md)",
        )


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
