"""``flotilla train resume`` (issue 22, item 4): a run whose driver was SIGKILLed after its first committed checkpoint
continues from its last committed checkpoint, to the same branch and one merge into main, no epoch trained twice.

The driver is a real ``flotilla train`` process on the test's local Ray (``--address``); its process group is
SIGKILLed, as the OOM killer or a closed terminal would. Ray then removes the dead driver's actors (the Ray Train
controller and workers); the resume runs here, on the same Ray.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import ray
import yaml
from tests.integration.helpers import tiny
from typer.testing import CliRunner

from flotilla.cli import app
from flotilla.data.api import generate
from flotilla.data.validate import Thresholds
from flotilla.errors import NotFoundError
from flotilla.hub import flotilla_branches, owners
from flotilla.training import resume
from flotilla.training.record import RunRecord

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

# its own repository: test_train's module deletes the shared one at its end, and a repository deleted and made
# again under one name at once is not reliably there for the next module
TRAIN_REPO = "train-resume-tests"


@pytest.fixture(scope="module")
def data_repo(hub):
    hub.ensure_repo(TRAIN_REPO)
    generate(hub, TRAIN_REPO, "faces", 900, seed=5, thresholds=Thresholds(min_group_count=3))
    yield hub.repo(TRAIN_REPO)
    hub.delete_repo(TRAIN_REPO)


def _cli(*args: str, code: int = 0) -> str:
    out = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert out.exit_code == code, out.output
    assert "Traceback" not in out.output, out.output
    return out.output


def _first_checkpoint(repo, proc: subprocess.Popen[bytes], timeout: float = 400.0) -> str:
    """The run's branch, once its first checkpoint is committed there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the training ended before it could be killed"
        for b in repo.branches():
            if b.startswith("exp-resumed-") and any(c.message == "family: checkpoint epoch 0" for c in repo.log(b, 20)):
                return b
        time.sleep(0.3)
    raise AssertionError("no checkpoint was committed")


def _ray_idle(cpus: float, timeout: float = 120.0) -> None:
    """Until Ray has removed the dead driver's controller and workers (their CPUs are free again)."""
    deadline = time.monotonic() + timeout
    while ray.available_resources().get("CPU", 0) < cpus:
        assert time.monotonic() < deadline, ray.available_resources()
        time.sleep(0.5)


def test_a_killed_training_run_resumes_to_the_same_branch_and_one_merge(data_repo, local_ray, jobs_env, tmp_path):
    spec = tmp_path / "resumed.yaml"
    spec.write_text(
        yaml.safe_dump(
            tiny("resumed", data={"repo": TRAIN_REPO}, merge_into="main", tracking={"wandb": False}).model_dump(mode="json")
        )
    )
    address = ray.get_runtime_context().gcs_address
    cpus = ray.cluster_resources()["CPU"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "flotilla.cli", "train", str(spec), "--set", "epochs=3", "--address", address],
        env={**os.environ},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        branch = _first_checkpoint(data_repo, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    run_id = branch.removeprefix("exp-")
    _ray_idle(cpus)
    before = [c.message for c in data_repo.log(branch, 50)]
    assert not any(m.startswith("Model family") for m in before), before  # killed before publishing
    main_before = data_repo.resolve("main")
    # the killed run's branch is orphaned (its driver is gone) but never pruned: its checkpoints are what resumes
    (listed,) = [b for b in flotilla_branches(data_repo) if b.name == branch]
    assert not listed.prunable
    record = owners.owner_of(jobs_env.home, TRAIN_REPO, branch)
    assert record is not None and record.pid == proc.pid and record.gone() and record.keep

    out = _cli("train", "resume", run_id)
    assert f"model family: lakefs://{TRAIN_REPO}/" in out and "promoted" in out, out

    log = [c.message for c in data_repo.log(branch, 50)]
    for epoch in range(3):  # every epoch committed exactly once: none before the kill trained again
        assert log.count(f"family: checkpoint epoch {epoch}") == 1, log
    assert log[0].startswith(f"Model family of run {run_id}"), log  # published on the run's own branch
    history = json.loads(data_repo.get(branch, f"models/{run_id}/family/metrics.json"))
    assert [h["epoch"] for h in history] == [0, 1, 2]
    last_before_kill = max(int(m.rsplit(" ", 1)[1]) for m in before if m.startswith("family: checkpoint epoch"))
    assert history[-1]["resumed_from_epoch"] == last_before_kill, history
    # main got the model in exactly one merge, from the run's own branch
    promotions = [c for c in data_repo.log("main", 50) if c.message == f"Promote model family of run {run_id}"]
    assert len(promotions) == 1 and data_repo.exists("main", f"models/{run_id}/family/model.pt")
    assert data_repo.log("main", 1)[0].parents[0] == main_before
    assert owners.owner_of(jobs_env.home, TRAIN_REPO, branch) is None  # released once published

    # a finished run has nothing to resume; an unknown one is named
    assert "nothing to resume" in _cli("train", "resume", run_id, code=1)
    assert "no run 'no-such-run'" in _cli("train", "resume", "no-such-run", code=1)
    # a run whose branch was deleted cannot be resumed, and says why
    gone = dataclasses.replace(
        RunRecord.load(run_id), run_id="resumed-gone", branches={"family": "exp-resumed-gone"}, finished=None
    )
    gone.save()
    with pytest.raises(NotFoundError, match=r"branch 'exp-resumed-gone' no longer exists"):
        resume("resumed-gone")
