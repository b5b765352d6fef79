"""How a model is named, everywhere: a ``lakefs://`` URI, a run id, or ``family@alias``.

Transfer sources, ``flotilla models show|lineage|reproduce``, aliases and the registry's Python API
all take the same three spellings and turn them into one immutable :class:`ModelLocation` (a commit
id, never a branch), so what a command acts on cannot move under it:

- ``lakefs://<repo>/<ref>/models/<run>/<model>/model.pt`` (the ref is resolved to its commit);
- ``<run>`` or ``<run>/<model>``: found on main, then on the run's own branches (a run not yet promoted);
- ``<family>@<alias>`` or ``<family>@<alias>/<model>``: what the alias points to now (:mod:`.aliases`).
"""

from __future__ import annotations

from dataclasses import dataclass

from flotilla.errors import SpecError

MODELS_PREFIX = "models/"
WEIGHTS = "model.pt"
CARD = "card.json"


@dataclass(frozen=True)
class ModelLocation:
    """A model's weights at an immutable commit: ``lakefs://<repo>/<commit>/<path>``."""

    repo: str
    commit: str
    path: str  # models/<run>/<model>/model.pt

    @property
    def uri(self) -> str:
        return f"lakefs://{self.repo}/{self.commit}/{self.path}"

    @property
    def directory(self) -> str:
        """``models/<run>/<model>/``: where the card, the history and the weights sit together."""
        return self.path.rsplit("/", 1)[0] + "/"

    @property
    def run_id(self) -> str:
        return self.path.split("/")[1] if self.path.startswith(MODELS_PREFIX) else ""

    @property
    def model(self) -> str:
        parts = self.path.split("/")
        return parts[2] if self.path.startswith(MODELS_PREFIX) and len(parts) > 3 else ""

    @property
    def name(self) -> str:
        """``<run>/<model>``: how people name it."""
        return f"{self.run_id}/{self.model}"


def model_dir(run_id: str, model: str) -> str:
    return f"{MODELS_PREFIX}{run_id}/{model}/"


def parse_lakefs_uri(uri: str) -> tuple[str, str, str]:
    """``lakefs://repo/ref/path`` → ``(repo, ref, path)``."""
    if not uri.startswith("lakefs://"):
        raise SpecError(f"not a lakeFS URI: {uri!r}", hint="use lakefs://<repo>/<ref>/<path/to/model.pt> or a run id")
    parts = uri[len("lakefs://") :].split("/", 2)
    if len(parts) < 3 or not all(parts):
        raise SpecError(f"lakeFS URI {uri!r} needs a repository, a ref and a path")
    return parts[0], parts[1], parts[2]


def split_alias(address: str) -> tuple[str, str, str] | None:
    """``family@alias[/model]`` → ``(family, alias, model)``; None for any other spelling."""
    if "@" not in address or address.startswith("lakefs://"):
        return None
    family, _, rest = address.partition("@")
    alias, _, model = rest.partition("/")
    if not family or not alias:
        raise SpecError(
            f"model address {address!r} names no family or no alias",
            hint="write it as <family>@<alias>, e.g. face-family@production",
        )
    return family, alias, model
