"""A sweep through a hub outage (issue 22): ridden out inside the retry budget; past it, resumed from the checkpoints.

lakeFS is SIGKILLed mid-sweep (once both trials have an epoch's checkpoint committed on their
branches, or the first is two epochs in: trials start seconds apart, and one still starting waits
for the hub from its first call), and started again on the same port and data folder, as
``flotilla hub up`` does:

- down for :data:`OUTAGE_S` (a minute, inside ``FLOTILLA_HUB_RETRY_S``' 120 s): the trials' hub
  calls (checkpoint uploads and commits, the branch check) wait for it and the sweep ends with a
  winner, no trial errored and none trained again from epoch 0;
- down longer than a (shortened) budget: the trials error, as the infrastructure's fault, so they
  keep their branches and checkpoints, though the hub is back before the sweep ends (and used to
  delete them then); the error names those branches, and ``sweep resume`` continues each trial
  from its last checkpoint instead of retraining it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import ray

from flotilla.data.api import generate
from flotilla.data.validate import Thresholds
from flotilla.hub.client import Hub
from flotilla.hub.server import LocalHub, free_port
from flotilla.settings import Settings
from flotilla.specs import parse_spec
from flotilla.tune import SweepSpec, resume, sweep
from flotilla.tune.results import NoWinner
from flotilla.tune.store import sweeps_dir

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
REPO = "outage"
EPOCHS = 5
OUTAGE_S = 60.0
"""The outage the sweep rides out: the issue's minute, longer than any restart of a worker group could
wait out (Ray Train restarts at once, so ``failure.max_failures`` used to be spent in seconds)."""
SHORT_BUDGET_S = 4.0
"""The retry budget of the second test, so that its outage outlasts it in seconds, not minutes."""


def _spec(name: str) -> SweepSpec:
    return parse_spec(
        SweepSpec,
        {
            "name": name,
            "base": {
                "name": "fam",
                "data": {"repo": REPO, "dataset": "faces"},
                "model": {"width": 4},
                "epochs": EPOCHS,
                "batch_size": 64,
                "scaling": {"workers": 1, "cpus_per_worker": 0.5},
                "tracking": {"wandb": False},
                "failure": {"max_failures": 0},  # any failure the hub's retries do not absorb errors the trial
            },
            "space": {"optim.lr": {"type": "loguniform", "low": 1e-3, "high": 3e-2}},
            "objective": {"metric": "val/age/mae", "mode": "min"},
            "searcher": {"type": "random", "seed": 3},
            "scheduler": {"type": "none"},
            "budget": {"trials": 2, "concurrency": 2, "trial_cpus": 0.25},
        },
    )


@pytest.fixture(scope="module")
def outage_hub(tmp_path_factory: pytest.TempPathFactory, lakefs_binary: Path) -> Iterator[tuple[LocalHub, Hub]]:
    """A hub of its own (this module kills it) with a small dataset."""
    settings = Settings(home=tmp_path_factory.mktemp("outage-home"), cache=Settings.from_env().cache, hub_port=free_port())
    server = LocalHub(settings.hub_dir, settings.hub_port, lakefs_binary)
    server.up(timeout=60)
    hub = Hub(credentials=server.credentials(), settings=settings)
    hub.ensure_repo(REPO)
    generate(hub, REPO, "faces", 300, seed=7, thresholds=Thresholds(min_group_count=2))
    yield server, hub
    server.down()


@contextmanager
def local_ray(**env: str) -> Iterator[None]:
    """A local Ray whose workers (the trials) see ``env``."""
    tmp = tempfile.mkdtemp(prefix="fl-ray-", dir="/tmp")
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", _temp_dir=f"{tmp}/ray")
    try:
        yield
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)


def kill_hard(server: LocalHub) -> None:
    pid = int(server.pid_path.read_text())
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
            return  # a zombie until LocalHub's Popen reaps it: dead, its port is free
        time.sleep(0.05)


def events(d: Path, name: str = "lifecycle.jsonl") -> list[dict]:
    path = d / name
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


class Outage:
    """Kill the hub once both trials have trained an epoch (or one is two epochs in: trials start seconds
    apart); start it again ``down_s`` later or, with None, once both trials have ended, while the sweep
    finishes: where it used to delete the errored trials' branches."""

    def __init__(self, server: LocalHub, sweep_dir: Path, down_s: float | None) -> None:
        self.server, self.dir, self.down_s = server, sweep_dir, down_s
        self.killed: float | None = None
        self.restarting: float | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _wait(self, ready: Callable[[list[dict]], bool]) -> bool:
        deadline = time.time() + 400
        while time.time() < deadline:
            if ready(events(self.dir)):
                return True
            time.sleep(0.1)
        return False

    @staticmethod
    def _training(journal: list[dict]) -> bool:
        reports = [e for e in journal if e["event"] == "result"]
        return len({e["trial_id"] for e in reports}) == 2 or any(e["iteration"] >= 2 for e in reports)

    @staticmethod
    def _ended(journal: list[dict]) -> bool:
        return len({e["trial_id"] for e in journal if e["event"] in ("complete", "errored")}) == 2

    def _run(self) -> None:
        if not self._wait(self._training):
            return
        kill_hard(self.server)
        self.killed = time.time()
        if self.down_s is not None:
            time.sleep(self.down_s)
        elif not self._wait(self._ended):
            return
        self.restarting = time.time()
        self.server.up(timeout=60)


def checkpoint_commits(hub: Hub, branch: str, base: str) -> list[str]:
    """The checkpoint commits on a trial's branch, newest first; not those of ``base`` (the sweep's data
    commit), whose history holds an earlier sweep's promoted winner."""
    repo = hub.repo(REPO)
    earlier = {c.id for c in repo.log(base, limit=500)}
    return [c.message for c in repo.log(branch, limit=500) if c.id not in earlier and ": checkpoint epoch" in c.message]


def test_a_minute_long_hub_outage_is_ridden_out_with_a_winner_and_no_errored_or_retrained_trial(outage_hub):
    server, hub = outage_hub
    sweep_id = "ride-out"
    d = sweeps_dir(hub.settings) / sweep_id
    with local_ray():
        outage = Outage(server, d, OUTAGE_S)
        result = sweep(_spec("ride"), hub=hub, sweep_id=sweep_id)
        outage.thread.join(timeout=120)
    assert outage.killed and outage.restarting, "the hub was never killed (the trials finished first?)"
    assert outage.restarting - outage.killed >= OUTAGE_S
    assert [t.status for t in result.trials] == ["completed", "completed"], result.trials
    assert result.winner is not None and not any(e["event"] == "errored" for e in events(d))
    ends = {e["trial_id"]: round(e["t"] - outage.killed, 1) for e in events(d) if e["event"] == "complete"}
    # each trial had epochs left when the hub died, and trained them once it was back: both rode it out
    assert len(ends) == 2 and all(t >= OUTAGE_S for t in ends.values()), f"seconds after the kill: {ends}"
    starts = [e["trial_id"] for e in events(d, "ledger.jsonl")]
    assert sorted(starts) == sorted(t.trial_id for t in result.trials), "a trial was started again"
    for t in result.trials:  # every epoch's checkpoint committed once, in order: none retrained, none lost
        assert checkpoint_commits(hub, t.branch, result.data_commits["main"]) == [
            f"family: checkpoint epoch {e}" for e in reversed(range(EPOCHS))
        ]


def test_an_outage_past_the_budget_keeps_the_trials_branches_and_resume_continues_them_from_their_checkpoints(
    outage_hub, monkeypatch
):
    server, hub = outage_hub
    sweep_id = "past-budget"
    d = sweeps_dir(hub.settings) / sweep_id
    budget = {"FLOTILLA_HUB_RETRY_S": f"{SHORT_BUDGET_S:g}"}
    monkeypatch.setenv("FLOTILLA_HUB_RETRY_S", budget["FLOTILLA_HUB_RETRY_S"])  # the driver's too
    hint = ""
    with local_ray(**budget):
        outage = Outage(server, d, None)
        try:
            first = sweep(_spec("past"), hub=hub, sweep_id=sweep_id)  # a trial done before the kill may win
        except NoWinner as exc:
            assert exc.result is not None
            first, hint = exc.result, exc.hint or ""
        outage.thread.join(timeout=120)
    assert outage.killed and outage.restarting, "the hub was never killed, or the trials did not end"
    trials, base = first.trials, first.data_commits["main"]
    errored = [t for t in trials if t.status == "errored"]
    assert errored and len(errored) + sum(t.status == "completed" for t in trials) == 2, trials
    assert all(t.cause == "infrastructure" and t.kept for t in errored), errored
    assert all(hub.repo(REPO).branch_exists(t.branch) for t in errored), "an infrastructure-errored trial lost its branch"
    assert not any(e["event"] == "branch_deleted" for e in events(d))
    if len(errored) == 2:  # NoWinner: its hint names the kept branches and the way on
        assert "flotilla sweep resume past-budget" in hint and all(t.branch in hint for t in errored), hint
    before = {t.branch: checkpoint_commits(hub, t.branch, base) for t in errored}
    assert any(before.values()), "no errored trial had committed a checkpoint before the outage"

    monkeypatch.delenv("FLOTILLA_HUB_RETRY_S")
    with local_ray():
        result = resume(sweep_id, hub=hub)
    assert [t.status for t in result.trials] == ["completed", "completed"], result.trials
    assert result.winner is not None
    starts = [e["trial_id"] for e in events(d, "ledger.jsonl")]
    assert all(starts.count(t.trial_id) == 2 for t in errored), starts
    journal = events(d)
    for t in errored:  # went on from its checkpoint: every epoch committed once, none trained again
        after = checkpoint_commits(hub, t.branch, base)
        assert len(after) == len(set(after)) and after[0] == f"family: checkpoint epoch {EPOCHS - 1}", after
        assert after[len(after) - len(before[t.branch]) :] == before[t.branch], (before[t.branch], after)
        end = max(i for i, e in enumerate(journal) if e["event"] == "errored" and e["trial_id"] == t.trial_id)
        assert journal[end]["cause"] == "infrastructure"
        resumed = [e["iteration"] for e in journal[end:] if e["event"] == "result" and e["trial_id"] == t.trial_id]
        assert resumed and resumed[-1] == EPOCHS, resumed
        if before[t.branch]:
            assert resumed[0] > 1, f"trial {t.trial_id} started over from epoch 0: {resumed}"
