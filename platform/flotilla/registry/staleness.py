"""Which models does a data change make stale? ``flotilla models stale``.

Models and data live in one lakeFS repository, so the answer is a read of the hub, not a guess:
every model's card names the data commit and the dataset it read, and lakeFS can diff any two
commits under ``datasets/<dataset>/`` and find the merge base of any two commits.

- ``stale(ref="main")``: the models whose data commit differs from ``ref``'s in the dataset they
  read (a model whose dataset did not change between the two commits is current, however far main
  moved), with what changed between the model's commit and ``ref``'s.
- ``stale(since=<commit>)``, e.g. a label fix's merge commit: the models whose data commit does
  *not* contain that commit (it is not the merge base of the two) and whose dataset that commit
  changed (against its first parent), with what that commit changed.

A model transfer-learned from a stale model (its card's ``parent``, at any depth) learned from the
old data too: it is listed as stale by inheritance, naming the nearest ancestor whose own data is
stale, and each stale model lists its descendants. :func:`retrain_spec` turns a stale model into
the family spec that retrains it, warm-started from it, on the new data (submitting it is the jobs
layer's: ``flotilla models stale --retrain``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from flotilla.data.deltas import deltas_prefix
from flotilla.data.layout import dataset_prefix, labels_path
from flotilla.data.store import read_labels
from flotilla.errors import FlotillaError, NotFoundError, SpecError
from flotilla.registry.catalog import ModelEntry, list_models

if TYPE_CHECKING:
    import pyarrow as pa

    from flotilla.hub.client import Hub
    from flotilla.hub.repo import Repo


@dataclass(frozen=True)
class DataChange:
    """What changed in one dataset between two commits (from the lakeFS diff and the two labels tables)."""

    repo: str
    dataset: str
    old: str
    new: str
    samples_added: int = 0
    samples_removed: int = 0
    labels_changed: Mapping[str, int] = field(default_factory=dict)  # column → samples whose value changed
    samples_relabelled: int = 0  # samples with at least one changed label
    shards_added: int = 0
    shards_replaced: int = 0
    shards_removed: int = 0
    paths: tuple[str, ...] = ()  # every path that changed under datasets/<dataset>/

    @property
    def labels_total(self) -> int:
        return sum(self.labels_changed.values())

    def describe(self) -> str:
        """``+0 samples, 37 labels changed (gender 37), 0 shards replaced``."""
        parts = [f"+{self.samples_added} samples"]
        if self.samples_removed:
            parts.append(f"-{self.samples_removed} samples")
        per = ", ".join(f"{c} {n}" for c, n in sorted(self.labels_changed.items()))
        parts.append(f"{self.labels_total} labels changed" + (f" ({per})" if per else ""))
        parts.append(f"{self.shards_replaced} shards replaced")
        if self.shards_added:
            parts.append(f"{self.shards_added} shards added")
        if self.shards_removed:
            parts.append(f"{self.shards_removed} shards removed")
        return ", ".join(parts)

    def summary(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "old": self.old,
            "new": self.new,
            "samples_added": self.samples_added,
            "samples_removed": self.samples_removed,
            "labels_changed": dict(self.labels_changed),
            "samples_relabelled": self.samples_relabelled,
            "shards_added": self.shards_added,
            "shards_replaced": self.shards_replaced,
            "shards_removed": self.shards_removed,
            "paths": list(self.paths),
        }


@dataclass(frozen=True)
class StaleModel:
    """One stale model: its own data changed (``change``), it descends from one whose did, or both."""

    entry: ModelEntry
    change: DataChange | None  # None: only stale by inheritance
    stale_ancestor: str | None = None  # ``<run>/<model>`` of the nearest ancestor whose own data is stale
    descendants: tuple[str, ...] = ()  # ``<run>/<model>`` of every model transfer-learned from it, at any depth
    retrain_data: str = ""  # the data (commit, or the ref the card named) a retrain should read

    @property
    def name(self) -> str:
        return self.entry.location.name

    @property
    def inherited(self) -> bool:
        return self.change is None

    def describe(self) -> str:
        own = self.change.describe() if self.change else ""
        via = f"via {self.stale_ancestor}" if self.stale_ancestor else ""
        return "; ".join(p for p in (own, via) if p)

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "uri": self.entry.location.uri,
            "family": self.entry.family,
            "dataset": self.entry.card.data.dataset,
            "data_commit": self.entry.card.data.commit,
            "change": self.change.summary() if self.change else None,
            "changed": self.describe(),
            "stale_ancestor": self.stale_ancestor,
            "descendants": list(self.descendants),
            "retrain_data": self.retrain_data,
        }


@dataclass(frozen=True)
class StaleReport:
    """The answer: which models of ``repo`` (on ``models_ref``) the data at/since ``target`` makes stale."""

    repo: str
    mode: Literal["ref", "since"]
    target: str  # the ref or commit asked about
    commit: str  # its commit id
    models_ref: str
    models: tuple[StaleModel, ...]
    checked: int  # models looked at
    unreadable: tuple[tuple[str, str], ...] = ()  # (model, why its data could not be compared)

    def summary(self) -> dict[str, Any]:
        return {
            "repo": self.repo,
            "mode": self.mode,
            "target": self.target,
            "commit": self.commit,
            "models_ref": self.models_ref,
            "checked": self.checked,
            "stale": [m.summary() for m in self.models],
            "unreadable": [{"model": m, "why": why} for m, why in self.unreadable],
        }


# ---- what changed --------------------------------------------------------------------------------
def _labels(repo: Repo, commit: str, dataset: str) -> pa.Table | None:
    try:
        return read_labels(repo, commit, dataset)
    except NotFoundError:  # the dataset is new (or gone) on this side
        return None


def _rows(table: pa.Table | None, columns: list[str]) -> dict[str, tuple[Any, ...]]:
    if table is None:
        return {}
    values = [table.column(c).to_pylist() for c in columns]
    return {sid: tuple(v[i] for v in values) for i, sid in enumerate(table.column("sample_id").to_pylist())}


def compare_dataset(repo: Repo, dataset: str, old: str, new: str) -> DataChange | None:
    """What changed in ``dataset`` from commit ``old`` to ``new``; None when nothing under its prefix did."""
    prefix = dataset_prefix(dataset)
    diff = repo.diff(old, new, prefix, two_dot=True)
    if not diff:
        return None
    shards = [c for c in diff if c.path.startswith(prefix + "images/")]
    count = {t: sum(1 for c in shards if c.type == t) for t in ("added", "changed", "removed")}
    added = removed = relabelled = 0
    per_column: dict[str, int] = {}
    # a change of images or manifest only moves no label; the base table or a delta (append, relabel) does
    if any(c.path == labels_path(dataset) or c.path.startswith(deltas_prefix(dataset)) for c in diff):
        tables = _labels(repo, old, dataset), _labels(repo, new, dataset)
        # split and every label column both tables have (a sample moved between splits changes what a model trained on too)
        have = [t for t in tables if t is not None]
        columns = [c for c in have[0].column_names if c != "sample_id" and all(c in t.column_names for t in have)] if have else []
        before, after = (_rows(t, columns) for t in tables)
        added, removed = len(after.keys() - before.keys()), len(before.keys() - after.keys())
        for sid in before.keys() & after.keys():
            b, a = before[sid], after[sid]
            if a != b:
                relabelled += 1
                for c, x, y in zip(columns, b, a, strict=True):
                    if x != y:
                        per_column[c] = per_column.get(c, 0) + 1
    return DataChange(
        repo.name,
        dataset,
        old,
        new,
        added,
        removed,
        per_column,
        relabelled,
        count["added"],
        count["changed"],
        count["removed"],
        tuple(sorted(c.path for c in diff)),
    )


# ---- which models --------------------------------------------------------------------------------
@dataclass
class _Found:
    """What one mode found: the models stale by their own data, and the data a retrain should read."""

    direct: dict[str, StaleModel] = field(default_factory=dict)
    retrain: dict[str, str] = field(default_factory=dict)  # data repository → commit to retrain on
    unreadable: list[tuple[str, str]] = field(default_factory=list)


def stale(hub: Hub, repo: str, *, ref: str | None = None, since: str | None = None, models_ref: str = "main") -> StaleReport:
    """The models on ``models_ref`` that data at ``ref`` (default main), or the commit ``since``, makes stale.

    Give ``ref`` or ``since``, not both. A model whose data commit cannot be read (a card pointing
    at a commit that does not exist) is listed in ``unreadable`` rather than failing the whole check.
    """
    if ref is not None and since is not None:
        raise SpecError(
            "give a ref or --since, not both",
            hint="--ref: models whose data differs from that ref's; --since: models without that commit",
        )
    r = hub.repo(repo)
    entries = list_models(hub, repo, models_ref)
    mode: Literal["ref", "since"]
    if since is not None:
        target, mode, commit = since, "since", _commit(r, since)
        found = _since(r, commit, entries, models_ref)
    else:
        target, mode = ref or "main", "ref"
        commit = r.resolve(target)
        found = _against(hub, r, target, entries)
    models = _with_descendants(entries, found, repo)
    return StaleReport(repo, mode, target, commit, models_ref, models, len(entries), tuple(found.unreadable))


def _commit(r: Repo, since: str) -> str:
    try:
        return r.resolve(since)
    except NotFoundError as exc:
        raise NotFoundError(
            f"no commit {since!r} in repository {r.name!r}: nothing to check models against",
            hint="pass a commit id of this repository (e.g. a label fix's merge commit: relabel() returns it, "
            f"'lakectl log lakefs://{r.name}/main' lists them), or a branch or tag",
        ) from exc


def _against(hub: Hub, r: Repo, ref: str, entries: list[ModelEntry]) -> _Found:
    """``ref`` mode: each model against ``ref``'s commit in its own data repository."""
    found = _Found()
    changes: dict[tuple[str, str, str, str], DataChange | None] = {}
    for e in entries:
        data = e.card.data
        try:
            data_repo = r if data.repo == r.name else hub.repo(data.repo)
            if data.repo not in found.retrain:
                found.retrain[data.repo] = data_repo.resolve(ref)
            new = found.retrain[data.repo]
            if data.commit == new:
                continue
            key = (data.repo, data.dataset, data.commit, new)
            if key not in changes:
                changes[key] = compare_dataset(data_repo, data.dataset, data.commit, new)
        except FlotillaError as exc:
            found.unreadable.append((e.location.name, exc.message))
            continue
        change = changes[key]
        if change is not None:
            found.direct[e.location.name] = StaleModel(e, change, retrain_data=new)
    return found


def _since(r: Repo, commit: str, entries: list[ModelEntry], models_ref: str) -> _Found:
    """``since`` mode: the commit's own changes (against its first parent); models whose data lacks it."""
    found = _Found()
    parents = r.commit_info(commit).parents
    if not parents:  # a repository's first commit holds no dataset
        return found
    base = parents[0]
    changed = r.diff(base, commit, "datasets/", two_dot=True)
    datasets = sorted({c.path.split("/")[1] for c in changed if c.path.count("/") >= 2})
    changes = {d: compare_dataset(r, d, base, commit) for d in datasets}
    try:  # retrain on the models' branch when it has the commit (and whatever came after it), else on the commit
        head = r.resolve(models_ref)
        found.retrain[r.name] = head if r.merge_base(commit, head) == commit else commit
    except NotFoundError:
        found.retrain[r.name] = commit
    for e in entries:
        data = e.card.data
        change = changes.get(data.dataset)
        if data.repo != r.name or change is None:
            continue
        try:
            has_it = r.merge_base(commit, data.commit) == commit
        except FlotillaError as exc:
            found.unreadable.append((e.location.name, exc.message))
            continue
        if not has_it:
            found.direct[e.location.name] = StaleModel(e, change, retrain_data=found.retrain[r.name])
    return found


def _with_descendants(entries: list[ModelEntry], found: _Found, repo: str) -> tuple[StaleModel, ...]:
    """Add the models transfer-learned from a stale one (at any depth), and each stale model's descendants."""
    direct = found.direct
    by_path = {e.location.path: e for e in entries}

    def ancestors(e: ModelEntry) -> list[ModelEntry]:
        chain: list[ModelEntry] = []
        seen = {e.location.path}
        parent = e.card.parent
        while parent is not None and parent.repo == repo and parent.path in by_path and parent.path not in seen:
            p = by_path[parent.path]
            chain.append(p)
            seen.add(p.location.path)
            parent = p.card.parent
        return chain

    nearest: dict[str, str] = {}
    below: dict[str, list[str]] = {}
    for e in entries:
        stale_up = [a.location.name for a in ancestors(e) if a.location.name in direct]
        if stale_up:
            nearest[e.location.name] = stale_up[0]
            for a in ancestors(e):  # every ancestor on the chain from the stale one down has it below
                below.setdefault(a.location.name, []).append(e.location.name)
    out: list[StaleModel] = []
    for e in entries:  # the catalog's order: newest first
        name = e.location.name
        own = direct.get(name)
        if own is None and name not in nearest:
            continue
        out.append(
            StaleModel(
                e,
                own.change if own else None,
                nearest.get(name),
                tuple(sorted(below.get(name, ()))),
                own.retrain_data if own else found.retrain.get(e.card.data.repo, e.card.data.ref or e.card.data.commit),
            )
        )
    return tuple(out)


# ---- retraining ----------------------------------------------------------------------------------
def retrain_spec(model: StaleModel, data: str | None = None) -> dict[str, Any]:
    """The family spec that retrains ``model`` on ``data`` (default: its ``retrain_data``), warm-started from it.

    The card's resolved config with ``data.ref`` moved and ``transfer`` set to the stale model itself
    (heads included: the tasks are the same, only the data moved). A model of a ``strategy: separate``
    family is one task's model: its retrain trains that task alone. Returned as a plain dict: parsing it
    into a :class:`~flotilla.specs.FamilySpec` is the caller's (the specs layer sits beside this one).
    """
    card = model.entry.card
    spec: dict[str, Any] = copy.deepcopy(dict(card.config))
    spec["data"] = {**dict(spec.get("data") or {}), "ref": data or model.retrain_data or card.data.commit}
    spec["transfer"] = {"source": model.entry.location.uri, "load_heads": True}
    if spec.get("strategy") == "separate":
        mine = {str(t.get("name", "")) for t in card.tasks}
        tasks = [t for t in spec.get("tasks", []) if (t if isinstance(t, str) else t.get("name")) in mine]
        if tasks:
            spec["tasks"] = tasks
    return spec
