"""The validation gate: a clean dataset passes, each injected defect is caught by name and id."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from rich.console import Console

from flotilla.data import layout
from flotilla.data.validate import AGE_BANDS, Thresholds, ValidationReport, validate
from flotilla.errors import DataValidationError, SpecError

N = 378  # 18 gender x age-band cells x 21, 7 emotions x 54
T = Thresholds(min_group_count=10)


def png(seed: int, size: int = 16, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    buf = io.BytesIO()
    Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


_PNGS = [png(i) for i in range(N)]


def make_samples(n: int = N) -> list[layout.Sample]:
    """Balanced: every gender x age-band cell and every emotion equally often; unique images."""
    out = []
    for i in range(n):
        cell = i % 18
        out.append(layout.Sample(f"s{i:04d}", _PNGS[i], "png", age=float((cell % 9) * 10 + 5), gender=cell // 9, emotion=i % 7))
    return out


def tables(samples: list[layout.Sample], shard_rows: int = 100) -> tuple[pa.Table, list[pa.Table]]:
    """Through the real encoders: labels table + Parquet shards decoded back."""
    labels = layout.labels_table(samples)
    shards = [layout.decode_table(layout.encode_shard(c)) for c in layout.chunked(samples, shard_rows)]
    return labels, shards


def run(samples: list[layout.Sample], thresholds: Thresholds = T) -> ValidationReport:
    labels, shards = tables(samples)
    return validate(labels, shards, thresholds)


def only(report: ValidationReport, check: str):
    found = report.by_check(check)
    assert len(found) == 1, (check, [(i.check, i.reason) for i in report.issues])
    return found[0]


def checks(report: ValidationReport) -> set[str]:
    return {i.check for i in report.issues}


@pytest.fixture
def samples() -> list[layout.Sample]:
    return make_samples()


def test_clean_balanced_dataset_passes(samples):
    r = run(samples)
    assert r.passed and r.issues == [], [(i.check, i.reason) for i in r.issues]
    assert r.counts["samples"] == r.counts["images"] == N and r.counts["shards"] == 4
    assert sum(r.counts["splits"].values()) == N and set(r.counts["splits"]) == set(layout.SPLITS)
    assert r.counts["labels"] == {"age": N, "gender": N, "emotion": N}
    assert r.group_counts["emotion"] == {e: 54 for e in layout.EMOTIONS}
    assert r.group_counts["age_band"] == {b: 42 for b in AGE_BANDS}
    assert set(r.group_counts["gender_x_age_band"].values()) == {21}
    assert r.image_stats["sizes"] == {"16x16": N} and r.image_stats["formats"] == {"png": N}
    assert r.missing["gender"] == {"null": 0, "fraction": 0.0, "present": True}
    r.raise_if_failed()  # no-op


def test_streams_a_generator_of_shards_and_parquet_bytes(samples):
    labels = layout.labels_table(samples)
    seen = []
    blobs = (layout.encode_shard(c) for c in layout.chunked(samples, 128))
    r = validate(labels, blobs, T, on_shard=lambda k, n: seen.append((k, n)))
    assert r.passed and seen[-1] == (2, N)


def test_corrupt_bytes(samples):
    samples[5].image = b"definitely not an image"
    r = run(samples)
    assert not r.passed and only(r, "images.decode").sample_ids == ["s0005"]


@pytest.mark.parametrize("drop", [400, 20, 12])  # mid-IDAT .. just the IEND chunk (Pillow alone misses the last two)
def test_truncated_png(samples, drop):
    samples[7].image = samples[7].image[:-drop]
    r = run(samples)
    issue = only(r, "images.truncated")
    assert not r.passed and issue.sample_ids == ["s0007"] and issue.count == 1


def test_truncated_jpeg(samples):
    buf = io.BytesIO()
    Image.open(io.BytesIO(samples[8].image)).save(buf, "JPEG")
    samples[8].image, samples[8].format = buf.getvalue()[:-40], "jpeg"
    assert only(run(samples), "images.truncated").sample_ids == ["s0008"]


def test_flipped_byte_fails_png_crc(samples):
    data = bytearray(samples[9].image)
    data[60] ^= 0xFF  # inside IDAT: the sha column is recomputed by encode_shard, the CRC is not
    samples[9].image = bytes(data)
    assert only(run(samples), "images.decode").sample_ids == ["s0009"]


def test_sha256_mismatch(samples):
    labels, shards = tables(samples)
    sha = shards[0].column("sha256").to_pylist()
    sha[11] = hashlib.sha256(b"something else").hexdigest()
    shards[0] = shards[0].set_column(3, layout.IMAGE_SCHEMA.field("sha256"), pa.array(sha, pa.string()))
    r = validate(labels, shards, T)
    assert not r.passed and only(r, "images.sha256").sample_ids == ["s0011"]


def test_out_of_range_age(samples):
    samples[1].age, samples[2].age, samples[3].age = 150.0, -1.0, float("nan")
    r = run(samples)
    issue = only(r, "labels.age")
    assert not r.passed and issue.sample_ids == ["s0001", "s0002", "s0003"] and issue.count == 3
    assert issue.details == {"s0001": "age=150", "s0002": "age=-1", "s0003": "age=nan"}


def test_gender_and_emotion_out_of_range(samples):
    samples[4].gender, samples[6].emotion = 2, 9
    r = run(samples)
    assert only(r, "labels.gender").sample_ids == ["s0004"]
    assert only(r, "labels.emotion").sample_ids == ["s0006"]
    assert not r.passed


def test_null_labels_are_fine_but_not_all_three(samples):
    samples[0].age = None
    samples[1].gender = samples[1].emotion = None
    assert run(samples).passed
    samples[2].age = samples[2].gender = samples[2].emotion = None
    r = run(samples)
    assert not r.passed and only(r, "labels.no_labels").sample_ids == ["s0002"]


def test_an_unlabelled_dataset_passes_only_when_it_says_so(samples):
    """Incoming data for inference has no labels on purpose (manifest ``labelled: false``); the same data
    without the flag is a dataset whose labels were lost, and still fails."""
    for s in samples:
        s.age = s.gender = s.emotion = None
    labels, shards = tables(samples)
    accidental = validate(labels, shards, T)
    assert not accidental.passed and only(accidental, "labels.no_labels").count == N
    meant = validate(labels, shards, T, labelled=False)
    assert meant.passed, [(i.check, i.reason) for i in meant.errors]
    assert not meant.by_check("labels") and not meant.by_check("missing") and meant.counts["labels"]["age"] == 0
    samples[0].gender = 7  # a label it does carry is still checked
    labels, shards = tables(samples)
    assert only(validate(labels, shards, T, labelled=False), "labels.gender").sample_ids == ["s0000"]


def test_a_manifest_without_the_flag_reads_as_labelled():
    m = layout.Manifest("x", {"samples": 0}, {}, [], {}, {})
    assert m.labelled and layout.Manifest.from_json(m.to_json()).labelled
    old = json.loads(m.to_json())
    del old["labelled"]  # written before the flag existed
    assert layout.Manifest.from_json(json.dumps(old)).labelled
    assert not layout.Manifest.from_json(layout.Manifest("x", {}, {}, [], {}, {}, labelled=False).to_json()).labelled


def test_conflicting_duplicates_fail(samples):
    samples[30].image = samples[3].image
    samples[30].gender = 1 - samples[3].gender
    r = run(samples)
    issue = only(r, "duplicates.conflicting_labels")
    assert not r.passed and issue.sample_ids == ["s0003", "s0030"]
    assert "s0003" in issue.details["s0030"] and "gender=" in issue.details["s0030"]


def test_same_label_duplicates_only_warn(samples):
    samples[21].image = samples[3].image  # same age and gender (21 % 18 == 3); make the emotion the same too
    samples[21].emotion = samples[3].emotion
    samples[21].split = samples[3].split = "train"
    r = run(samples)
    issue = only(r, "duplicates.same_labels")
    assert r.passed and issue.severity == "warning" and issue.sample_ids == ["s0003", "s0021"]
    assert "1 group" in issue.reason


def test_duplicates_across_splits_warn(samples):
    samples[21].image, samples[21].emotion = samples[3].image, samples[3].emotion
    samples[3].split, samples[21].split = "train", "test"
    r = run(samples)
    assert r.passed and only(r, "duplicates.cross_split").sample_ids == ["s0003", "s0021"]


def test_under_represented_group(samples):
    disgust = [s for s in samples if s.emotion == 1]
    for s in disgust[3:]:
        s.emotion = 3  # only 3 'disgust' left
    r = run(samples)
    issue = only(r, "representativeness.emotion")
    assert not r.passed and issue.severity == "error" and issue.count == 3
    assert "'disgust'" in issue.reason and issue.sample_ids == sorted(s.sample_id for s in disgust[:3])
    assert r.group_counts["emotion"]["disgust"] == 3
    soft = run(samples, Thresholds(min_group_count=10, representativeness="warning"))
    assert soft.passed and only(soft, "representativeness.emotion").severity == "warning"


def test_fraction_of_uniform_share(samples):
    assert run(samples, Thresholds(min_group_count=0, min_group_fraction=1.0)).passed  # exactly uniform
    old = [s for s in samples if s.age >= 80]
    for s in old[3:]:
        s.age = 45.0
    r = run(samples, Thresholds(min_group_count=0, min_group_fraction=0.5))
    issue = only(r, "representativeness.age_band")
    assert "'80+'" in issue.reason and "uniform share 42.0" in issue.reason and issue.count == 3
    assert len(r.by_check("representativeness.gender_x_age_band")) == 2  # female/80+ and male/80+


def test_absent_labels_are_not_flagged(samples):
    for s in samples:  # FER-like: emotion only
        s.age = s.gender = None
    r = run(samples, Thresholds(min_group_count=10, max_missing=0.0))
    assert r.passed, [(i.check, i.reason) for i in r.issues]
    assert set(r.group_counts) == {"emotion"} and r.histograms == {}
    assert r.missing["age"] == {"null": N, "fraction": 1.0, "present": False}


def test_max_missing(samples):
    samples[5].gender = None
    assert run(samples).passed
    r = run(samples, Thresholds(min_group_count=10, max_missing={"gender": 0.0}))
    issue = only(r, "missing.gender")
    assert not r.passed and issue.sample_ids == ["s0005"] and issue.count == 1


def test_missing_and_unknown_and_mistyped_columns(samples):
    labels, shards = tables(samples)
    r = validate(labels.drop_columns(["emotion"]), shards, T)
    assert not r.passed and "'emotion'" in only(r, "schema.missing_column").reason
    assert r.missing["emotion"]["present"] is False
    r = validate(labels.append_column("mood", pa.array(["ok"] * N)), shards, T)
    assert not r.passed and "'mood'" in only(r, "schema.unknown_column").reason
    ages = pa.array([str(a) for a in labels.column("age").to_pylist()])
    r = validate(labels.set_column(2, "age", ages), shards, T)
    assert not r.passed and "'age'" in only(r, "schema.type").reason and "labels.age" not in checks(r)
    wide = labels.set_column(3, "gender", labels.column("gender").cast(pa.int64()))
    r = validate(wide, shards, T)
    assert checks(r) == {"schema.type"}  # values are still checked (and fine)


def test_image_shard_schema_problems_are_reported(samples):
    labels, shards = tables(samples)
    shards[1] = shards[1].drop_columns(["sha256"]).append_column("extra", pa.array([1] * shards[1].num_rows))
    r = validate(labels, shards, T)
    assert "shard(s) 1" in only(r, "schema.missing_column").reason
    assert "'extra'" in only(r, "schema.unknown_column").reason and not r.passed
    shards[2] = shards[2].drop_columns(["image"])
    r = validate(labels, [*shards, b"not parquet", 42], T)
    assert {"schema.shard", "schema.missing_column"} <= checks(r)
    assert "schema.label_without_image" not in checks(r)  # ids of an unreadable shard are unknown


def test_label_without_image_and_image_without_label(samples):
    labels, shards = tables(samples)
    shards[0] = shards[0].slice(1)  # s0000 loses its image
    r = validate(labels, shards, T)
    assert not r.passed and only(r, "schema.label_without_image").sample_ids == ["s0000"]
    labels, shards = tables(samples)
    r = validate(labels.slice(0, N - 1), shards, T)
    assert only(r, "schema.image_without_label").sample_ids == [f"s{N - 1:04d}"]


def test_sample_ids_splits_and_formats(samples):
    samples[1].sample_id = samples[0].sample_id
    samples[2].sample_id = ""
    samples[3].split = "holdout"
    samples[4].format = "gif"
    samples[5].format = "jpeg"  # bytes are PNG
    r = run(samples)
    assert only(r, "schema.duplicate_sample_id").sample_ids == ["s0000", "s0000"]
    assert only(r, "schema.empty_sample_id").count == 2  # its label row and its image row
    assert only(r, "schema.split").details == {"s0003": "split='holdout'"}
    assert only(r, "schema.format").sample_ids == ["s0004"]
    assert only(r, "images.format_mismatch").sample_ids == ["s0005"]


def test_odd_sizes_and_modes_warn(samples):
    samples[10].image = png(1000, size=20)
    samples[11].image = png(1001, mode="L")
    r = run(samples)
    assert r.passed
    assert only(r, "images.size").details == {"s0010": "20x20"}
    assert only(r, "images.mode").sample_ids == ["s0011"]
    assert r.image_stats["sizes"] == {"16x16": N - 1, "20x20": 1}


def test_sample_ids_are_capped_but_counted(samples):
    for s in samples[:50]:
        s.gender = 7
    issue = only(run(samples, Thresholds(min_group_count=0, max_examples=4)), "labels.gender")
    assert issue.count == 50 and issue.sample_ids == ["s0000", "s0001", "s0002", "s0003"]


def test_json_round_trip_is_stable(samples):
    samples[1].age = 150.0
    r = run(samples)
    text = r.to_json()
    doc = json.loads(text)
    assert doc["passed"] is False and doc["summary"]["error"] == 1
    assert doc["issues"][0]["check"] == "labels.age" and doc["issues"][0]["sample_ids"] == ["s0001"]
    back = ValidationReport.from_json(text)
    assert back.to_json() == text and not back.passed
    labels, shards = tables(samples)
    assert validate(labels, list(reversed(shards)), T).to_json() == text  # shard order does not matter


def test_plot_writes_png(samples, tmp_path: Path):
    samples[1].age = 150.0
    out = run(samples).plot(tmp_path / "sub" / "labels.png")
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 5000
    for s in samples:
        s.age = s.gender = None
    assert run(samples).plot(tmp_path / "fer.png").stat().st_size > 0  # no age/gender panels: no crash


def test_rich_table_and_render(samples):
    samples[6].emotion = 9
    r = run(samples)
    console = Console(record=True, width=200)
    console.print(r.to_rich_table())
    r.render(console)
    text = console.export_text()
    assert "labels.emotion" in text and "s0006" in text and "FAILED" in text


def test_raise_if_failed_names_check_ids_and_hint(samples):
    samples[3].age = 150.0
    samples[4].image = b"junk"
    with pytest.raises(DataValidationError) as err:
        run(samples).raise_if_failed()
    msg = str(err.value)
    assert "labels.age" in msg and "s0003" in msg and "age=150" in msg
    assert "images.decode" in msg and "s0004" in msg
    assert "flotilla data validate" in err.value.hint


def test_bad_thresholds_are_rejected():
    with pytest.raises(SpecError) as err:
        Thresholds(min_group_count=-1, representativeness="maybe", max_missing={"mood swing": 0.1})
    assert len(err.value.problems) == 3
