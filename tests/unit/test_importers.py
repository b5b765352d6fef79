"""Importers of UTKFace folders, FER2013 CSVs and folder+labels CSVs (fixtures built in tmp_path)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flotilla.data.importers import (
    KINDS,
    ImportFormatError,
    ImportProblem,
    ImportResult,
    detect_format,
    import_fer2013,
    import_folder,
    import_source,
    import_utkface,
)
from flotilla.data.layout import Sample, labels_table
from flotilla.errors import FlotillaError, SpecError


def _jpeg(seed: int = 0, size: int = 16) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


def _png(seed: int = 0) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _by_id(samples: list[Sample]) -> dict[str, Sample]:
    return {s.sample_id: s for s in samples}


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


# ------------------------------------------------------------------------------------------ formats


def test_detect_format_uses_magic_bytes_not_extension():
    assert detect_format(_jpeg()) == "jpeg"
    assert detect_format(_png()) == "png"
    assert detect_format(b"GIF89a....") == "unknown"
    assert detect_format(b"") == "unknown"


# ------------------------------------------------------------------------------------------ UTKFace


@pytest.fixture
def utk_dir(tmp_path: Path) -> Path:
    root = tmp_path / "UTKFace"
    _write(root / "25_0_0_20170116174525125.jpg.chip.jpg", _jpeg(1))  # UTK male
    _write(root / "part2" / "3_1_2_20161219140623097.jpg", _jpeg(2))  # UTK female, in a subfolder
    _write(root / "200_5_1_20170101000000000.jpg", _jpeg(3))  # out of range: passed through
    _write(root / "39_1_20170116174525125.jpg.chip.jpg", _jpeg(4))  # real broken name: no race
    _write(root / "abc_0_0_20170101.jpg", _jpeg(5))  # age not an integer
    _write(root / "40_1_3_20170101000000001.jpg", b"not an image at all")  # garbage bytes: kept
    _write(root / "41_0_3_20170101000000002.png", _png(6))  # a PNG named like the rest
    _write(root / ".DS_Store", b"\x00\x01")  # hidden: ignored
    return root


def test_utkface_maps_gender_and_keeps_bytes(utk_dir: Path):
    result = import_utkface(utk_dir)
    samples = _by_id(list(result))
    assert result.complete
    male = samples["utk-25_0_0_20170116174525125"]
    assert (male.age, male.gender, male.emotion, male.split) == (25.0, 1, None, None)  # UTK 0=male -> ours 1
    assert male.image == (utk_dir / "25_0_0_20170116174525125.jpg.chip.jpg").read_bytes()
    assert male.format == "jpeg" and male.source == "25_0_0_20170116174525125.jpg.chip.jpg"
    female = samples["utk-3_1_2_20161219140623097"]
    assert (female.age, female.gender) == (3.0, 0)  # UTK 1=female -> ours 0
    assert female.source == "part2/3_1_2_20161219140623097.jpg"
    assert female.image == (utk_dir / "part2" / "3_1_2_20161219140623097.jpg").read_bytes()


def test_utkface_out_of_range_and_garbage_are_passed_through(utk_dir: Path):
    samples = _by_id(list(import_utkface(utk_dir)))
    odd = samples["utk-200_5_1_20170101000000000"]
    assert (odd.age, odd.gender) == (200.0, 5)
    garbage = samples["utk-40_1_3_20170101000000001"]
    assert garbage.format == "unknown" and garbage.image == b"not an image at all"
    assert samples["utk-41_0_3_20170101000000002"].format == "png"
    assert len(samples) == 5


def test_utkface_broken_names_are_problems_with_source(utk_dir: Path):
    result = import_utkface(utk_dir)
    _, problems = result.collect()
    by_source = {p.source: p.reason for p in problems}
    assert set(by_source) == {"39_1_20170116174525125.jpg.chip.jpg", "abc_0_0_20170101.jpg"}
    assert "3 '_'-separated field(s) instead of 4" in by_source["39_1_20170116174525125.jpg.chip.jpg"]
    assert "age 'abc'" in by_source["abc_0_0_20170101.jpg"]
    assert all(isinstance(p, ImportProblem) and isinstance(p, tuple) for p in problems)
    assert str(problems[0]).startswith(problems[0].source + ": ")


def test_utkface_is_deterministic_and_repeatable(utk_dir: Path):
    result = import_utkface(utk_dir)
    first = [(s.sample_id, s.image) for s in result]
    first_problems = list(result.problems)
    second = [(s.sample_id, s.image) for s in result.samples]
    assert first == second and result.problems == first_problems  # a new pass resets, not appends
    assert [s.sample_id for s in import_utkface(utk_dir)] == [sid for sid, _ in first]


def test_utkface_duplicate_stem_is_a_problem(tmp_path: Path):
    _write(tmp_path / "a" / "1_0_0_2017.jpg", _jpeg(1))
    _write(tmp_path / "b" / "1_0_0_2017.jpg.chip.jpg", _jpeg(2))
    samples, problems = import_utkface(tmp_path).collect()
    assert [s.source for s in samples] == ["a/1_0_0_2017.jpg"]
    assert problems[0].source == "b/1_0_0_2017.jpg.chip.jpg" and "duplicate sample_id" in problems[0].reason


def test_utkface_missing_or_wrong_path_raises(tmp_path: Path):
    with pytest.raises(ImportFormatError, match="does not exist"):
        import_utkface(tmp_path / "nope")
    with pytest.raises(ImportFormatError, match="is not a folder of images"):
        import_utkface(_write(tmp_path / "x.jpg", _jpeg()))


# ------------------------------------------------------------------------------------------ FER2013


def _fer_pixels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (48, 48), dtype=np.uint8)


def _fer_row(emotion: str, pixels: np.ndarray | str, usage: str) -> str:
    text = pixels if isinstance(pixels, str) else " ".join(str(int(v)) for v in pixels.ravel())
    return f"{emotion},{text},{usage}\n"


@pytest.fixture
def fer_csv(tmp_path: Path) -> Path:
    rows = [
        _fer_row("0", _fer_pixels(0), "Training"),
        _fer_row("3", _fer_pixels(1), "PublicTest"),
        _fer_row("6", _fer_pixels(2), "PrivateTest"),
        _fer_row("4", "1 2 3", "Training"),  # row 3: 3 pixels
        "\n",  # blank line: skipped
        _fer_row("2", " ".join(["7"] * 2303 + ["x"]), "Training"),  # row 4: non-integer pixel
        _fer_row("9", _fer_pixels(3), "Training"),  # row 5: emotion out of range
        _fer_row("", _fer_pixels(4), ""),  # row 6: no emotion, no usage
        _fer_row("glad", _fer_pixels(5), "Training"),  # row 7: emotion not an int or name
        _fer_row("1", " ".join(["300"] * 2304), "Training"),  # row 8: pixel > 255
    ]
    return _write(tmp_path / "fer2013.csv", "emotion,pixels,Usage\n" + "".join(rows))


def test_fer_labels_splits_and_pixels(fer_csv: Path):
    result = import_fer2013(fer_csv)
    samples = _by_id(list(result))
    assert sorted(samples) == ["fer-00000", "fer-00001", "fer-00002", "fer-00005", "fer-00006"]
    assert [samples[f"fer-0000{i}"].split for i in range(3)] == ["train", "val", "test"]
    assert [samples[f"fer-0000{i}"].emotion for i in range(3)] == [0, 3, 6]
    for i, seed in [(0, 0), (1, 1), (2, 2), (5, 3), (6, 4)]:
        s = samples[f"fer-{i:05d}"]
        assert s.format == "png" and detect_format(s.image) == "png"
        assert (s.age, s.gender) == (None, None)
        img = Image.open(io.BytesIO(s.image))
        assert img.size == (48, 48) and img.mode == "L"
        assert np.array_equal(np.asarray(img), _fer_pixels(seed))
    assert samples["fer-00005"].emotion == 9  # out of range: passed through
    assert (samples["fer-00006"].emotion, samples["fer-00006"].split) == (None, None)  # missing: None, not 0
    assert samples["fer-00000"].source == "fer2013.csv:line 2 (row 0)"


def test_fer_malformed_rows_are_problems(fer_csv: Path):
    _, problems = import_fer2013(fer_csv).collect()
    by_row = {p.source.split("(row ")[1].rstrip(")"): p.reason for p in problems}
    assert set(by_row) == {"3", "4", "7", "8"}
    assert "3 values, expected 2304" in by_row["3"]
    assert "non-integer value 'x'" in by_row["4"]
    assert "emotion 'glad'" in by_row["7"]
    assert "outside 0..255" in by_row["8"]
    assert any(p.source.startswith("fer2013.csv:line 7 (row 4)") for p in problems)  # line counts the blank line


def test_fer_ids_and_pngs_are_deterministic(fer_csv: Path):
    a, b = list(import_fer2013(fer_csv)), list(import_fer2013(fer_csv))
    assert [(s.sample_id, s.image) for s in a] == [(s.sample_id, s.image) for s in b]


@pytest.mark.parametrize("header", ["emotion,pixels\n", "emotoin,pixels,Usage\n", "emotion,pixels,Usage,extra\n", "\n"])
def test_fer_bad_header_raises_naming_the_expected_one(tmp_path: Path, header: str):
    path = _write(tmp_path / "bad.csv", header + "0,1 2 3,Training\n")
    with pytest.raises(ImportFormatError) as err:
        import_fer2013(path)
    assert isinstance(err.value, SpecError) and isinstance(err.value, FlotillaError)
    assert "emotion,pixels,Usage" in str(err.value) or "empty" in str(err.value)
    if "emotoin" in header:
        assert "did you mean 'emotion'" in str(err.value)


def test_fer_header_is_case_insensitive_and_any_order(tmp_path: Path):
    path = _write(tmp_path / "f.csv", "Usage,Pixels,Emotion\n" + f"Training,{' '.join(['5'] * 2304)},2\n")
    (s,) = list(import_fer2013(path))
    assert (s.emotion, s.split) == (2, "train")


# ------------------------------------------------------------------------------------------ folder + CSV


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    _write(root / "a.jpg", _jpeg(1))
    _write(root / "sub" / "b.png", _png(2))
    _write(root / "c.jpg", _jpeg(3))
    _write(root / "garbage.jpg", b"\x00garbage")
    _write(root / "d.jpg", _jpeg(4))
    _write(tmp_path / "secret.jpg", _jpeg(5))
    _write(
        root / "labels.csv",
        "\n".join(
            [
                "file,age,gender,emotion,split,sample_id",
                "a.jpg,31,Female,happy,train,",
                "sub/b.png,7.5,m,SAD,validation,kid-b",
                "./c.jpg,,,,,",  # all labels missing
                "garbage.jpg,200,5,9,test,",  # out of range: passed through
                "d.jpg,40,1,3,,",  # integers
                "missing.jpg,20,0,0,train,",
                "../secret.jpg,20,0,0,train,",
                "/etc/passwd,20,0,0,train,",
                "a.jpg,old,x,glad,train,again",  # unparseable labels, all reasons listed
                "a.jpg,1,0,0,train,kid-b",  # duplicate sample_id
                "",
            ]
        ),
    )
    return root


def test_folder_labels_names_ints_and_missing(folder: Path):
    result = import_folder(folder)
    s = _by_id(list(result))
    assert sorted(s) == ["a.jpg", "c.jpg", "d.jpg", "garbage.jpg", "kid-b"]
    assert (s["a.jpg"].age, s["a.jpg"].gender, s["a.jpg"].emotion, s["a.jpg"].split) == (31.0, 0, 3, "train")
    assert (s["kid-b"].age, s["kid-b"].gender, s["kid-b"].emotion, s["kid-b"].split) == (7.5, 1, 4, "val")
    assert (s["c.jpg"].age, s["c.jpg"].gender, s["c.jpg"].emotion, s["c.jpg"].split) == (None, None, None, None)
    assert (s["d.jpg"].age, s["d.jpg"].gender, s["d.jpg"].emotion) == (40.0, 1, 3)
    assert s["a.jpg"].image == (folder / "a.jpg").read_bytes() and s["a.jpg"].format == "jpeg"
    assert s["kid-b"].image == (folder / "sub" / "b.png").read_bytes() and s["kid-b"].format == "png"
    assert s["kid-b"].source == "labels.csv:line 3 (sub/b.png)"
    # missing labels stay null in the labels table too
    table = labels_table([s["c.jpg"]]).to_pylist()[0]
    assert (table["age"], table["gender"], table["emotion"]) == (None, None, None)


def test_folder_out_of_range_and_garbage_pass_through(folder: Path):
    g = _by_id(list(import_folder(folder)))["garbage.jpg"]
    assert (g.age, g.gender, g.emotion, g.split, g.format) == (200.0, 5, 9, "test", "unknown")
    assert g.image == b"\x00garbage"


def test_folder_problems(folder: Path):
    samples, problems = import_folder(folder).collect()
    by_line = {int(p.source.split(":line ")[1].split()[0]): p for p in problems}
    assert sorted(by_line) == [7, 8, 9, 10, 11]
    assert by_line[7].reason == "file not found" and by_line[7].source == "labels.csv:line 7 (missing.jpg)"
    assert "'..'" in by_line[8].reason and "secret" in by_line[8].source
    assert "absolute" in by_line[9].reason
    assert all(word in by_line[10].reason for word in ("age 'old'", "gender 'x'", "emotion 'glad'"))
    assert "duplicate sample_id 'kid-b'" in by_line[11].reason
    assert not any("secret" in s.source or s.image == (folder.parent / "secret.jpg").read_bytes() for s in samples)


def test_folder_misspelled_column_suggests_the_right_name(tmp_path: Path):
    _write(tmp_path / "a.jpg", _jpeg())
    csv_path = _write(tmp_path / "meta" / "l.csv", "path,age,emotoin,gendr\na.jpg,1,2,0\n")
    with pytest.raises(ImportFormatError) as err:
        import_folder(tmp_path, csv_path)
    text = str(err.value)
    assert "unknown column 'emotoin' (did you mean 'emotion'?)" in text
    assert "unknown column 'gendr' (did you mean 'gender'?)" in text
    assert "file, path, sample_id, age, gender, emotion, split" in text


def test_folder_path_column_and_csv_outside_folder(tmp_path: Path):
    _write(tmp_path / "imgs" / "a.jpg", _jpeg())
    csv_path = _write(tmp_path / "l.csv", "\ufeffPATH,Gender\na.jpg,MALE\n")  # BOM + upper-case header
    (s,) = list(import_folder(tmp_path / "imgs", csv_path))
    assert (s.sample_id, s.gender, s.age, s.emotion) == ("a.jpg", 1, None, None)


@pytest.mark.parametrize(
    "header,needle", [("age,gender\n", "'file' (or 'path')"), ("file,path\n", "both"), ("file,age,age\n", "more than once")]
)
def test_folder_header_errors(tmp_path: Path, header: str, needle: str):
    _write(tmp_path / "labels.csv", header)
    with pytest.raises(ImportFormatError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        import_folder(tmp_path)


def test_folder_without_labels_csv_raises(tmp_path: Path):
    with pytest.raises(ImportFormatError, match=r"labels\.csv does not exist"):
        import_folder(tmp_path)


def test_folder_undecodable_csv_is_a_problem_not_a_crash(tmp_path: Path):
    _write(tmp_path / "a.jpg", _jpeg())
    _write(tmp_path / "labels.csv", b"file,age\na.jpg,3\n\xff\xfe.jpg,4\n")
    samples, problems = import_folder(tmp_path).collect()
    assert [s.sample_id for s in samples] == ["a.jpg"]
    assert problems == [ImportProblem("labels.csv:line 3", "row is not valid UTF-8; skipped")]


# ------------------------------------------------------------------------------------------ dispatcher


def test_import_source_dispatches(utk_dir: Path, fer_csv: Path, folder: Path):
    assert set(KINDS) == {"utkface", "fer2013", "folder"}
    for kind, path in [("utkface", utk_dir), ("fer2013", fer_csv), ("folder", folder)]:
        result = import_source(kind, path)
        assert isinstance(result, ImportResult) and result.kind == kind
        assert len(list(result)) == 5
    assert len(list(import_source("folder", folder, folder / "labels.csv"))) == 5


def test_import_source_rejects_unknown_kind_and_misplaced_labels(utk_dir: Path):
    with pytest.raises(ImportFormatError, match="did you mean 'utkface'"):
        import_source("utkfce", utk_dir)
    with pytest.raises(ImportFormatError, match="only used by the 'folder' format"):
        import_source("utkface", utk_dir, labels_csv=utk_dir / "x.csv")


def test_fer_bad_bytes_do_not_shift_ids_and_a_huge_field_is_fatal(tmp_path: Path):
    good = " ".join(["1"] * 2304)
    path = _write(
        tmp_path / "f.csv",
        b"emotion,pixels,Usage\n" + f"0,{good},Training\n".encode() + b"\xff,1,Training\n" + f"2,{good},Training\n".encode(),
    )
    samples, problems = import_fer2013(path).collect()
    assert [s.sample_id for s in samples] == ["fer-00000", "fer-00002"]  # the bad row keeps its index
    assert [p.source for p in problems] == ["f.csv:line 3"] and "not valid UTF-8" in problems[0].reason
    with path.open("ab") as fh:  # "field larger than field limit": the rest of the file is unreadable
        fh.write(b"3," + b"9" * 200_000 + b",x\n" + f"4,{good},Training\n".encode())
    with pytest.raises(ImportFormatError) as err:
        list(import_fer2013(path))
    assert f"CSV {path} is malformed at line 5" in err.value.message and "field limit" in err.value.message
    assert "fix line 5 of f.csv" in err.value.hint


STRAY_QUOTE = {
    # an opening quote never closed swallows every later line into one field (csv does not complain)
    "to-the-end": ('file,age\na.jpg,1\nb.jpg,"2\nc.jpg,3\nd.jpg,4\n', 3, "runs on to line 5"),
    # closed further down: three lines become one row
    "closed-later": ('file,age\na.jpg,1\n"b.jpg,2\nc.jpg",3\nd.jpg,4\n', 3, "runs on to line 4"),
    # a stray delimiter: the row has a field too many
    "extra-field": ("file,age\na.jpg,1\nb.jpg,2,\nd.jpg,4\n", 3, "has 3 field(s), expected 2"),
    "missing-field": ("file,age\na.jpg,1\nb.jpg\nd.jpg,4\n", 3, "has 1 field(s), expected 2"),
}


@pytest.mark.parametrize("case", sorted(STRAY_QUOTE))
def test_folder_csv_with_broken_structure_is_fatal_naming_file_and_line(case, tmp_path: Path):
    text, line, why = STRAY_QUOTE[case]
    for f in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        _write(tmp_path / f, _jpeg())
    _write(tmp_path / "labels.csv", text)
    with pytest.raises(ImportFormatError) as err:
        import_folder(tmp_path).collect()
    assert f"labels.csv is malformed at line {line}" in err.value.message and why in err.value.message
    assert "nothing was imported" in err.value.message and f"fix line {line} of labels.csv" in err.value.hint


def test_fer_csv_with_a_stray_quote_is_fatal(tmp_path: Path):
    rows = [_fer_row(str(i), _fer_pixels(i), "Training") for i in range(4)]
    rows[1] = rows[1].replace(",", ',"', 1)  # emotion,"pixels... : the quote runs to the end of the file
    path = _write(tmp_path / "fer.csv", "emotion,pixels,Usage\n" + "".join(rows))
    with pytest.raises(ImportFormatError, match=r"fer\.csv is malformed at line 3: a quoted field opened on line 3"):
        list(import_fer2013(path))
    rows[1] = "1,2,3,Training\n"  # an unquoted comma: four fields
    _write(path, "emotion,pixels,Usage\n" + "".join(rows))
    with pytest.raises(ImportFormatError, match="line 3: the row has 4 field"):
        list(import_fer2013(path))


def test_parse_label_variants():
    from flotilla.data.importers import parse_label

    assert parse_label("gender", " F ") == 0 and parse_label("gender", "Male") == 1
    assert parse_label("gender", "1.0") == 1 and parse_label("gender", "-3") == -3
    assert "did you mean 'female'" in parse_label("gender", "femal")
    assert parse_label("emotion", "Surprise") == 5 and parse_label("emotion", "12") == 12
    assert "did you mean 'fear'" in parse_label("emotion", "feer")
    assert parse_label("age", "200") == 200.0 and parse_label("age", "") is None
    assert all(parse_label(c, "  ") is None for c in ("age", "gender", "emotion"))


def test_symlinks_out_of_the_import_folder_are_refused_not_uploaded(tmp_path: Path):
    secret = b'{"secret_access_key": "do-not-upload"}'
    home = tmp_path / "home"
    home.mkdir()
    (home / "credentials.json").write_bytes(secret)
    (home / "private").mkdir()
    (home / "private" / "x.jpg").write_bytes(secret)
    utk = tmp_path / "utk"
    utk.mkdir()
    (utk / "20_1_0_20170101.jpg").write_bytes(_jpeg(1))
    (utk / "30_0_0_20170101.jpg").symlink_to(home / "credentials.json")  # a file name that parses, pointing out
    (utk / "25_1_0_20170101.jpg").symlink_to(utk / "20_1_0_20170101.jpg")  # a link inside the folder is fine
    samples, problems = import_utkface(utk).collect()
    assert sorted(s.source for s in samples) == ["20_1_0_20170101.jpg", "25_1_0_20170101.jpg"]
    assert [(p.source, "outside the import folder" in p.reason) for p in problems] == [("30_0_0_20170101.jpg", True)]

    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "ok.jpg").write_bytes(_jpeg(2))
    (folder / "face.jpg").symlink_to(home / "credentials.json")
    (folder / "linked").symlink_to(home / "private", target_is_directory=True)
    (folder / "labels.csv").write_text("file,age\nok.jpg,30\nface.jpg,31\nlinked/x.jpg,32\n")
    samples, problems = import_folder(folder).collect()
    assert [s.source for s in samples] == ["labels.csv:line 2 (ok.jpg)"]
    assert [p.source for p in problems] == ["labels.csv:line 3 (face.jpg)", "labels.csv:line 4 (linked/x.jpg)"]
    assert all("outside the import folder" in p.reason for p in problems)
    assert all(secret not in s.image for s in samples)


def test_a_default_labels_csv_linking_out_of_the_folder_is_refused(tmp_path: Path):
    outside = tmp_path / "credentials.json"
    outside.write_text('{"secret_access_key": "do-not-quote"}\n')
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "labels.csv").symlink_to(outside)
    with pytest.raises(ImportFormatError, match="symbolic link") as err:
        import_folder(folder)
    assert "do-not-quote" not in str(err.value)
