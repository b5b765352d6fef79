"""Datasets in the hub: synthetic faces, importers, the shard layout, the validation gate,
label schemas, label fixes and appends as deltas that merge side by side, commit-pinned loading with a node-local
cache, and a page and a grid to look at a dataset."""

from flotilla.data.api import generate, import_dataset, synthetic_samples
from flotilla.data.appending import AppendResult, append
from flotilla.data.ingest import IngestResult, validate_and_merge
from flotilla.data.labelfix import LabelEdit, RelabelResult, plan_label_fix, relabel, stage_label_change
from flotilla.data.loader import HubDataset
from flotilla.data.page import data_grid, data_report
from flotilla.data.pinning import DataRef, pin, resolve_data
from flotilla.data.report import Thresholds
from flotilla.data.schema import FACE_SCHEMA, LabelColumn, LabelSchema
from flotilla.data.store import list_datasets, read_labels, read_manifest
from flotilla.data.synthetic import FaceSpec, Shift

__all__ = [
    "FACE_SCHEMA",
    "AppendResult",
    "DataRef",
    "FaceSpec",
    "HubDataset",
    "IngestResult",
    "LabelColumn",
    "LabelEdit",
    "LabelSchema",
    "RelabelResult",
    "Shift",
    "Thresholds",
    "append",
    "data_grid",
    "data_report",
    "generate",
    "import_dataset",
    "list_datasets",
    "pin",
    "plan_label_fix",
    "read_labels",
    "read_manifest",
    "relabel",
    "resolve_data",
    "stage_label_change",
    "synthetic_samples",
    "validate_and_merge",
]
