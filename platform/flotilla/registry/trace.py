"""Reading a model's lineage from the hub: the data it read and what made that data, its run, its ancestors, its descendants.

Nothing is recorded twice: the model's card names its data commit, run, code and parent; the log of
each data commit says which commits changed the dataset (flotilla's own say what they were in their
metadata: an ingest, a label fix merged through the gate); the cards on main (or other refs) say
which models were started from this one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from flotilla.errors import FlotillaError
from flotilla.lineage import IngestCommit, Key, LabelFix, ModelCard, read_commit
from flotilla.registry.address import ModelLocation
from flotilla.registry.cards import model_locations, read_card, read_cards
from flotilla.registry.catalog import aliases_by_run
from flotilla.registry.graph import (
    ChangeNode,
    CommitRef,
    DataNode,
    Edge,
    EdgeKind,
    LineageGraph,
    ModelNode,
    Node,
    NodeKind,
    Role,
    RunNode,
    dataset_prefix,
)
from flotilla.registry.lookup import resolve

if TYPE_CHECKING:
    from flotilla.hub.client import Hub
    from flotilla.hub.repo import CommitInfo, Repo


# ---- what changed a dataset ---------------------------------------------------------------------------
def dataset_history(repo: Repo, commit: str, dataset: str, *, limit: int = 10, scan: int = 500) -> tuple[ChangeNode, ...]:
    """The newest ``limit`` changes to ``datasets/<dataset>/`` in ``commit``'s history, newest first.

    A merge whose metadata names the dataset (an ingest, a fix validated and merged by the gate) is
    one change, with the branch commits it brought in as ``via``: that is how the change landed and
    what people remember it as. Any other commit that changed the dataset (lakeFS finds those; it
    leaves merges out of a path-filtered log) is a change of its own. Merges are grouped within the
    newest ``scan`` commits; older changes are listed one commit each.
    """
    changed = {c.id: c for c in repo.log(commit, limit * 4, prefix=dataset_prefix(dataset))}
    window = repo.log(commit, scan)
    parents = {c.id: c.parents for c in window}
    out: list[ChangeNode] = []
    absorbed: set[str] = set()
    for c in window:
        if len(out) >= limit:
            break
        if len(c.parents) > 1 and c.metadata.get(Key.DATASET) == dataset:
            side = _ancestors(parents, c.parents[1:]) - _ancestors(parents, c.parents[:1])
            absorbed |= side
            via = [x for x in window if x.id in side and x.id in changed]
            out.append(_change(repo.name, c, dataset, via))
        elif c.id in changed and c.id not in absorbed:
            out.append(_change(repo.name, c, dataset, []))
    seen = set(parents)
    out += [_change(repo.name, c, dataset, []) for c in changed.values() if c.id not in seen]
    return tuple(out[:limit])


def _ancestors(parents: dict[str, tuple[str, ...]], start: Iterable[str]) -> set[str]:
    """Every commit reachable from ``start`` within the scanned window."""
    seen: set[str] = set()
    stack = list(start)
    while stack:
        c = stack.pop()
        if c in seen or c not in parents:
            continue
        seen.add(c)
        stack.extend(parents[c])
    return seen


def _change(repo: str, c: CommitInfo, dataset: str, via: list[CommitInfo]) -> ChangeNode:
    """What a commit was, from flotilla's metadata on it or on the commits it merged.

    An ingest (even one fixed on its branch before it merged) is an ingest; a :class:`LabelFix`
    (``flotilla.data.relabel``) or any change merged through the gate (``data validate --merge``) is
    a label fix; anything else is an edit.
    """
    records = [read_commit(x.metadata) for x in (c, *via)]
    ingest = next((r for r in records if isinstance(r, IngestCommit)), None)
    fix = next((r for r in records if isinstance(r, LabelFix)), None)
    md = c.metadata
    gated = md.get(Key.VALIDATION) == "passed" and Key.KIND not in md and (Key.DATASET in md or Key.VALIDATED_COMMIT in md)
    kind = NodeKind.INGEST if ingest else NodeKind.LABEL_FIX if fix or gated else NodeKind.EDIT
    refs = tuple(CommitRef(x.id, x.message) for x in via)
    samples = ingest.samples if ingest else fix.samples if fix else None
    labels = tuple(sorted(fix.labels_changed.items())) if fix and not ingest else ()
    return ChangeNode(repo, c.id, kind, dataset, c.message, c.creation_date, samples, refs, labels)


# ---- the graph ----------------------------------------------------------------------------------------
def lineage_graph(hub: Hub, model: str, *, repo: str, limit: int = 10, refs: Sequence[str] = ("main",)) -> LineageGraph:
    """The lineage of ``model`` (any address: URI, run id, ``family@alias``).

    Upstream: its run, the data commit it read and up to ``limit`` changes that made that data, and
    the same for its parent, the parent's parent... Downstream: every model on ``refs`` whose card
    names it (by path: the parent's commit may not be where the child is listed) as its parent, and
    theirs, recursively.
    """
    loc = resolve(hub, model, repo)
    build = _Builder(hub, limit)
    card = read_card(hub.repo(loc.repo), loc)
    subject = build.model(loc, card, Role.SUBJECT)
    build.upstream(loc, card, subject)
    build.descendants(loc, subject, refs)
    build.data_histories()
    return LineageGraph(subject.key, tuple(build.nodes.values()), tuple(build.edges))


class _Builder:
    def __init__(self, hub: Hub, limit: int) -> None:
        self.hub = hub
        self.limit = limit
        self.nodes: dict[str, Node] = {}
        self.edges: list[Edge] = []
        self._aliases: dict[str, dict[str, list[str]]] = {}

    def add(self, node: Node) -> Node:
        return self.nodes.setdefault(node.key, node)

    def link(self, source: Node, target: Node, kind: EdgeKind) -> None:
        edge = Edge(source.key, target.key, kind)
        if edge not in self.edges:
            self.edges.append(edge)

    def aliases(self, repo: str, run_id: str) -> tuple[str, ...]:
        if repo not in self._aliases:
            try:
                self._aliases[repo] = aliases_by_run(self.hub.repo(repo), "main")
            except FlotillaError:  # a repository without main (or its alias files) names nothing
                self._aliases[repo] = {}
        return tuple(sorted(self._aliases[repo].get(run_id, ())))

    def model(self, loc: ModelLocation, card: ModelCard, role: Role) -> Node:
        # the headline metrics first (error, accuracy), never the sample counts (*/n)
        metrics = tuple(
            sorted(
                ((k, float(v)) for k, v in card.metrics.items() if not k.endswith("/n")),
                key=lambda kv: (not kv[0].endswith(("/mae", "/accuracy")), kv[0]),
            )
        )
        node = ModelNode(
            loc, role, str(card.config.get("name", "")), metrics, self.aliases(loc.repo, loc.run_id), card.created,
            card.data.commit,
        )  # fmt: skip
        return self.add(node)

    def upstream(self, loc: ModelLocation, card: ModelCard, node: Node) -> None:
        """The run and data commit of ``card``'s model, then its parent's, up the chain."""
        seen = {loc.path}
        while True:
            run = self.add(RunNode(loc.repo, card.run_id, card.branch, str(card.code.get("git_sha", "")), card.created))
            self.link(run, node, EdgeKind.PRODUCED)
            self.link(self.data_node(card), run, EdgeKind.READ)
            if card.parent is None or card.parent.path in seen:  # a card naming itself (or a loop) ends the chain
                return
            ploc = ModelLocation(card.parent.repo, card.parent.commit, card.parent.path)
            seen.add(ploc.path)
            try:
                pcard = read_card(self.hub.repo(ploc.repo), ploc)
            except FlotillaError as exc:
                parent = self.add(ModelNode(ploc, Role.ANCESTOR, note=f"card unreadable: {exc.message}"))
                self.link(parent, node, EdgeKind.TRANSFER)
                return
            parent = self.model(ploc, pcard, Role.ANCESTOR)
            self.link(parent, node, EdgeKind.TRANSFER)
            loc, card, node = ploc, pcard, parent

    def data_node(self, card: ModelCard) -> Node:
        d = card.data
        try:
            info = self.hub.repo(d.repo).commit_info(d.commit)
            node = DataNode(d.repo, d.commit, d.dataset, d.ref, info.message, info.creation_date)
        except FlotillaError as exc:
            node = DataNode(d.repo, d.commit, d.dataset, d.ref, note=f"commit unreadable: {exc.message}")
        return self.add(node)

    def descendants(self, loc: ModelLocation, node: Node, refs: Sequence[str]) -> None:
        """Models on ``refs`` started from ``loc`` (matched by path), and from those, recursively."""
        r = self.hub.repo(loc.repo)
        catalog: dict[str, tuple[ModelLocation, ModelCard]] = {}
        for ref in refs:
            commit = r.resolve(ref)
            for cloc, card in read_cards(r, model_locations(r, commit)):
                catalog.setdefault(cloc.path, (cloc, card))
        frontier = {loc.path: node}
        taken = {n.location.path for n in self.nodes.values() if isinstance(n, ModelNode)}
        while frontier:
            found: dict[str, Node] = {}
            for path, (cloc, card) in catalog.items():
                parent = card.parent
                if parent and parent.repo == loc.repo and parent.path in frontier and path not in taken:
                    child = self.model(cloc, card, Role.DESCENDANT)
                    self.link(frontier[parent.path], child, EdgeKind.TRANSFER)
                    found[path] = child
            taken |= set(found)
            frontier = found

    def data_histories(self) -> None:
        """What made each data commit; where one data commit's history passes through another's, link them.

        A data commit shows only the changes newer than the latest other data commit of the graph
        whose dataset state it grew from (linked ``THEN``), so each change appears once, next to the
        first data commit that holds it. Two data commits with the same dataset state (the same
        newest change) are linked oldest first.
        """
        datas = [n for n in self.nodes.values() if isinstance(n, DataNode) and not n.note]
        history = {d.key: dataset_history(self.hub.repo(d.repo), d.commit, d.dataset, limit=self.limit) for d in datas}
        order = {d.key: (d.date, i) for i, d in enumerate(datas)}
        for d in datas:
            ids = [c.id for c in history[d.key]]
            prior: tuple[int, DataNode] | None = None
            for e in datas:
                head = history[e.key][0].id if history[e.key] else None
                if e is d or (e.repo, e.dataset) != (d.repo, d.dataset) or head not in ids:
                    continue
                cut = ids.index(head)
                if cut == 0 and order[e.key] > order[d.key]:  # the same state: the older commit comes first
                    continue
                if Edge(d.key, e.key, EdgeKind.THEN) in self.edges:  # same-second histories: never a loop
                    continue
                if prior is None or cut < prior[0]:
                    prior = (cut, e)
            own = history[d.key]
            if prior is not None:
                self.link(prior[1], d, EdgeKind.THEN)
                own = own[: prior[0]]
            for c in own:
                self.link(self.add(c), d, EdgeKind.CHANGED)
