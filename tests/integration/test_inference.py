"""Batch inference end to end: a promoted model predicts a fresh unlabelled dataset as a job on a two-node cluster.

One flotilla local cluster for the module (head + one worker node, 1 CPU each), the session's real
lakeFS hub. A tiny family is trained as a job and promoted (``merge_into: main``, ``alias:
production``); an ``infer`` job runs it over an unlabelled dataset with two predictor actors. The
predictions must be on an ``infer-*`` branch with their lineage, one row per sample, equal to the
same model run in this process. Bad input (an image size the model was not trained on, an empty
split, an unknown ref) fails on the driver before a branch or a job exists.
"""

from __future__ import annotations

import io
import json
import time
import uuid

import numpy as np
import pyarrow.parquet as pq
import pytest

from flotilla.data.api import generate
from flotilla.data.loader import HubDataset
from flotilla.data.pinning import resolve_data
from flotilla.data.store import read_manifest
from flotilla.data.synthetic import FaceSpec
from flotilla.data.validate import Thresholds
from flotilla.errors import NotFoundError, SpecError
from flotilla.jobs.handle import list_jobs
from flotilla.jobs.submission import submit
from flotilla.lineage import InferenceCommit, read_commit
from flotilla.loop import infer, load_model
from flotilla.registry import read_card, resolve

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

N_INCOMING = 150


@pytest.fixture(scope="module")
def data_repo(hub):
    name = f"t-infer-{uuid.uuid4().hex[:8]}"
    hub.ensure_repo(name)
    t0 = time.monotonic()
    generate(hub, name, "faces", 300, seed=5, thresholds=Thresholds(min_group_count=2))
    incoming = generate(hub, name, "incoming", N_INCOMING, seed=9, labelled=False)
    generate(hub, name, "small", 12, seed=11, spec=FaceSpec(size=32), labelled=False)
    generate(hub, name, "one", 1, seed=12, labelled=False)
    assert incoming.manifest.labelled is False and incoming.manifest.label_counts == {"age": 0, "gender": 0, "emotion": 0}
    print(f"datasets generated: {time.monotonic() - t0:.1f}s")
    yield hub.repo(name)
    hub.delete_repo(name)


@pytest.fixture(scope="module")
def promoted(cluster, data_repo):
    """A tiny family trained as a job and promoted to ``fam@production`` on main."""
    family = {
        "name": "fam",
        "data": {"repo": data_repo.name, "dataset": "faces", "ref": "main"},
        "epochs": 1,
        "batch_size": 64,
        "model": {"width": 8},
        "tracking": {"wandb": False},
        "scaling": {"workers": 1, "cpus_per_worker": 1},
        "merge_into": "main",
        "alias": "production",
    }
    t0 = time.monotonic()
    handle = submit({"kind": "train", "name": "train-for-infer", "family": family})
    assert handle.wait(timeout=400) == "SUCCEEDED", handle.logs()[-4000:]
    print(f"train job: {time.monotonic() - t0:.1f}s")
    return handle.result()


@pytest.fixture(scope="module")
def inferred(promoted, data_repo):
    spec = {
        "kind": "infer",
        "name": "infer-test",
        "model": "fam@production",
        "repo": data_repo.name,
        "data_ref": "main",
        "dataset": "incoming",
        "batch_size": 32,
        "concurrency": 2,
        "cpus_per_actor": 0.5,
        "merge_into": "main",
    }
    t0 = time.monotonic()
    handle = submit(spec)
    try:
        final = handle.wait(timeout=240)
    except Exception:
        handle.stop()
        pytest.fail(f"infer job did not end: {handle.logs()[-6000:]}")
    print(f"infer job: {time.monotonic() - t0:.1f}s")
    assert final == "SUCCEEDED", handle.logs()[-4000:]
    return handle, handle.result()


def test_unlabelled_data_passes_the_gate_only_as_declared(data_repo):
    m = read_manifest(data_repo, "main", "incoming")
    assert not m.labelled and m.provenance["source"] == "synthetic"
    assert read_manifest(data_repo, "main", "faces").labelled


def test_infer_job_commits_predictions_with_their_lineage(inferred, promoted, data_repo, hub):
    handle, result = inferred
    location = resolve(hub, "fam@production", data_repo.name)
    card = read_card(data_repo, location)
    input_commit = handle.pinned.data_ref
    assert handle.pinned.model == location.uri and handle.pinned.pinned["data_commit"] == input_commit
    # pinned to the dataset's content commit (the last that changed it), not main's head: other datasets came after
    assert input_commit == data_repo.log("main", limit=1, prefix="datasets/incoming/")[0].id != data_repo.resolve("main")
    assert handle.info().metadata["flotilla.model_uri"] == location.uri
    assert result["ok"] and result["rows"] == N_INCOMING and result["samples_per_s"] > 0
    assert result["branch"].startswith("infer-") and result["merge_commit"]
    assert result["path"] == f"predictions/{location.run_id}/family/incoming@{input_commit[:12]}/all/"
    manifest = json.loads(data_repo.get(result["commit"], result["path"] + "predictions.json"))
    assert manifest["input_commit"] == input_commit and manifest["rows"] == N_INCOMING and manifest["files"] == result["files"]
    record = read_commit(data_repo.commit_info(result["commit"]).metadata)
    assert record == InferenceCommit(location.uri, card.data.commit, input_commit, "incoming", "", N_INCOMING)
    assert card.data.commit == promoted["data_commit"] != input_commit  # main moved on with the model's merge
    assert "[flotilla] infer incoming: " in handle.logs() and f"{N_INCOMING}/{N_INCOMING} rows" in handle.logs()
    # merged: main holds the same predictions
    for f in result["files"]:
        assert data_repo.stat("main", f).checksum == data_repo.stat(result["commit"], f).checksum


def test_predictions_are_one_row_per_sample_and_match_the_model_in_process(inferred, data_repo, hub):
    result = inferred[1]
    table = pq.read_table(io.BytesIO(data_repo.get(result["commit"], result["files"][0])))
    assert len(result["files"]) == 1 and table.num_rows == N_INCOMING
    location = resolve(hub, "fam@production", data_repo.name)
    model = load_model(location, hub.credentials)
    data = HubDataset(resolve_data(hub, data_repo.name, result["input_commit"], "incoming"), hub.credentials, image_size=64)
    ids, images = [], []
    for i in range(len(data.manifest.shards)):
        s_ids, s_images = data.shard_samples(i)
        ids, images = ids + s_ids, images + s_images
    got = table.to_pydict()
    assert sorted(got["sample_id"]) == sorted(ids) and len(set(ids)) == N_INCOMING
    assert table.column_names == [
        "sample_id", "age", "gender", "gender_probs", "emotion", "emotion_probs", "embedding"
    ]  # fmt: skip
    width = model.backbone.out_features
    assert table.schema.field("embedding").type.list_size == width and width > 0
    for col, k in (("gender_probs", 2), ("emotion_probs", 7)):
        probs = np.array(got[col])
        assert probs.shape == (N_INCOMING, k) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    order = {sid: i for i, sid in enumerate(got["sample_id"])}
    preds, features = model.predict_with_embedding(np.stack(images))
    rows = [order[s] for s in ids]
    assert np.allclose(np.array(got["embedding"])[rows], features.numpy(), atol=1e-4)
    assert np.allclose(np.array(got["age"])[rows], preds["age"].numpy(), atol=1e-3)
    assert np.allclose(np.array(got["emotion_probs"])[rows], preds["emotion"].numpy(), atol=1e-5)
    assert (np.array(got["emotion"])[rows] == preds["emotion"].numpy().argmax(axis=1)).all()
    assert np.allclose(np.array(got["gender_probs"])[rows][:, 1], preds["gender"].numpy(), atol=1e-5)


def _infer_branches(repo) -> set[str]:
    return {b for b in repo.branches() if b.startswith("infer-")}


def test_bad_input_fails_before_anything_is_written(promoted, data_repo, hub):
    before, jobs = _infer_branches(data_repo), {j.submission_id for j in list_jobs()}
    common = {"hub": hub, "repo": data_repo.name}
    with pytest.raises(SpecError, match=r"trained on 64x64 images .* 'small' holds 32x32") as info:
        infer(model="fam@production", data_ref="main", dataset="small", **common)
    assert "--allow-resize" in info.value.hint
    one = read_manifest(data_repo, "main", "one").counts
    empty = next(s for s in ("train", "val", "test") if one[s] == 0)
    with pytest.raises(SpecError, match=f"split '{empty}' of dataset 'one' .* has no samples"):
        infer(model="fam@production", data_ref="main", dataset="one", split=empty, **common)
    with pytest.raises(NotFoundError, match="no-such-branch"):
        infer(model="fam@production", data_ref="no-such-branch", dataset="incoming", **common)
    with pytest.raises(NotFoundError):
        infer(model="fam@no-such-alias", data_ref="main", dataset="incoming", **common)
    with pytest.raises(NotFoundError, match="no-such-branch"):  # a job is refused on submission, not on the cluster
        submit({"kind": "infer", "name": "bad", "model": "fam@production", "repo": data_repo.name,
                "data_ref": "no-such-branch", "dataset": "incoming"})  # fmt: skip
    assert _infer_branches(data_repo) == before and {j.submission_id for j in list_jobs()} == jobs


def test_cli_says_what_is_wrong_without_a_traceback(promoted, data_repo):
    from typer.testing import CliRunner

    from flotilla.cli import app

    for args, words in (
        (["fam@production", "--data", f"{data_repo.name}/main/small"], "32x32"),
        (["fam@production", "--data", f"{data_repo.name}/main"], "<repo>/<ref>/<dataset>"),
    ):
        out = CliRunner().invoke(app, ["infer", *args], env={"COLUMNS": "250"})
        text = " ".join(out.output.split())
        assert out.exit_code == 1 and "error:" in text and words in text and "Traceback" not in text, out.output


def test_monitor_job_pins_model_and_data_and_commits_its_report(inferred, data_repo, hub):
    """A scheduled check as a Ray job: the alias and the ref are pinned on submission, the predictions the infer job
    made are found (not remade), and the report lands on a monitor-* branch; the job succeeds and its result says."""
    location = resolve(hub, "fam@production", data_repo.name)
    spec = {"kind": "monitor", "name": "watch", "model": "fam@production", "repo": data_repo.name, "current": "main",
            "dataset": "incoming", "permutations": 100}  # fmt: skip
    before = _infer_branches(data_repo)
    handle = submit(spec)
    assert handle.wait(timeout=240) == "SUCCEEDED", handle.logs()[-4000:]
    assert handle.pinned.model == location.uri and handle.pinned.current == data_repo.resolve("main")
    result = handle.result()
    assert result["model_uri"] == location.uri and result["branch"].startswith("monitor-") and result["verdict"]["tests"]
    # the infer job merged its predictions into main: found at the pinned commit, not remade (the reference's were made)
    assert result["current"]["predictions"]["ref"] == handle.pinned.current and len(_infer_branches(data_repo) - before) == 1
    assert data_repo.exists(result["commit"], result["report_path"] + "report.html")
    assert "monitor: " in handle.logs() and ("ALARM" in handle.logs() or "no alarm" in handle.logs())
