"""Active-learning rounds end to end: a real lakeFS, a real local Ray, a real Label Studio, a scripted annotator.

A small family is trained and promoted (``fam@production``). Round 1 selects from an unlabelled pool, sends the
chosen faces to Label Studio (images proxied from the round branch through lakeFS's S3 gateway, predictions as
pre-annotations), the scripted annotator labels all but a few through Label Studio's API, the labels come back and
are appended to the training data on the round branch through the gate (existing shards untouched), the model is
warm-start retrained and judged against the old one on a fixed evaluation set, and the decision is committed. A
second round with a bad annotator (labels shuffled between samples) must not reach main. Bad input fails cleanly.
"""

from __future__ import annotations

import base64
import uuid
from urllib.parse import parse_qs, urlparse

import pytest

from flotilla.active import annotate_round, read_state, receive_round, retrain_round, select_round, send_round
from flotilla.active.rounds import image_path, read_table
from flotilla.data import generate, read_labels, read_manifest
from flotilla.data.report import Thresholds
from flotilla.errors import ActiveLearningError, LabelStudioError, LabelStudioNotFoundError, SpecError
from flotilla.hub.server import free_port
from flotilla.labelstudio import LabelStudioClient
from flotilla.lineage import ActiveRound, read_commit
from flotilla.registry import get_alias
from flotilla.specs import FamilySpec, parse_spec
from flotilla.training import train

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]
LAX = Thresholds(min_group_count=2)


@pytest.fixture(scope="module")
def client(label_client):
    """The session's Label Studio (its start costs ~30 s): every round makes its own project, so nothing is shared."""
    return label_client


@pytest.fixture(scope="module")
def data_repo(hub):
    name = f"t-al-{uuid.uuid4().hex[:8]}"
    hub.ensure_repo(name)
    generate(hub, name, "faces", 600, seed=5, thresholds=LAX)
    generate(hub, name, "pool", 800, seed=41, labelled=False)
    generate(hub, name, "eval", 300, seed=42, thresholds=LAX)
    yield hub.repo(name)
    hub.delete_repo(name)


@pytest.fixture(scope="module")
def model(hub, data_repo, local_ray) -> str:
    spec = {
        "name": "fam", "data": {"repo": data_repo.name, "dataset": "faces"}, "model": {"width": 8}, "epochs": 5,
        "batch_size": 64, "scaling": {"workers": 1, "cpus_per_worker": 1}, "optim": {"lr": 0.003},
        "tracking": {"wandb": False}, "merge_into": "main", "alias": "production",
    }  # fmt: skip
    train(parse_spec(FamilySpec, spec), hub=hub)
    return "fam@production"


@pytest.fixture(scope="module")
def round1(hub, data_repo, model, client):
    """One whole round, step by step, as a person would run it (the scripted annotator in the person's chair)."""
    common = {"hub": hub, "repo": data_repo.name}
    selected = select_round(hub, model, repo=data_repo.name, pool_ref="main", pool_dataset="pool", name="al",
                            budget=40, eval_dataset="eval")  # fmt: skip
    sent = send_round(**common, name="al", client=client)
    annotated = annotate_round(hub, data_repo.name, "al", client=client, leave=4)
    main_before = data_repo.resolve("main")
    received = receive_round(**common, name="al", client=client)
    decided = retrain_round(**common, name="al", eval_dataset="eval", epochs=2)
    return selected, sent, annotated, main_before, received, decided


def test_selection_is_committed_with_every_score(round1, data_repo):
    selected = round1[0]
    assert selected.round == 1 and selected.branch == "al-al-round-1" and selected.strategy == "uncertainty+diversity"
    table = read_table(data_repo, selected.branch, selected.dir + "selection.parquet")
    assert table.num_rows == 40 and len(set(table.column("sample_id").to_pylist())) == 40
    assert {
        "order",
        "combined",
        "anomaly",
        "priority",
        "rank",
        "uncertainty/age",
        "uncertainty/gender",
        "uncertainty/emotion",
    } <= set(table.column_names)
    pool_ids = set(read_labels(data_repo, "main", "pool").column("sample_id").to_pylist())
    assert set(table.column("sample_id").to_pylist()) <= pool_ids
    log = [read_commit(c.metadata) for c in data_repo.log(selected.branch, limit=50)]
    steps = [r.step for r in log if isinstance(r, ActiveRound)]
    assert steps[-1] == "select" and {"send", "receive", "append", "decide"} <= set(steps)


def test_tasks_reach_label_studio_with_images_from_the_round_branch_and_predictions(round1, client, data_repo):
    sent = round1[1]
    tasks = client.tasks(sent.project_id)
    assert len(tasks) == 40
    # Label Studio serves the image from its own resolve URL, fetching the bytes from the round branch through lakeFS
    first = tasks[0]
    uri = base64.b64decode(parse_qs(urlparse(first.data["image"]).query)["fileuri"][0]).decode()
    path = image_path("al", 1, first.data["sample_id"])
    assert uri == f"s3://{data_repo.name}/al-al-round-1/{path}"
    assert client.read_file(first.data["image"]) == data_repo.get("al-al-round-1", path)
    preds = [p for t in tasks[:5] for p in client.predictions(t.id)]
    assert len(preds) == 5 and all(0.0 <= p["score"] <= 1.0 for p in preds) and {p["model_version"] for p in preds} != {""}
    assert {r["from_name"] for r in preds[0]["result"]} == {"age", "gender", "emotion"}


def test_labels_come_back_appended_through_the_gate_without_touching_existing_shards(round1, data_repo):
    selected, _, annotated, main_before, received, _ = round1
    assert annotated == 36 and received.received == 36 and len(received.unlabelled) == 4
    base = read_manifest(data_repo, main_before, "faces")
    on_round = read_manifest(data_repo, received.branch, "faces")
    assert on_round.counts["samples"] == base.counts["samples"] + 36 and len(on_round.shards) == len(base.shards) + 1
    for s in base.shards:  # zero-copy: the very same objects
        assert data_repo.stat(received.branch, s.path).checksum == data_repo.stat(main_before, s.path).checksum
    labels = read_labels(data_repo, received.branch, "faces").to_pydict()
    got = dict(zip(labels["sample_id"], labels["age"], strict=True))
    chosen = read_table(data_repo, selected.branch, selected.dir + "received.parquet").to_pydict()
    assert all(abs(got[s] - a) < 0.11 for s, a in zip(chosen["sample_id"], chosen["age"], strict=True))


def test_the_decision_is_recorded_with_both_models_and_main_moves_only_on_promotion(round1, data_repo, hub):
    main_before, decided = round1[3], round1[5]
    d = decided.decision
    assert d["old"]["model"] != d["new"]["model"] and d["eval"]["dataset"] == "eval"
    assert {"age/mae", "gender/accuracy", "emotion/accuracy"} <= set(d["old"]) & set(d["new"])
    assert d["reasons"] and isinstance(d["promote"], bool)
    alias = get_alias(data_repo, "fam", "production").current
    if d["promote"]:
        assert alias.run_id == d["new"]["run_id"] and read_manifest(data_repo, "main", "faces").counts["samples"] == 636
    else:
        assert alias.run_id != d["new"]["run_id"] and data_repo.resolve("main") == main_before


def test_a_bad_annotator_never_reaches_main(round1, hub, data_repo, client):
    common = {"hub": hub, "repo": data_repo.name}
    select_round(hub, "fam@production", repo=data_repo.name, pool_ref="main", pool_dataset="pool", name="bad", budget=300,
                 eval_dataset="eval", strategy="random")  # fmt: skip
    send_round(**common, name="bad", client=client)
    annotate_round(hub, data_repo.name, "bad", client=client, corrupt=True)
    receive_round(**common, name="bad", client=client)
    before = data_repo.resolve("main")
    alias_before = get_alias(data_repo, "fam", "production").current.run_id
    decided = retrain_round(**common, name="bad", eval_dataset="eval", epochs=2)
    assert decided.decision["promote"] is False, decided.decision
    assert data_repo.resolve("main") == before and get_alias(data_repo, "fam", "production").current.run_id == alias_before


def test_bad_input_is_refused_with_nothing_half_merged(round1, hub, data_repo, client):
    common = {"hub": hub, "repo": data_repo.name}
    with pytest.raises(ActiveLearningError, match="budget of 100000"):
        select_round(hub, "fam@production", repo=data_repo.name, pool_ref="main", pool_dataset="pool", name="big", budget=100000)
    with pytest.raises(ActiveLearningError, match="no unlabelled sample"):
        select_round(hub, "fam@production", repo=data_repo.name, pool_ref="main", pool_dataset="eval", name="lab", budget=5)
    state = select_round(hub, "fam@production", repo=data_repo.name, pool_ref="main", pool_dataset="pool", name="oops", budget=6,
                         strategy="random")  # fmt: skip
    for broken in (LabelStudioClient(client.url, "0" * 40), LabelStudioClient(f"http://127.0.0.1:{free_port()}", "0" * 40)):
        with pytest.raises(LabelStudioError) as info:  # a wrong token, a Label Studio that is down: the round stays selected
            send_round(**common, name="oops", client=broken)
        assert info.value.hint and "0" * 40 not in str(info.value) and read_state(data_repo, "oops").step == "selected"
    send_round(**common, name="oops", client=client)
    tasks = sorted(client.tasks(read_state(data_repo, "oops").project_id), key=lambda t: t.id)
    bad_age = {"from_name": "age", "to_name": "image", "type": "number", "value": {"number": 300}}
    bad_emotion = {"from_name": "emotion", "to_name": "image", "type": "choices", "value": {"choices": ["bored"]}}
    client.annotate(tasks[0].id, [bad_age, bad_emotion])
    head = data_repo.resolve(state.branch)
    with pytest.raises(SpecError) as info:
        receive_round(**common, name="oops", client=client)
    assert "age 300" in str(info.value) and "bored" in str(info.value) and data_repo.resolve(state.branch) == head
    client.delete_task(tasks[1].id)
    with pytest.raises(ActiveLearningError, match="gone from Label Studio"):
        receive_round(**common, name="oops", client=client)
    with pytest.raises(LabelStudioNotFoundError):
        client.task(tasks[1].id)
    with pytest.raises(ActiveLearningError, match="retraining needs its labels received"):
        retrain_round(**common, name="oops", eval_dataset="eval")
