"""A worker killed during batch inference: the Predictor actor's process SIGKILLed once rows have arrived.

The promise is **retried**: Ray Data recreates the actor (``max_restarts``) and resubmits the batches it was
running (``max_task_retries``), the driver receives each output block once, so the inference completes with
one prediction row per sample, none twice, committed and merged into its target exactly once.

A real lakeFS and the session's kept 4-CPU local Ray (``local_ray``); the model is a tiny family trained here.
The inference runs in a thread; this thread watches its progress and kills one actor, found among this
process's descendants (a local Ray's raylet and workers are its children) by its title, ``MapWorker(...Predictor)``.
"""

from __future__ import annotations

import io
import os
import signal
import threading
import time
import uuid

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flotilla.data.api import generate
from flotilla.data.loader import HubDataset
from flotilla.data.pinning import resolve_data
from flotilla.data.shardwork import SyntheticPlan
from flotilla.data.store import write_dataset
from flotilla.data.validate import Thresholds
from flotilla.lineage import InferenceCommit, read_commit
from flotilla.loop import InferenceResult, infer
from flotilla.specs import FamilySpec, parse_spec
from flotilla.training import train

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

N, SHARD = 4000, 200  # rows reach the driver a shard at a time: 20 shards, so most are still to come after the first


@pytest.fixture(scope="module")
def data_repo(hub):
    """``faces`` to train on, on main; ``incoming`` (unlabelled) committed on branch ``incoming`` in shards of 200 rows."""
    name = f"t-infk-{uuid.uuid4().hex[:8]}"
    hub.ensure_repo(name)
    generate(hub, name, "faces", 300, seed=5, thresholds=Thresholds(min_group_count=2))
    repo = hub.repo(name)
    repo.create_branch("incoming", "main")
    plan = SyntheticPlan(N, seed=9, labelled=False)
    write_dataset(repo, "incoming", "incoming", plan, {"source": "synthetic"}, shard_rows=SHARD, labelled=False, workers=None)
    repo.commit("incoming", f"incoming: {N} unlabelled faces in shards of {SHARD}")
    yield repo
    hub.delete_repo(name)


@pytest.fixture(scope="module")
def model(hub, data_repo, local_ray) -> str:
    spec = {
        "name": "fam",
        "data": {"repo": data_repo.name, "dataset": "faces"},
        "model": {"width": 8},
        "epochs": 1,
        "batch_size": 64,
        "scaling": {"workers": 1, "cpus_per_worker": 1},
        "tracking": {"wandb": False},
        "merge_into": "main",
        "alias": "production",
    }
    train(parse_spec(FamilySpec, spec), hub=hub)
    return "fam@production"


def predictor_pids() -> set[int]:
    """This process's Ray workers that hold a Predictor actor (their title names it)."""
    found = set()
    for p in psutil.Process().children(recursive=True):
        try:
            title = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if "Predictor" in title or "MapWorker" in title:
            found.add(p.pid)
    return found


def test_a_predictor_killed_mid_inference_is_retried_to_one_row_per_sample_and_one_merge(hub, data_repo, model):
    data_repo.create_branch("served", "main")
    served_before = data_repo.resolve("served")
    rows_seen: list[int] = []
    outcome: dict[str, InferenceResult | BaseException] = {}

    def run() -> None:
        try:
            outcome["result"] = infer(
                hub, model, repo=data_repo.name, data_ref="incoming", dataset="incoming", batch_size=16, concurrency=2,
                merge_into="served", on_progress=lambda done, _total: rows_seen.append(done),
            )  # fmt: skip
        except BaseException as exc:  # handed to the test thread
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    t0 = time.monotonic()
    worker.start()
    while not (rows_seen and rows_seen[-1] > 0) and worker.is_alive():
        time.sleep(0.05)
    victims = predictor_pids()
    assert victims and worker.is_alive(), (victims, outcome)
    victim = min(victims)
    rows_at_kill = rows_seen[-1]
    os.kill(victim, signal.SIGKILL)
    print(f"\nkilled Predictor pid {victim} at {rows_at_kill}/{N} rows, {time.monotonic() - t0:.1f}s in")
    restarted: set[int] = set()
    while worker.is_alive():
        restarted |= predictor_pids() - victims
        time.sleep(0.1)
    worker.join()
    print(f"inference done {time.monotonic() - t0:.1f}s in; Predictor processes started after the kill: {restarted}")

    assert "error" not in outcome, repr(outcome.get("error"))
    result = outcome["result"]
    assert isinstance(result, InferenceResult)
    assert 0 < rows_at_kill < N and rows_seen[-1] == N == result.rows  # killed mid-run, completed after it
    assert not psutil.pid_exists(victim) or psutil.Process(victim).status() == psutil.STATUS_ZOMBIE
    assert restarted, "the killed actor was not recreated"

    # the committed predictions: one row per sample of the input, none twice
    table = pa.concat_tables(pq.read_table(io.BytesIO(data_repo.get(result.commit, f))) for f in result.files)
    ids = table.column("sample_id").to_pylist()
    data = HubDataset(resolve_data(hub, data_repo.name, result.input_commit, "incoming"), hub.credentials)
    expected = data.labels.column("sample_id").to_pylist()
    assert len(ids) == len(set(ids)) == N and set(ids) == set(expected)
    record = read_commit(data_repo.commit_info(result.commit).metadata)
    assert isinstance(record, InferenceCommit) and record.rows == N

    # the target received them in exactly one merge, and holds the same files
    head = data_repo.log("served", 1)[0]  # its first parent is where served stood: one new commit on its chain
    assert head.id == result.merge_commit and head.parents == (served_before, result.commit), head
    for f in result.files:
        assert data_repo.stat("served", f).checksum == data_repo.stat(result.commit, f).checksum
    assert not data_repo.uncommitted(result.branch)
