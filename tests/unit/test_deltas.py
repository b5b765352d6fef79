"""Folding deltas over a dataset's base: appends add rows and shards, relabels replace rows in place, counts follow."""

import pyarrow as pa

from flotilla.data import layout
from flotilla.data.deltas import Delta, claim_path, delta_paths, fold, next_seq
from flotilla.data.layout import Manifest, ShardInfo


def _rows(ids, ages, split="train"):
    return pa.table(
        {"sample_id": ids, "split": [split] * len(ids), "age": ages, "gender": [0] * len(ids), "emotion": [None] * len(ids)},
        schema=layout.LABEL_SCHEMA,
    )


def test_fold_applies_appends_and_relabels_in_order_and_recounts():
    base = Manifest("d", {"samples": 3}, {}, [ShardInfo("s0", 3, 1, "x")], {}, {})
    labels = _rows(["a", "b", "c"], [1.0, 2.0, 3.0])
    shard = ShardInfo("s1", 2, 1, "y")
    changes = [
        (Delta("i1", 1, "append", 2, (shard,)), _rows(["d", "e"], [4.0, None], split="val")),
        (Delta("i2", 2, "relabel", 2), _rows(["b", "d"], [20.0, 40.0], split="val")),
    ]
    manifest, table = fold(base, labels, changes)
    assert table.column("sample_id").to_pylist() == ["a", "b", "c", "d", "e"]
    assert table.column("age").to_pylist() == [1.0, 20.0, 3.0, 40.0, None]
    assert [s.path for s in manifest.shards] == ["s0", "s1"] and base.shards == [ShardInfo("s0", 3, 1, "x")]
    assert manifest.counts == {"samples": 5, "train": 2, "val": 3, "test": 0}
    assert manifest.label_counts == {"age": 4, "gender": 5, "emotion": 0}
    assert fold(base, labels, []) == (base, labels)


def test_delta_names_sort_by_sequence_and_claims_hash_odd_ids():
    listing = ["datasets/d/deltas/00000002-b.json", "datasets/d/deltas/00000002-b.parquet", "datasets/d/deltas/00000010-a.json"]
    assert delta_paths("d", listing) == ["datasets/d/deltas/00000002-b.json", "datasets/d/deltas/00000010-a.json"]
    assert next_seq("d", listing) == 11 and next_seq("d", []) == 1
    p = claim_path("d", "../../etc/passwd x")
    assert p.startswith("datasets/d/claims/") and ".." not in p and " " not in p
