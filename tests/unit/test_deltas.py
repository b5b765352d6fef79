"""Folding deltas over a dataset's base: appends add rows and shards, relabels replace rows, removes drop them."""

import pyarrow as pa

from flotilla.data import layout
from flotilla.data.deltas import Delta, claim_path, delta_paths, fold, next_seq, removed_ids
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


def test_a_remove_drops_its_samples_keeps_shards_and_its_reasons_and_an_append_can_bring_one_back():
    base = Manifest("d", {"samples": 3}, {}, [ShardInfo("s0", 3, 1, "x")], {}, {})
    labels = _rows(["a", "b", "c"], [1.0, 2.0, None])
    gone = Delta("r1", 1, "remove", 2, reasons={"b": "duplicate", "c": "not a face"}, source={"audit": "x1"})
    changes = [(Delta.from_json(gone.to_json()), _rows(["b", "c"], [2.0, None]))]
    manifest, table = fold(base, labels, changes)
    assert table.column("sample_id").to_pylist() == ["a"]
    assert manifest.counts == {"samples": 1, "train": 1, "val": 0, "test": 0} and manifest.label_counts["age"] == 1
    assert [s.path for s in manifest.shards] == ["s0"]  # images stay where they are; readers skip them
    assert changes[0][0].reasons == {"b": "duplicate", "c": "not a face"} and changes[0][0].source == {"audit": "x1"}
    assert removed_ids(changes) == {"b", "c"}
    back = [*changes, (Delta("a1", 2, "append", 1, (ShardInfo("s1", 1, 1, "y"),)), _rows(["c"], [9.0]))]
    assert removed_ids(back) == {"b"} and fold(base, labels, back)[1].column("sample_id").to_pylist() == ["a", "c"]


def test_an_old_delta_descriptor_without_reasons_still_reads():
    old = '{"created": 1.0, "id": "i", "kind": "relabel", "reason": "", "rows": 1, "seq": 3, "shards": []}'
    assert Delta.from_json(old) == Delta("i", 3, "relabel", 1, created=1.0)
