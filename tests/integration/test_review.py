"""An audit's review loop end to end: a real lakeFS, a real Label Studio, the scripted reviewer.

A small synthetic dataset gets three flipped labels (relabelled away from the truth) and one exact
duplicate (appended). An audit's findings are written on an ``audit-*`` branch following
:mod:`flotilla.data.findings` (the flips, the duplicate pair, and one false alarm: a right label the
"model" doubts). The review sends the six flagged samples to Label Studio with the current labels and
the suggestions; the scripted reviewer accepts the right suggestions, keeps the right labels and
removes the duplicate; receiving merges one validated change into main, linked to the audit. Before
that, a Label Studio that does not answer and a gate that refuses leave main untouched.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from urllib.parse import parse_qs, urlparse

import pyarrow as pa
import pytest

from flotilla.active.rounds import parquet_bytes
from flotilla.audit import annotate_review, receive_review, review_status, send_review
from flotilla.audit.reviewstate import image_path, review_branch
from flotilla.data import HubDataset, append, generate, read_labels, read_manifest, relabel
from flotilla.data.deltas import Delta, deltas_prefix
from flotilla.data.findings import FINDINGS, FINDINGS_COLUMNS, SUMMARY, AuditSummary, audit_branch, audit_dir, task_columns
from flotilla.data.layout import Sample
from flotilla.data.page.sources import history
from flotilla.data.pinning import DataRef
from flotilla.data.report import Thresholds
from flotilla.errors import AuditError, DataValidationError, LabelStudioUnavailableError
from flotilla.hub.experiment import Retention
from flotilla.hub.server import free_port
from flotilla.labelstudio import LabelStudioClient
from flotilla.lineage import DataReview, Key, read_commit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
SMALL = Thresholds(min_group_count=3)
TASKS = ("age", "gender", "emotion")
AUDIT_ID = "20261206-t0001"


@pytest.fixture(scope="module")
def client(label_client):
    return label_client


def _findings(labels: pa.Table, flags: dict[str, dict]) -> pa.Table:
    """Every sample's findings row per the contract; ``flags``: sample id → {issues, score, suggested, dup}."""
    cols: dict[str, list] = {c: [] for c in FINDINGS_COLUMNS} | {c: [] for t in TASKS for c in task_columns(t)}
    for row in labels.to_pylist():
        f = flags.get(row["sample_id"], {})
        issues = f.get("issues", [])
        cols["sample_id"].append(row["sample_id"])
        cols["split"].append(row["split"])
        cols["outlier"].append(False)
        cols["outlier_score"].append(0.8)
        cols["near_duplicate"].append("near_duplicate" in issues)
        cols["near_duplicate_score"].append(0.0 if "near_duplicate" in issues else 0.7)
        cols["near_duplicate_of"].append(f.get("dup"))
        cols["exact_duplicate_of"].append(f.get("dup") if "exact_duplicate" in issues else None)
        cols["issues"].append(issues)
        cols["worst_score"].append(f.get("score", 1.0))
        for t in TASKS:
            flag, score, given, suggested = task_columns(t)
            cols[flag].append(f"label:{t}" in issues)
            cols[score].append(f.get("score", 0.9) if f"label:{t}" in issues else 0.9)
            cols[given].append(None if row[t] is None else float(row[t]))
            cols[suggested].append(float(f.get("suggested", {}).get(t, row[t])))
    f32, f64 = pa.float32(), pa.float64()
    types = {"outlier_score": f32, "near_duplicate_score": f32, "worst_score": f32, "issues": pa.list_(pa.string())}
    types |= {c: (f32 if c.startswith("label_score") else f64) for t in TASKS for c in task_columns(t)[1:]}
    types |= {"near_duplicate_of": pa.string(), "exact_duplicate_of": pa.string()}
    return pa.table({c: pa.array(v, types.get(c)) for c, v in cols.items()})


@pytest.fixture(scope="module")
def world(hub):
    """The noisy dataset on main, its truth, and an audit of it on ``audit-faces-<id>``."""
    name = f"t-review-{uuid.uuid4().hex[:8]}"
    hub.ensure_repo(name)
    repo = hub.repo(name)
    generate(hub, name, "faces", 160, seed=7, thresholds=SMALL)
    clean = read_labels(repo, "main", "faces")
    truth = {r["sample_id"]: {t: float(r[t]) for t in TASKS} for r in clean.to_pylist()}
    ids = clean.column("sample_id").to_pylist()
    flipped = {ids[3]: {"emotion": (int(truth[ids[3]]["emotion"]) + 1) % 7},
               ids[10]: {"emotion": (int(truth[ids[10]]["emotion"]) + 3) % 7, "gender": 1 - int(truth[ids[10]]["gender"])},
               ids[20]: {"emotion": (int(truth[ids[20]]["emotion"]) + 2) % 7}}  # fmt: skip
    relabel(hub, name, "faces", flipped, reason="injected noise")
    original = ids[5]
    data = HubDataset(DataRef(name, repo.resolve("main"), "faces"), hub.credentials)
    shard = next(t for t in (data.read_shard(s) for s in data.manifest.shards) if original in t.column("sample_id").to_pylist())
    i = shard.column("sample_id").to_pylist().index(original)
    row = next(r for r in clean.to_pylist() if r["sample_id"] == original)
    dup = Sample("dup-0005", shard.column("image")[i].as_py(), shard.column("format")[i].as_py(), row["age"],
                 row["gender"], row["emotion"], split=row["split"])  # fmt: skip
    append(hub, name, "faces", [dup], reason="a copy slipped in")
    truth[dup.sample_id] = dict(truth[original])
    noisy = read_labels(repo, "main", "faces")
    fine = ids[30]
    flags = {sid: {"issues": ["label:emotion"] + (["label:gender"] if "gender" in ch else []), "score": 0.01 + k / 100,
                   "suggested": {t: truth[sid][t] for t in ch}} for k, (sid, ch) in enumerate(flipped.items())}  # fmt: skip
    flags[fine] = {"issues": ["label:emotion"], "score": 0.2, "suggested": {"emotion": (int(truth[fine]["emotion"]) + 1) % 7}}
    flags[dup.sample_id] = {"issues": ["exact_duplicate", "near_duplicate"], "score": 0.0, "dup": original}
    flags[original] = {"issues": ["exact_duplicate", "near_duplicate"], "score": 0.0, "dup": dup.sample_id}
    data_commit = repo.resolve("main")
    summary = AuditSummary(AUDIT_ID, name, "faces", data_commit, "test://no-model", "", "probe", TASKS, noisy.num_rows,
                           {"label:emotion": 4, "label:gender": 1, "exact_duplicate": 2, "near_duplicate": 2},
                           created=time.time())  # fmt: skip
    keep = Retention(on_success="keep", on_failure="delete")
    with repo.transact(f"faces-{AUDIT_ID}", "main", branch=audit_branch("faces", AUDIT_ID), retention=keep) as exp:
        exp.put(audit_dir("faces", AUDIT_ID) + FINDINGS, parquet_bytes(_findings(noisy, flags)))
        exp.put(audit_dir("faces", AUDIT_ID) + SUMMARY, summary.to_json())
        exp.commit("audit findings (written by the test, per flotilla.data.findings)")
    yield {"repo": repo, "truth": truth, "flipped": flipped, "dup": dup.sample_id, "original": original, "fine": fine,
           "samples": noisy.num_rows, "data_commit": data_commit}  # fmt: skip
    hub.delete_repo(name)


@pytest.fixture(scope="module")
def sent(hub, world, client):
    return send_review(hub, world["repo"].name, AUDIT_ID, client=client)


def test_the_flagged_samples_reach_label_studio_worst_first_with_images_labels_and_suggestions(hub, world, sent, client):
    repo = world["repo"]
    assert sent.step == "sent" and sent.branch == review_branch("faces", AUDIT_ID) and sent.data_commit == world["data_commit"]
    assert sent.sent[:2] in ((world["dup"], world["original"]), (world["original"], world["dup"]))
    assert set(sent.sent) == {*world["flipped"], world["dup"], world["original"], world["fine"]}
    tasks = {t.data["sample_id"]: t for t in client.tasks(sent.project_id)}
    assert tasks.keys() == set(sent.sent)
    flip = next(iter(world["flipped"]))
    uri = base64.b64decode(parse_qs(urlparse(tasks[flip].data["image"]).query)["fileuri"][0]).decode()
    path = image_path("faces", AUDIT_ID, flip, "png")
    assert uri == f"s3://{repo.name}/{sent.branch}/{path}"
    assert client.read_file(tasks[flip].data["image"]) == repo.get(sent.branch, path)
    assert "current:" in tasks[flip].data["current"] and "emotion" in tasks[flip].data["suggestion"]
    [pred] = client.predictions(tasks[flip].id)
    assert {r["from_name"] for r in pred["result"]} == {"decision", "set_emotion"} and pred[
        "model_version"
    ] == f"audit-{AUDIT_ID}"
    again = send_review(hub, repo.name, AUDIT_ID, client=client)
    assert again.project_id == sent.project_id and len(client.tasks(sent.project_id)) == len(sent.sent)
    assert review_status(hub, repo.name, AUDIT_ID, client=client)["reviewed"] == 0


def test_label_studio_down_or_a_refusing_gate_leaves_main_untouched(hub, world, sent, client):
    repo = world["repo"]
    head = repo.resolve("main")
    dead = LabelStudioClient(f"http://127.0.0.1:{free_port()}", "no-token")
    with pytest.raises(LabelStudioUnavailableError):
        receive_review(hub, repo.name, AUDIT_ID, client=dead)
    assert str(review_status(hub, repo.name, AUDIT_ID, client=dead)["reviewed"]).startswith("unknown")
    reviewed = annotate_review(
        hub, repo.name, AUDIT_ID, client=client, truth=world["truth"], removals={world["dup"]: "duplicate"}
    )
    assert reviewed == len(sent.sent)
    with pytest.raises(DataValidationError, match="nothing was merged"):
        receive_review(
            hub, repo.name, AUDIT_ID, client=client, thresholds=Thresholds(min_group_count=10**6, representativeness="error")
        )
    assert repo.resolve("main") == head
    assert review_status(hub, repo.name, AUDIT_ID)["step"] == "sent"  # to be received again
    assert not [b for b in repo.branches() if b.startswith(("review-fix-", "receipt-"))]


def test_the_reviewed_fixes_and_the_removal_merge_as_one_change_linked_to_the_audit(hub, world, sent, client):
    repo = world["repo"]
    head = repo.resolve("main")
    result = receive_review(hub, repo.name, AUDIT_ID, client=client)
    assert result.relabelled == {"emotion": 3, "gender": 1} and result.removed == {"duplicate": 1}
    assert result.kept == 2 and result.unreviewed == 0 and result.report is not None and result.report.passed
    labels = {r["sample_id"]: r for r in read_labels(repo, "main", "faces").to_pylist()}
    for sid in world["flipped"]:
        assert {t: float(labels[sid][t]) for t in TASKS} == world["truth"][sid]
    assert world["dup"] not in labels and world["original"] in labels and len(labels) == world["samples"] - 1
    assert read_manifest(repo, "main", "faces").counts["samples"] == world["samples"] - 1
    # one merge on main, linked to the audit; the change commit under it says what changed and why
    merge = repo.commit_info("main")
    assert merge.id == result.merge_commit and merge.parents[0] == head and merge.metadata[Key.AUDIT_ID] == AUDIT_ID
    change = repo.commit_info(result.state.change_commit)
    record = read_commit(change.metadata)
    assert isinstance(record, DataReview) and record.step == "change" and record.audit_id == AUDIT_ID
    assert record.removed == {"duplicate": 1} and record.labels_changed == {"emotion": 3, "gender": 1}
    changed = {c.path for c in repo.diff(head, "main", "datasets/faces/")}
    assert not [p for p in changed if "/images/" in p]  # shards untouched: a removal is a delta
    removes = [
        Delta.from_json(repo.get("main", p)) for p in changed if p.startswith(deltas_prefix("faces")) and p.endswith(".json")
    ]
    [gone] = [d for d in removes if d.kind == "remove"]
    assert gone.reasons == {world["dup"]: "duplicate"} and gone.source["audit"] == AUDIT_ID
    # readers skip the removed sample's image: the loader and the gate
    data = HubDataset(DataRef(repo.name, repo.resolve("main"), "faces"), hub.credentials)
    seen = [sid for i in range(len(data.manifest.shards)) for sid in data.shard_samples(i)[0]]
    assert world["dup"] not in seen and len(seen) == world["samples"] - 1
    assert any(c.kind == "review" and AUDIT_ID in c.detail for c in history(repo, "main", "faces"))  # the data page's provenance
    state = json.loads(repo.get(result.state.branch, result.state.dir + "review.json"))
    assert state["step"] == "received" and state["merge_commit"] == merge.id
    with pytest.raises(AuditError, match="received"):
        receive_review(hub, repo.name, AUDIT_ID, client=client)
