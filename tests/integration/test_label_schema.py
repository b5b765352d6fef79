"""A dataset declares its labels: a UTKFace-format folder lands with its ethnicity column, and a family trains
a fourth task on it through the normal train path, with no code change (issue 19's first "done when")."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from tests.integration.helpers import tiny

from flotilla.data import HubDataset, import_dataset, read_labels, read_manifest, relabel, resolve_data, synthetic_samples
from flotilla.data.importers import ETHNICITIES, UTKFACE_SCHEMA
from flotilla.data.report import Thresholds
from flotilla.errors import SpecError
from flotilla.training import train

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

REPO = "schema-tests"
N = 300
ETHNICITY = {"name": "ethnicity", "kind": "multiclass", "num_classes": 5}


@pytest.fixture(scope="module")
def utk_folder(tmp_path_factory):
    """Synthetic faces saved as UTKFace names them: ``<age>_<gender: 0 male, 1 female>_<race>_<datetime>.jpg``."""
    root = tmp_path_factory.mktemp("UTKFace")
    for i, s in enumerate(synthetic_samples(N, seed=11)):
        with Image.open(io.BytesIO(s.image)) as im:
            im.convert("RGB").save(buf := io.BytesIO(), format="JPEG", quality=90)
        name = f"{round(s.age or 0)}_{1 - (s.gender or 0)}_{i % 5}_20170109{i:09d}.jpg"
        (root / name).write_bytes(buf.getvalue())
    return root


@pytest.fixture(scope="module")
def utk(hub, utk_folder):
    hub.ensure_repo(REPO)
    thresholds = Thresholds(min_group_count=3, representativeness="warning")
    result, problems = import_dataset(hub, REPO, "utk", "utkface", utk_folder, thresholds=thresholds)
    assert not problems and result.passed, result.report.summary()
    yield hub.repo(REPO)
    hub.delete_repo(REPO)


def test_the_import_declares_ethnicity_and_keeps_it(utk, hub, tmp_path, utk_folder):
    manifest = read_manifest(utk, "main", "utk")
    assert manifest.label_schema == UTKFACE_SCHEMA and manifest.label_schema["ethnicity"].classes == ETHNICITIES
    assert manifest.label_counts == {"age": N, "gender": N, "emotion": 0, "ethnicity": N}
    labels = read_labels(utk, "main", "utk")
    by_id = dict(zip(labels.column("sample_id").to_pylist(), labels.column("ethnicity").to_pylist(), strict=True))
    assert all(by_id["utk-" + p.name.split(".")[0]] == int(p.name.split("_")[2]) for p in utk_folder.iterdir())
    ds = HubDataset(resolve_data(hub, REPO, "main", "utk"), hub.credentials, cache_dir=tmp_path / "c", image_size=32)
    batch = next(ds.iter_batches("train", 32))
    assert batch["mask_ethnicity"].all() and set(batch["ethnicity"]) <= set(range(5)) and not batch["mask_emotion"].any()


def test_a_family_trains_a_fourth_task_on_the_declared_column(utk, hub, local_ray):
    spec = tiny("eth", data={"repo": REPO, "dataset": "utk"}, tasks=["age", "gender", ETHNICITY], epochs=1)
    (model,) = train(spec, hub=hub).models
    assert model.tasks == ["age", "gender", "ethnicity"]
    assert {"ethnicity/accuracy", "ethnicity/macro_f1", "age/mae", "gender/accuracy"} <= set(model.metrics)
    assert 0.0 <= model.metrics["ethnicity/accuracy"] <= 1.0


def test_a_task_that_does_not_fit_the_dataset_fails_before_training(utk, hub):
    with pytest.raises(SpecError) as err:
        train(tiny("eth4", data={"repo": REPO, "dataset": "utk"}, tasks=[{**ETHNICITY, "num_classes": 4}, "emotion"]), hub=hub)
    assert "task 'ethnicity' has num_classes 4, but column 'ethnicity' of 'utk' has 5 classes" in err.value.message
    assert "ethnicity (categorical: White, Black, Asian, Indian, Others)" in (err.value.hint or "")
    assert not [b for b in utk.branches() if "eth4" in b]  # refused before any run branch


def test_a_label_fix_of_the_declared_column_goes_through_the_gate(utk, hub):
    labels = read_labels(utk, "main", "utk")
    row = labels.column("ethnicity").to_pylist().index(0)  # a White sample, to become Indian
    sid = labels.column("sample_id")[row].as_py()
    fixed = relabel(hub, REPO, "utk", {sid: {"ethnicity": "Indian"}}, reason="test")
    after = read_labels(utk, "main", "utk")
    assert fixed.changed == {"ethnicity": 1} and after.column("ethnicity")[row].as_py() == ETHNICITIES.index("Indian")
    assert read_manifest(utk, "main", "utk").label_schema == UTKFACE_SCHEMA  # the fix (a delta) keeps the declaration
