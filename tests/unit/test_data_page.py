"""The data report's pure parts: grouping values, counting, picking samples, the grid's geometry, escaping."""

from __future__ import annotations

import dataclasses
import io

import pyarrow as pa
import pytest
from PIL import Image

from flotilla.data.findings import AuditSummary
from flotilla.data.layout import Manifest, labels_entry
from flotilla.data.page import GridLayout, ReportColumn, columns_of
from flotilla.data.page.columns import NULL, column_named
from flotilla.data.page.html import ReportData, Thumb, render
from flotilla.data.page.sources import AuditView, Change
from flotilla.data.page.stats import crosstab, distribution, pick, split_counts
from flotilla.data.page.thumbs import data_uri, grid_png, thumbnail
from flotilla.data.schema import FACE_SCHEMA, LabelColumn, LabelSchema
from flotilla.errors import SpecError

AGE = ReportColumn("age", "regression", range=(0.0, 120.0))
GENDER = ReportColumn("gender", "binary", ("female", "male"))
EVIL = "<script>alert('x')</script>"


def _png(colour: tuple[int, int, int], size: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def _labels() -> pa.Table:
    return pa.table(
        {
            "sample_id": ["a", "b", "c", "d", "e"],
            "split": ["train", "train", "val", "test", "train"],
            "age": [3.0, 45.5, None, 95.0, 44.0],
            "gender": [0, 1, 1, None, 1],
        }
    )


def test_values_fall_into_classes_and_bands_and_the_rest_says_why():
    assert [AGE.group(v) for v in (0.0, 9.9, 45.5, 79.0, 95.0, 120.0)] == ["0-9", "0-9", "40-49", "70-79", "80+", "80+"]
    assert AGE.group(None) == AGE.group(float("nan")) == NULL and AGE.group(130.0) == "invalid (130)"
    assert [GENDER.group(v) for v in (0, 1, 2, 0.5, None)] == ["female", "male", "invalid (2)", "invalid (0.5)", NULL]
    assert GENDER.label(1) == "male" and AGE.label(45.0) == "45" and AGE.label(45.25) == "45.2"
    ret = ReportColumn("score", "regression", range=(0.0, 8.0))
    assert ret.groups()[0] == "0-1" and ret.group(7.5) == "7-8" and ret.group(8.0) == "7-8" and ret.slice_name == "score band"


def test_the_columns_come_from_the_manifest_and_are_found_by_column_or_slice_name():
    assert [c.name for c in columns_of(Manifest("d", {}, {}, [], {}, {}))] == ["age", "gender", "emotion"]  # the default
    declared = LabelSchema.from_list(
        [*FACE_SCHEMA.to_list()[:2], {"name": "emotion", "kind": "categorical", "classes": ["calm", "cross"]}]
    )
    cols = columns_of(
        Manifest(
            "d", {}, {}, [], {}, {}, labels=labels_entry(declared.extended(LabelColumn("ethnicity", "categorical", ("a", "b"))))
        )
    )
    assert [(c.name, c.kind) for c in cols] == [
        ("age", "regression"),
        ("gender", "binary"),
        ("emotion", "categorical"),
        ("ethnicity", "categorical"),
    ]
    assert cols[2].classes == ("calm", "cross") and cols[0].range == (0.0, 120.0)
    assert column_named(cols, "age_band") is column_named(cols, "age band") is column_named(cols, "age") is cols[0]
    with pytest.raises(SpecError, match="no label column 'colour'") as exc:
        column_named(cols, "colour")
    assert "age band" in (exc.value.hint or "")


def test_distributions_count_per_split_and_crosstabs_per_slice():
    t = _labels()
    assert split_counts(t) == {"train": 3, "val": 1, "test": 1}
    d = distribution(t, GENDER)
    assert d.groups == ("female", "male", NULL)
    assert d.counts["all"] == {"female": 1, "male": 3, NULL: 1} and d.counts["train"] == {"female": 1, "male": 2}
    x = crosstab(t, AGE, GENDER)
    assert x.rows[-1] == NULL and x.counts[("40-49", "male")] == 2 and x.counts[("80+", NULL)] == 1


def test_picks_are_capped_and_the_same_whatever_the_input_order():
    ids = [f"s{i}" for i in range(40)]
    groups = ["x" if i % 4 else "y" for i in range(40)]
    first = pick(ids, groups, 3)
    again = pick(ids[::-1], groups[::-1], 3)
    assert first == again and {len(v) for v in first.values()} == {3}
    assert all(groups[ids.index(s)] == g for g, chosen in first.items() for s in chosen)


def test_the_grid_png_has_the_layouts_size_with_each_thumbnail_in_its_cell():
    layout = GridLayout(rows=2, per_row=3, thumb=16)
    assert layout.size == (120 + 3 * 20 + 4, 2 * 20 + 4)
    png = grid_png({"red": [_png((255, 0, 0))] * 3, "blue": [_png((0, 0, 255))]}, per_row=3, thumb=16)
    with Image.open(io.BytesIO(png)) as im:
        assert im.size == layout.size
        x, y = layout.cell(0, 2)
        assert im.getpixel((x + 8, y + 8)) == (255, 0, 0)
        x, y = layout.cell(1, 0)
        assert im.getpixel((x + 8, y + 8)) == (0, 0, 255)
        x, y = layout.cell(1, 1)
        assert im.getpixel((x + 8, y + 8)) == (255, 255, 255)  # blue has one image: the rest of its row stays blank


def test_thumbnails_are_square_pngs_inlined_as_data_uris():
    small = thumbnail(_png((0, 255, 0), 50), 64)
    with Image.open(io.BytesIO(small)) as im:
        assert im.size == (64, 64) and im.format == "PNG"
    assert data_uri(small).startswith("data:image/png;base64,iVBOR")


def test_every_user_string_on_the_page_is_escaped():
    summary = AuditSummary("a1", "r", EVIL, "c" * 40, EVIL, "c" * 40, "cv", ("gender",), 1, {EVIL: 1})
    row = {"sample_id": EVIL, "split": "train", "issues": [EVIL], "worst_score": 0.1, "label_score_gender": 0.1,
           "given_gender": 0.0, "suggested_gender": 1.0}  # fmt: skip
    evil = pa.table({"sample_id": [EVIL], "split": ["train"], EVIL: [0]})
    data = ReportData(
        repo="r", ref="main", commit="c" * 40, dataset=EVIL, split=None, generated="now",
        columns=(AGE, GENDER), splits={"train": 1}, distributions=[distribution(evil, ReportColumn(EVIL, "binary", (EVIL,)))],
        crosstabs=[], grids=[(EVIL, {EVIL: [Thumb(EVIL, data_uri(_png((1, 2, 3))), EVIL)]})], validation=None,
        audit=AuditView("audit-x", summary, [row], 1), audit_thumbs={EVIL: 'x" onerror="alert(1)'},
        history=[Change("c" * 40, "now", "edit", EVIL, EVIL)],
    )  # fmt: skip
    page = render(data)
    assert "<script" not in page and 'onerror="' not in page
    assert page.count("&lt;script&gt;") >= 8 and "female → male" in page
    assert "another commit" not in page
    assert "another commit" in render(dataclasses.replace(data, commit="d" * 40))


def test_without_an_audit_the_page_says_how_to_run_one():
    data = ReportData("r", "main", "c" * 40, "faces", "val", "now", (AGE,), {"val": 0}, [], [], [], None, None,
                      audit_command="flotilla data audit r/main/faces --model <model>")  # fmt: skip
    page = render(data)
    assert "No audit of this dataset yet" in page and "flotilla data audit r/main/faces --model &lt;model&gt;" in page
    assert "split val" in page and "No validation.json" in page
