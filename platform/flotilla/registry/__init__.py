"""Models as first-class citizens of the hub: addresses, aliases, the catalog, lineage and staleness.

The registry is the hub itself, not a second database: models are ``models/<run>/<model>/``
folders (weights, card, history) on main, aliases are small committed files beside them, and the
lineage graph and the stale check read commit metadata and lakeFS diffs. This package sits below
training (which resolves ``family@alias`` transfer sources and sets aliases when it promotes);
re-running a model (``reproduce``) lives in :mod:`flotilla.training`.
"""

from flotilla.registry.address import ModelLocation, model_dir, parse_lakefs_uri
from flotilla.registry.aliases import (
    Alias,
    AliasChange,
    AliasTarget,
    get_alias,
    list_aliases,
    move_alias,
    rollback_alias,
)
from flotilla.registry.api import promote, rollback
from flotilla.registry.cards import read_card
from flotilla.registry.catalog import ModelEntry, list_models, show
from flotilla.registry.graph import (
    ChangeNode,
    DataNode,
    Edge,
    EdgeKind,
    LineageGraph,
    ModelNode,
    NodeKind,
    Role,
    RunNode,
)
from flotilla.registry.lookup import resolve
from flotilla.registry.render import lineage_html, lineage_png, lineage_tree, write_lineage
from flotilla.registry.staleness import DataChange, StaleModel, StaleReport, compare_dataset, retrain_spec, stale
from flotilla.registry.trace import dataset_history, lineage_graph
from flotilla.registry.verify import VerifiedCard, verify_card

__all__ = [
    "Alias",
    "AliasChange",
    "AliasTarget",
    "ChangeNode",
    "DataChange",
    "DataNode",
    "Edge",
    "EdgeKind",
    "LineageGraph",
    "ModelEntry",
    "ModelLocation",
    "ModelNode",
    "NodeKind",
    "Role",
    "RunNode",
    "StaleModel",
    "StaleReport",
    "VerifiedCard",
    "compare_dataset",
    "dataset_history",
    "get_alias",
    "lineage_graph",
    "lineage_html",
    "lineage_png",
    "lineage_tree",
    "list_aliases",
    "list_models",
    "model_dir",
    "move_alias",
    "parse_lakefs_uri",
    "promote",
    "read_card",
    "resolve",
    "retrain_spec",
    "rollback",
    "rollback_alias",
    "show",
    "stale",
    "verify_card",
    "write_lineage",
]
