"""Label schemas: parsing and its errors, the Arrow table they imply, old manifests, and the gate, label fixes
and task checks on a column that is not one of the face three."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from flotilla.data import FACE_SCHEMA, LabelColumn, LabelSchema, layout, plan_label_fix
from flotilla.data.importers import ETHNICITIES, FER2013_SCHEMA, UTKFACE_SCHEMA, import_fer2013, import_utkface
from flotilla.data.layout import Manifest, Sample
from flotilla.data.report import target_shares
from flotilla.data.validate import Thresholds, validate
from flotilla.errors import DataValidationError, SpecError
from flotilla.models.tasks import resolve_tasks
from flotilla.specs import check_tasks_fit

T = Thresholds(min_group_count=2)


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_a_schema_reads_from_a_list_or_a_mapping_and_round_trips():
    raw = {"age": {"kind": "regression", "range": [0, 120]}, "smile": {"kind": "binary", "classes": ["no", "yes"]}}
    schema = LabelSchema.from_list(raw)
    assert schema.names == ("age", "smile") and schema["smile"].num_classes == 2
    assert LabelSchema.from_list(schema.to_list()) == schema
    assert LabelSchema.from_list(FACE_SCHEMA.to_list()) == FACE_SCHEMA


def test_schema_errors_name_the_bad_key_and_suggest_the_fix():
    with pytest.raises(SpecError) as err:
        LabelSchema.from_list(
            [
                {"name": "ethnicity", "kind": "categorical", "clases": ["a", "b"]},
                {"name": "mood", "kind": "categorial", "classes": ["a", "b"]},
                {"name": "smile", "kind": "binary", "classes": ["a", "b", "c"]},
                {"name": "height", "kind": "regression", "range": [2, 1]},
                {"name": "split", "kind": "binary", "classes": ["a", "b"]},
            ]
        )
    text = "\n".join(err.value.problems)
    assert "columns[0] (ethnicity): 'clases': unknown key (did you mean 'classes'?)" in text
    assert (
        "columns[1] (mood): kind: 'categorial' is not one of regression, binary, categorical (did you mean 'categorical'?)"
        in text
    )
    assert "columns[2] (smile): classes: a binary column needs exactly 2 class names, got 3" in text
    assert "columns[3] (height): range: must be two finite numbers lo < hi" in text
    assert "columns[4] (split): name: 'split' is reserved" in text
    with pytest.raises(SpecError, match="declared twice: age"):
        FACE_SCHEMA.extended(LabelColumn("age", "regression"))
    with pytest.raises(SpecError, match="no label column 'etnicity' \\(did you mean 'ethnicity'\\?\\)"):
        UTKFACE_SCHEMA["etnicity"]


def test_the_arrow_schema_follows_the_kinds():
    arrow = UTKFACE_SCHEMA.arrow
    assert arrow.names == ["sample_id", "split", "age", "gender", "emotion", "ethnicity"]
    assert [arrow.field(c).type for c in ("age", "gender", "emotion", "ethnicity")] == [pa.float32()] + [pa.int16()] * 3
    assert FACE_SCHEMA.arrow == layout.LABEL_SCHEMA


def test_a_manifest_without_a_schema_reads_as_the_face_schema_and_a_new_one_keeps_its_own():
    new = Manifest("utk", {}, {}, [], {}, {}, labels=layout.labels_entry(UTKFACE_SCHEMA))
    assert Manifest.from_json(new.to_json()).label_schema == UTKFACE_SCHEMA
    old = json.loads(new.to_json())
    old["labels"] = {
        "path": "labels.parquet",
        "gender": ["female", "male"],
        "emotion": list(layout.EMOTIONS),
        "age_range": [0, 120],
    }
    assert Manifest.from_json(json.dumps(old)).label_schema == FACE_SCHEMA
    assert Manifest("x", {}, {}, [], {}, {}).label_schema == FACE_SCHEMA


def utk_samples(n: int = 40) -> list[Sample]:
    return [
        Sample(f"u{i:03d}", png(i), "png", age=float(20 + i % 30), gender=i % 2, labels={"ethnicity": i % 5}) for i in range(n)
    ]


def test_the_gate_checks_a_declared_column_by_its_classes():
    samples = utk_samples()
    samples[3].labels["ethnicity"] = 7
    labels = layout.labels_table(samples, UTKFACE_SCHEMA)
    shards = [layout.decode_table(layout.encode_shard(samples))]
    report = validate(labels, shards, T, schema=UTKFACE_SCHEMA)
    (bad,) = report.by_check("labels.ethnicity")
    assert bad.sample_ids == ["u003"] and bad.details["u003"] == "ethnicity=7"
    assert bad.reason == "ethnicity must be an integer 0..4 (White, Black, Asian, Indian, Others)"
    assert report.group_counts["ethnicity"] == {"White": 8, "Black": 8, "Asian": 8, "Indian": 7, "Others": 8}
    # the same table judged as a face dataset: the column is one it does not declare
    assert report.passed is False and validate(labels, shards, T).by_check("schema.unknown_column")


def test_representativeness_covers_a_declared_column():
    samples = [s for s in utk_samples(60) if s.labels["ethnicity"] != 3 or s.sample_id == "u003"]
    labels = layout.labels_table(samples, UTKFACE_SCHEMA)
    report = validate(labels, [layout.decode_table(layout.encode_shard(samples))], T, schema=UTKFACE_SCHEMA)
    (low,) = report.by_check("representativeness.ethnicity")
    assert "ethnicity 'Indian': 1 of 49 samples" in low.reason and low.sample_ids == ["u003"]


def test_a_non_nullable_column_refuses_nulls_and_thresholds_name_only_declared_columns():
    schema = FACE_SCHEMA.extended(LabelColumn("smile", "binary", classes=("no", "yes"), nullable=False))
    samples = [Sample(f"s{i}", png(i), "png", age=30.0, labels={"smile": None if i == 2 else i % 2}) for i in range(6)]
    labels = layout.labels_table(samples, schema)
    report = validate(labels, [layout.decode_table(layout.encode_shard(samples))], Thresholds(min_group_count=0), schema=schema)
    (bad,) = report.by_check("labels.smile")
    assert bad.sample_ids == ["s2"] and "not nullable" in bad.details["s2"]
    with pytest.raises(SpecError, match="does not declare: smil"):
        validate(labels, [], Thresholds(max_missing={"smil": 0.1}), schema=schema)


def test_labels_table_refuses_a_value_for_an_undeclared_column():
    with pytest.raises(DataValidationError, match="'ethnicity'"):
        layout.labels_table(utk_samples(2))


def test_a_label_fix_checks_a_declared_column():
    labels = layout.labels_table(utk_samples(5), UTKFACE_SCHEMA)
    edit = plan_label_fix(labels, {"u001": {"ethnicity": "asian"}}, "utk", UTKFACE_SCHEMA)
    assert edit.changed == {"ethnicity": 1} and edit.table.column("ethnicity")[1].as_py() == 2
    with pytest.raises(SpecError) as err:
        plan_label_fix(labels, {"u001": {"ethnicity": "Martian"}, "u002": {"ethnicty": 1}}, "utk", UTKFACE_SCHEMA)
    text = "\n".join(err.value.problems)
    assert "ethnicity 'Martian' is not one of 0 White, 1 Black" in text and "(did you mean 'ethnicity'?)" in text


def test_tasks_must_fit_the_declared_columns():
    fits = resolve_tasks(["age", "gender", {"name": "ethnicity", "kind": "multiclass", "num_classes": 5}])
    check_tasks_fit(fits, UTKFACE_SCHEMA, "utk")
    with pytest.raises(SpecError) as err:
        check_tasks_fit(fits, FACE_SCHEMA, "faces")
    assert "task 'ethnicity' reads label column 'ethnicity', which dataset 'faces' does not declare" in err.value.message
    assert "emotion (categorical: angry" in (err.value.hint or "")
    wrong = resolve_tasks(
        [{"name": "ethnicity", "kind": "multiclass", "num_classes": 4}, {"name": "age", "kind": "binary", "label": "age"}]
    )
    with pytest.raises(SpecError) as err:
        check_tasks_fit(wrong, UTKFACE_SCHEMA, "utk")
    assert "task 'ethnicity' has num_classes 4, but column 'ethnicity' of 'utk' has 5 classes" in err.value.message
    assert "task 'age' is binary, but column 'age' of 'utk' is regression" in err.value.message


def test_importers_declare_and_keep_their_extra_columns(tmp_path: Path):
    (tmp_path / "utk").mkdir()
    (tmp_path / "utk" / "30_0_2_20170101000000000.jpg").write_bytes(png(1))
    result = import_utkface(tmp_path / "utk")
    (sample,) = list(result)
    assert result.schema == UTKFACE_SCHEMA and sample.labels == {"ethnicity": 2} and ETHNICITIES[2] == "Asian"
    csv = tmp_path / "fer.csv"
    pixels = " ".join(["7"] * 48 * 48)
    csv.write_text(f"emotion,pixels,Usage\n3,{pixels},PrivateTest\n4,{pixels},Weird\n")
    fer = import_fer2013(csv)
    assert fer.schema == FER2013_SCHEMA and [s.labels["usage"] for s in fer] == [2, None]


# ---- representativeness against a target population (issue 19, item 3)


def target_samples() -> list[Sample]:
    """60 samples, 45 of them female: 75 % against a population of half and half."""
    return [Sample(f"t{i:02d}", png(i), "png", age=30.0, gender=0 if i < 45 else 1) for i in range(60)]


def test_the_gate_reports_each_slice_gap_to_a_target_population():
    samples = target_samples()
    labels, shards = layout.labels_table(samples), [layout.decode_table(layout.encode_shard(samples))]
    uniform = validate(labels, shards, Thresholds(min_group_count=2, min_group_fraction=0.1))
    assert not uniform.by_check("representativeness.gender")  # 15 males is no problem against a uniform share
    target = Thresholds(min_group_count=2, target={"gender": {"female": 0.5, "male": 0.5}}, max_target_gap=0.1)
    report = validate(labels, shards, target)
    gaps = {i.reason.split("'")[1]: i.reason for i in report.by_check("representativeness.gender")}
    assert set(gaps) == {"female", "male"} and not report.passed
    assert "gender 'male': 15 of 60 samples, 25.0% of the samples against a target share of 50.0% (gap -25.0%" in gaps["male"]
    assert "(gap +25.0%, above max_target_gap=10.0%)" in gaps["female"]
    # the reference population can be another dataset's counts, e.g. the very same one: then no gap at all
    same = Thresholds(min_group_count=2, target=target_shares(report.group_counts))
    assert not [i for i in validate(labels, shards, same).issues if i.check.startswith("representativeness")]


def test_a_target_that_does_not_fit_is_refused():
    samples = target_samples()
    labels, shards = layout.labels_table(samples), [layout.decode_table(layout.encode_shard(samples))]
    with pytest.raises(SpecError) as err:
        validate(labels, shards, Thresholds(target={"gendr": {"a": 1.0}, "gender": {"female": 0.5, "mal": 0.5}}))
    text = "\n".join(err.value.problems)
    assert "target group 'gendr' is not a group of this dataset" in text and "no slice(s) 'mal'" in text
    with pytest.raises(SpecError, match=r"gender: shares must sum to 1, they sum to 0\.9"):
        Thresholds(target={"gender": {"female": 0.5, "male": 0.4}})
