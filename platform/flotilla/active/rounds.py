"""A round of active learning as hub state: its own branch, one directory, one commit per step.

::

    branch  al-<name>-round-<k>                    cut from the pool's commit when the round is selected
    active/<name>/round-<k>/round.json             the round's state (:class:`RoundState`), rewritten by each step
    active/<name>/round-<k>/selection.parquet      the chosen samples, their order and every score
    active/<name>/round-<k>/images/<sample>.png    the chosen images, one object each: what Label Studio shows
    active/<name>/round-<k>/received.parquet       the labels that came back (sample_id + label columns)

Each step commits with an :class:`~flotilla.lineage.ActiveRound` record, so the branch's log is the
round: what was selected and why, what was sent, what came back, what the retrained model scored and
what was decided. Rounds are numbered per name from the branches that exist (``1`` for the first).
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from flotilla.errors import ActiveLearningError, NotFoundError
from flotilla.hub.repo import Repo
from flotilla.names import check_branch_id

if TYPE_CHECKING:
    import pyarrow as pa

PREFIX = "al-"
STEPS = ("selected", "sent", "received", "decided")


NAME_RE = re.compile(r"\A[a-z0-9][a-z0-9-]{0,39}\Z")


def check_name(name: str) -> str:
    """A round name is a short lower-case slug: it names branches, directories and a Label Studio project."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ActiveLearningError(
            f"invalid active-learning name {name!r}: 1-40 characters of a-z, 0-9 and '-', starting with a letter or digit",
            hint="e.g. 'faces-al'",
        )
    return name


def round_branch(name: str, k: int) -> str:
    return check_branch_id(f"{PREFIX}{check_name(name)}-round-{k}")


def round_dir(name: str, k: int) -> str:
    return f"active/{name}/round-{k:03d}/"


def image_path(name: str, k: int, sample_id: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", sample_id)
    return f"{round_dir(name, k)}images/{safe}.png"


def rounds(repo: Repo, name: str) -> list[int]:
    """The round numbers of ``name`` that have a branch, ascending."""
    pattern = re.compile(rf"\A{re.escape(PREFIX + check_name(name))}-round-(\d+)\Z")
    return sorted(int(m.group(1)) for b in repo.branches() if (m := pattern.match(b)))


def next_round(repo: Repo, name: str) -> int:
    have = rounds(repo, name)
    return (have[-1] + 1) if have else 1


@dataclass(frozen=True)
class RoundState:
    """What a round is and how far it got (``round.json``)."""

    name: str
    round: int
    repo: str
    model_uri: str
    family: str
    pool_dataset: str
    pool_commit: str
    train_dataset: str
    strategy: str
    budget: int
    params: dict[str, Any] = field(default_factory=dict)
    step: str = "selected"
    branch: str = ""
    project_id: int | None = None
    received: int = 0
    unlabelled: tuple[str, ...] = ()
    decision: dict[str, Any] = field(default_factory=dict)

    @property
    def dir(self) -> str:
        return round_dir(self.name, self.round)

    def advance(self, step: str, **changes: Any) -> RoundState:
        if step not in STEPS:
            raise ActiveLearningError(f"unknown round step {step!r}")
        return replace(self, step=step, **changes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, raw: bytes | str) -> RoundState:
        d = json.loads(raw)
        d["unlabelled"] = tuple(d.get("unlabelled") or ())
        return cls(**d)


def read_state(repo: Repo, name: str, k: int | None = None) -> RoundState:
    """The state of round ``k`` of ``name`` (default: its newest round); a clear error when there is none."""
    have = rounds(repo, name)
    if not have:
        raise NotFoundError(
            f"no active-learning round named {name!r} in {repo.name!r}", hint="start one with 'flotilla al select'"
        )
    k = have[-1] if k is None else k
    if k not in have:
        raise NotFoundError(f"{name!r} has no round {k} (rounds: {', '.join(map(str, have))})", hint="pass one of those")
    return RoundState.from_json(repo.get(round_branch(name, k), round_dir(name, k) + "round.json"))


def parquet_bytes(table: pa.Table) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def read_table(repo: Repo, ref: str, path: str) -> pa.Table:
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(repo.get(ref, path)))
