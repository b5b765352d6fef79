"""The data audit end to end on a real lakeFS, a real local Ray and a real Label Studio: a small family is trained on
clean faces, then 2.5 % of the gender and emotion labels are flipped through the gate (a reviewed label fix, as a
careless annotator's would land) and ten near-duplicate copies are appended (re-encoded with pixel noise, so no
hash and no gate rule sees them), and the audit must find them with the model's frozen embeddings and the images.
The flagged gender labels and copies then go to Label Studio; a scripted reviewer corrects them, and the fixes and
removals come back through the gate as one small merge linked to the audit. Findings are committed on an audit-*
branch cut from the audited commit, tied to the data and model commits, and found again by find_audits; bad input
fails before anything is written, and the CLI prints the counts and the branch.

The model (2,000 faces, 12 epochs, about a minute here) is trained before the flips, so its embeddings group
the faces by their true classes, which is what a linear probe needs to see a flipped label as out of place.
"""

from __future__ import annotations

import io
import uuid

import numpy as np
import pyarrow.compute as pc
import pytest
from PIL import Image

from flotilla.audit import annotate_review, audit_dataset, receive_review, send_review
from flotilla.data import HubDataset, append
from flotilla.data.api import generate
from flotilla.data.findings import FINDINGS, audit_dir, find_audits, read_findings
from flotilla.data.labelfix import relabel
from flotilla.data.layout import EMOTIONS, GENDERS, Sample
from flotilla.data.pinning import DataRef
from flotilla.data.store import read_labels
from flotilla.data.validate import Thresholds
from flotilla.errors import NotFoundError, SpecError
from flotilla.lineage import AuditRun, Key, read_commit
from flotilla.specs import FamilySpec, parse_spec
from flotilla.training import train

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

FLIPS = 50  # per task, of 2,000 samples: 2.5 %
COPIES = 10  # near-duplicates appended after training
COPY_RECALL = 0.9  # share of the copies flagged near_duplicate (content fingerprints find them all here)
RECALL = 0.6  # flagged share of the flipped labels (measured: gender 0.76, emotion 0.86)
# ranking bounds: share of the flips among the task's 3 x FLIPS lowest scores, and the AUROC of "low score = flipped"
# (measured: gender 0.72 / 0.93, emotion 0.62 / 0.86). The tiny model's emotion features are weak: its probe flags
# about 45 % of all samples, so for emotion the ranking is what says the audit points a reviewer at the flips.
RANKING = {"gender": (0.5, 0.85), "emotion": (0.4, 0.75)}


@pytest.fixture(scope="module")
def setup(hub, local_ray):
    name = f"t-aud-{uuid.uuid4().hex[:8]}"
    hub.ensure_repo(name)
    generate(hub, name, "faces", 2000, seed=7, thresholds=Thresholds(min_group_count=2))
    generate(hub, name, "incoming", 20, seed=8, labelled=False)
    spec = {
        "name": "aud",
        "data": {"repo": name, "dataset": "faces"},
        "model": {"width": 16},
        "epochs": 12,
        "batch_size": 128,
        "scaling": {"workers": 1, "cpus_per_worker": 1},
        "optim": {"lr": 0.003},
        "tracking": {"wandb": False},
        "merge_into": "main",
        "alias": "production",
    }
    train(parse_spec(FamilySpec, spec), hub=hub)
    repo = hub.repo(name)
    labels = read_labels(repo, repo.resolve("main"), "faces").to_pylist()
    rng = np.random.default_rng(3)
    picked = rng.choice(len(labels), 2 * FLIPS, replace=False)
    changes: dict[str, dict[str, object]] = {}
    for i in picked[:FLIPS]:
        changes[labels[i]["sample_id"]] = {"gender": GENDERS[1 - labels[i]["gender"]]}
    for i in picked[FLIPS:]:
        e = labels[i]["emotion"]
        changes[labels[i]["sample_id"]] = {"emotion": EMOTIONS[(e + 1 + int(rng.integers(0, 6))) % 7]}
    relabel(hub, name, "faces", changes, reason="a careless annotator (test)")
    flipped = {t: {s for s, c in changes.items() if t in c} for t in ("gender", "emotion")}
    truth = {r["sample_id"]: {t: float(r[t]) for t in ("age", "gender", "emotion")} for r in labels}
    copies = _near_copies(hub, repo, labels, rng)
    append(hub, name, "faces", copies, reason="copies slipped in (test)", thresholds=Thresholds(min_group_count=2))
    truth |= {c.sample_id: {"age": float(c.age), "gender": float(c.gender), "emotion": float(c.emotion)} for c in copies}
    yield repo, "aud@production", flipped | {"copies": {c.sample_id for c in copies}}, truth
    hub.delete_repo(name)


def _near_copies(hub, repo, labels: list[dict], rng: np.random.Generator) -> list[Sample]:
    """COPIES new samples, each another sample's image plus pixel noise (sigma 2), re-encoded, with that sample's labels."""
    data = HubDataset(DataRef(repo.name, repo.resolve("main"), "faces"), hub.credentials)
    ids, images = data.shard_samples(0)
    by_id = {r["sample_id"]: r for r in labels}
    out = []
    for k, i in enumerate(rng.choice(len(ids), COPIES, replace=False)):
        noisy = np.clip(images[i].astype(np.float32) + rng.normal(0, 2, images[i].shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(noisy).save(buf, format="PNG")
        src = by_id[ids[i]]
        out.append(Sample(f"zcopy-{k:03d}", buf.getvalue(), "png", src["age"], src["gender"], src["emotion"], split=src["split"]))
    return out


@pytest.fixture(scope="module")
def audited(hub, setup):
    repo, model, _, _ = setup
    return audit_dataset(hub, "main", "faces", model, repo=repo.name, folds=5, k=10)


def test_flipped_labels_are_found_and_rank_among_the_worst(audited, setup):
    _, _, flipped, _ = setup
    flipped = {t: ids for t, ids in flipped.items() if t != "copies"}
    table = audited.findings
    seen, hits = {}, {}
    for task, ids in flipped.items():
        scores = np.asarray(table.column(f"label_score_{task}").to_numpy(zero_copy_only=False), dtype=float)
        is_flip = np.isin(np.asarray(table.column("sample_id").to_pylist()), list(ids))
        ranks = scores.argsort().argsort()  # AUROC of "a low score means flipped" (Mann-Whitney)
        auroc = 1 - (ranks[is_flip].mean() - (is_flip.sum() - 1) / 2) / (~is_flip).sum()
        flagged = set(table.filter(pc.field(f"label_issue_{task}")).column("sample_id").to_pylist())
        # the flipped ones rank high: most of them are among the 3 × FLIPS lowest scores of the task
        worst = table.sort_by([(f"label_score_{task}", "ascending")]).slice(0, 3 * FLIPS).column("sample_id").to_pylist()
        hits[task] = flagged & ids
        seen[task] = (len(hits[task]) / len(ids), len(flagged), len(set(worst) & ids) / len(ids), auroc)
    print("recall, flagged, share of flips in the worst 3 x FLIPS, AUROC:", seen)
    for task, (recall, _, in_worst, auroc) in seen.items():
        assert recall >= RECALL and in_worst >= RANKING[task][0] and auroc >= RANKING[task][1], seen
        rows = {r["sample_id"]: r for r in table.filter(pc.field(f"label_issue_{task}")).to_pylist()}
        assert all(rows[s][f"suggested_{task}"] != rows[s][f"given_{task}"] for s in hits[task])


def test_findings_are_committed_on_an_audit_branch_tied_to_the_data_and_the_model(hub, audited, setup):
    repo, _, _, _ = setup
    s = audited.summary
    assert audited.branch == f"audit-faces-{s.audit_id}" and repo.branch_exists(audited.branch)
    main = repo.log("main", limit=1, prefix="datasets/faces/")[0].id
    assert s.data_commit == main and s.rows == 2000 + COPIES and s.method == "probe"
    assert set(s.tasks) == {"age", "gender", "emotion"}
    record = read_commit(repo.log(audited.branch, limit=1)[0].metadata)
    assert isinstance(record, AuditRun) and record.data_commit == s.data_commit and record.audit_id == s.audit_id
    assert record.model_data_commit == s.model_data_commit != s.data_commit  # trained before the flips
    assert record.issues == s.issues and s.issues["label:gender"] >= RECALL * FLIPS
    found = find_audits(repo, "faces")
    assert found and found[0][0] == audited.branch and found[0][1] == s
    stored = read_findings(repo.get(audited.branch, audit_dir("faces", s.audit_id) + FINDINGS))
    assert stored.equals(audited.findings)
    assert not repo.exists("main", audit_dir("faces", s.audit_id) + FINDINGS)  # beside the data, not merged anywhere


def test_bad_input_fails_before_anything_is_written(hub, setup, audited):
    repo, model, _, _ = setup
    before = set(repo.branches())
    with pytest.raises(NotFoundError):
        audit_dataset(hub, "main", "faces", "nosuch@production", repo=repo.name)
    with pytest.raises(NotFoundError):
        audit_dataset(hub, "main", "nosuch", model, repo=repo.name)
    with pytest.raises(SpecError, match="own training data"):
        audit_dataset(hub, audited.summary.model_data_commit, "faces", model, repo=repo.name, method="model")
    with pytest.raises(SpecError, match="no task"):
        audit_dataset(hub, "main", "faces", model, repo=repo.name, tasks=["ethnicity"])
    with pytest.raises(SpecError, match="no 'age' labels"):
        audit_dataset(hub, "main", "incoming", model, repo=repo.name)
    assert set(repo.branches()) == before


def test_cli_prints_the_counts_and_the_branch(hub_settings, setup, audited):
    from typer.testing import CliRunner

    from flotilla.cli import app

    repo, model, _, _ = setup
    env = {"COLUMNS": "200", "FLOTILLA_HOME": str(hub_settings.home), "FLOTILLA_HUB_PORT": str(hub_settings.hub_port)}
    out = CliRunner().invoke(app, ["data", "audit", f"{repo.name}/main/faces", "--model", model, "--task", "gender"], env=env)
    assert out.exit_code == 0, out.output
    assert "label:gender" in out.output and "audit-faces-" in out.output and "worst" in out.output
    assert "found on" in out.output  # the committed predictions were reused, not made again
    out = CliRunner().invoke(app, ["data", "audit", f"{repo.name}/main/faces", "--model", "nosuch@x"], env=env)
    assert out.exit_code == 1 and "Traceback" not in out.output, out.output


def test_near_duplicate_copies_are_found_by_their_images(audited, setup):
    _, _, flipped, _ = setup
    rows = {r["sample_id"]: r for r in audited.findings.to_pylist()}
    found = {c for c in flipped["copies"] if rows[c]["near_duplicate"]}
    assert len(found) >= COPY_RECALL * COPIES, (found, {c: rows[c]["near_duplicate_score"] for c in flipped["copies"]})
    assert all(rows[c]["near_duplicate_of"] and not rows[c]["near_duplicate_of"].startswith("zcopy") for c in found)


def test_the_review_fixes_flagged_labels_and_removes_the_copies_in_one_gated_merge(hub, audited, setup, label_client):
    repo, _, flipped, truth = setup
    audit_id = audited.summary.audit_id
    head = repo.resolve("main")
    state = send_review(hub, repo.name, audit_id, client=label_client, issues=["label:gender", "near_duplicate"])
    flagged_gender = set(audited.findings.filter(pc.field("label_issue_gender")).column("sample_id").to_pylist())
    assert set(state.sent) >= flagged_gender and set(state.sent) >= {c for c in flipped["copies"]} & set(state.sent)
    removals = {c: "duplicate" for c in flipped["copies"] if c in state.sent}
    assert len(removals) >= COPY_RECALL * COPIES
    assert annotate_review(hub, repo.name, audit_id, client=label_client, truth=truth, removals=removals) == len(state.sent)
    result = receive_review(hub, repo.name, audit_id, client=label_client, thresholds=Thresholds(min_group_count=2))
    fixed = flagged_gender & flipped["gender"]
    assert result.relabelled.get("gender", 0) == len(fixed) and result.removed == {"duplicate": len(removals)}
    labels = {r["sample_id"]: r for r in read_labels(repo, "main", "faces").to_pylist()}
    assert all(float(labels[s]["gender"]) == truth[s]["gender"] for s in fixed)
    assert not set(removals) & set(labels)
    merge = repo.commit_info("main")
    assert merge.parents[0] == head and merge.metadata[Key.AUDIT_ID] == audit_id
    changed = [c.path for c in repo.diff(head, "main", "datasets/faces/")]
    assert changed and all(
        "/deltas/" in p or "/claims/" in p or p.endswith(("validation.json", "manifest.json")) for p in changed
    ), changed
