"""The lineage graph of one model, as types: its nodes (data commits, the changes that made them, runs, models) and edges.

The graph is typed and frozen so its three pictures (a terminal tree, an HTML page, a PNG:
:mod:`flotilla.registry.render`) draw one and the same thing; :mod:`flotilla.registry.trace` reads
it from the hub. Edges point the way things flowed: change → data commit → run → model → child model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from flotilla.names import check_dataset_name
from flotilla.registry.address import ModelLocation


class NodeKind(StrEnum):
    DATA = "data"  # a data commit a model was trained on
    INGEST = "ingest"  # a commit (or merge) that ingested the dataset
    LABEL_FIX = "label-fix"  # a change merged through the gate (``flotilla data validate --merge``)
    EDIT = "edit"  # any other commit that changed the dataset
    RUN = "run"
    MODEL = "model"


class Role(StrEnum):
    """Where a model stands relative to the one the graph is about."""

    SUBJECT = "subject"
    ANCESTOR = "ancestor"  # its parent, the parent's parent...
    DESCENDANT = "descendant"  # started from it (transfer learning, a later sweep), or from one of those


class EdgeKind(StrEnum):
    CHANGED = "changed"  # a data change → the data commit it is part of
    THEN = "then"  # an earlier data commit → a later one of the same dataset whose history passes through it
    READ = "read by"  # data commit → the run that trained on it
    PRODUCED = "produced"  # run → model
    TRANSFER = "transfer"  # parent model → the model started from its weights


def dataset_prefix(name: str) -> str:
    """``datasets/<name>/`` (:func:`flotilla.data.layout.dataset_prefix`; importing flotilla.data would load pyarrow)."""
    return f"datasets/{check_dataset_name(name)}/"


def short_date(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M") if epoch_s else ""


@dataclass(frozen=True)
class DataNode:
    """A data commit a model read: a dataset at an immutable commit (and the ref it was named by)."""

    repo: str
    commit: str
    dataset: str
    ref: str = ""
    message: str = ""
    date: int = 0
    note: str = ""  # set when the commit cannot be read (a card pointing at a commit that is gone)
    kind: NodeKind = field(default=NodeKind.DATA, init=False)

    @property
    def key(self) -> str:
        return f"data:{self.repo}/{self.commit}/{self.dataset}"

    @property
    def ident(self) -> str:
        return f"lakefs://{self.repo}/{self.commit}/{dataset_prefix(self.dataset)}"

    @property
    def title(self) -> str:
        return f"data {self.dataset} @ {self.commit[:12]}"

    @property
    def details(self) -> tuple[str, ...]:
        ref = f"ref {self.ref}" if self.ref and self.ref != self.commit else ""
        return tuple(x for x in (ref, short_date(self.date), self.message, self.note) if x)


@dataclass(frozen=True)
class CommitRef:
    id: str
    message: str


@dataclass(frozen=True)
class ChangeNode:
    """A commit that changed the dataset; a merge that landed one (an ingest, a fix) carries the commits it merged."""

    repo: str
    id: str
    kind: NodeKind  # INGEST, LABEL_FIX or EDIT
    dataset: str
    message: str
    date: int
    samples: int | None = None  # ingested, or relabelled
    via: tuple[CommitRef, ...] = ()
    labels_changed: tuple[tuple[str, int], ...] = ()  # of a label fix: column → samples whose value in it changed

    @property
    def key(self) -> str:
        return f"commit:{self.repo}/{self.id}"

    @property
    def ident(self) -> str:
        return f"lakefs://{self.repo}/{self.id}"

    @property
    def title(self) -> str:
        return f"{self.kind.replace('-', ' ')} {self.id[:12]}"

    @property
    def details(self) -> tuple[str, ...]:
        samples = f"{self.samples} samples" if self.samples is not None else ""
        if self.labels_changed:
            samples += " relabelled: " + ", ".join(f"{c} {n}" for c, n in self.labels_changed)
        via = [f"via {c.id[:8]} {c.message}" for c in self.via]
        return tuple(x for x in (short_date(self.date), self.message, samples, *via) if x)


@dataclass(frozen=True)
class RunNode:
    """The training run that made a model: its id, experiment branch, code and when."""

    repo: str
    run_id: str
    branch: str
    git_sha: str
    created: str
    kind: NodeKind = field(default=NodeKind.RUN, init=False)

    @property
    def key(self) -> str:
        return f"run:{self.repo}/{self.run_id}"

    @property
    def ident(self) -> str:
        return f"run {self.run_id} (git {self.git_sha})"

    @property
    def title(self) -> str:
        return f"run {self.run_id}"

    @property
    def details(self) -> tuple[str, ...]:
        return tuple(x for x in (f"branch {self.branch}" if self.branch else "", f"git {self.git_sha[:12]}", self.created) if x)


@dataclass(frozen=True)
class ModelNode:
    """A model: where its weights are, its metrics and the aliases (``family@alias``) naming it on main."""

    location: ModelLocation
    role: Role
    family: str = ""
    metrics: tuple[tuple[str, float], ...] = ()
    aliases: tuple[str, ...] = ()
    created: str = ""
    data_commit: str = ""
    note: str = ""  # set when its card cannot be read
    kind: NodeKind = field(default=NodeKind.MODEL, init=False)

    @property
    def key(self) -> str:
        return f"model:{self.location.repo}/{self.location.path}"

    @property
    def ident(self) -> str:
        return self.location.uri

    @property
    def title(self) -> str:
        return f"model {self.location.name}"

    @property
    def details(self) -> tuple[str, ...]:
        metrics = "  ".join(f"{k}={v:.4g}" for k, v in self.metrics[:4])
        data = f"data {self.data_commit[:12]}" if self.role is Role.DESCENDANT and self.data_commit else ""
        at = f"at {self.location.commit[:12]}"
        return tuple(x for x in (self.family, metrics, data, self.created, at, self.note) if x)


Node = DataNode | ChangeNode | RunNode | ModelNode


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    kind: EdgeKind


@dataclass(frozen=True)
class LineageGraph:
    """One model's lineage: ``subject`` is its node's key; nodes in the order they were found."""

    subject: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]

    def node(self, key: str) -> Node:
        for n in self.nodes:
            if n.key == key:
                return n
        raise KeyError(key)

    def incoming(self, key: str) -> list[Edge]:
        return [e for e in self.edges if e.target == key]

    def outgoing(self, key: str) -> list[Edge]:
        return [e for e in self.edges if e.source == key]

    def models(self, role: Role | None = None) -> list[ModelNode]:
        return [n for n in self.nodes if isinstance(n, ModelNode) and (role is None or n.role is role)]

    def data(self) -> list[DataNode]:
        return [n for n in self.nodes if isinstance(n, DataNode)]

    def changes(self) -> list[ChangeNode]:
        return [n for n in self.nodes if isinstance(n, ChangeNode)]

    def runs(self) -> list[RunNode]:
        return [n for n in self.nodes if isinstance(n, RunNode)]
