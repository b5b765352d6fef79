"""A sweep whose machine is lost is resumed from another ``FLOTILLA_HOME``, in-process and as a job's driver.

The sweep runs in a subprocess under home A and is SIGKILLed (driver and the Ray it started) once a trial
finished and Tune and the mirror had a period to save it; home A's sweep folder is then removed, as a lost
machine takes it. The resume runs under an empty home B with nothing but the hub's address and keys: it
pulls the sweep's mirror from the hub (tune/mirror.py), and Tune restores from a folder at another path.
"""

import collections
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
from tests.conftest import make_settings
from tests.integration import helpers

from flotilla.data.api import generate
from flotilla.data.validate import Thresholds
from flotilla.errors import ConflictError
from flotilla.hub.client import Hub
from flotilla.jobs import entrypoint
from flotilla.settings import (
    LAKECTL_CREDENTIALS_ACCESS_KEY_ID,
    LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY,
    LAKECTL_SERVER_ENDPOINT_URL,
)
from flotilla.specs import parse_spec
from flotilla.tune import SweepSpec, resume
from flotilla.tune.mirror import LEASE, PERIOD_S, PREFIX, mirror_branch
from flotilla.tune.run import TUNE_STATE_PERIOD_S
from flotilla.tune.trial import trial_branch

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]
REPO = "anywhere-tests"


def spec(name: str) -> SweepSpec:
    return parse_spec(
        SweepSpec,
        {
            "name": name,
            "base": {
                "name": "fam",
                "data": {"repo": REPO, "dataset": "faces"},
                "model": {"width": 4},
                "epochs": 2,
                "batch_size": 64,
                "scaling": {"workers": 1, "cpus_per_worker": 0.5},
                "tracking": {"wandb": False},
                "failure": {"max_failures": 0},
            },
            "space": {"optim.lr": {"type": "loguniform", "low": 1e-3, "high": 3e-2}},
            "objective": {"weights": {"val/gender/accuracy": 1.0}, "mode": "max"},
            "searcher": {"type": "random", "seed": 3},
            "scheduler": {"type": "none"},
            "budget": {"trials": 4, "concurrency": 1, "trial_cpus": 0.25},
        },
    )


@pytest.fixture(scope="module")
def data(hub):
    hub.ensure_repo(REPO)
    generate(hub, REPO, "faces", 300, seed=5, thresholds=Thresholds(min_group_count=2))


def hub_env(hub: Hub) -> dict[str, str]:
    """What another machine needs to reach the hub: its address and keys (no FLOTILLA_HOME of the hub's)."""
    c = hub.credentials
    return {
        LAKECTL_SERVER_ENDPOINT_URL: c.endpoint,
        LAKECTL_CREDENTIALS_ACCESS_KEY_ID: c.access_key_id,
        LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY: c.secret_access_key,
    }


def start_and_kill(hub: Hub, sweep_id: str, home: Path, tmp_path: Path) -> set[str]:
    """Run sweep ``sweep_id`` under ``home`` in a subprocess; SIGKILL it once a trial finished and a Tune
    save and a mirror push followed; remove its folder (the machine is lost). The trials that had ended."""
    spec_path = tmp_path / f"{sweep_id}.json"
    spec_path.write_text(spec(sweep_id).model_dump_json())
    code = (
        "import json; from flotilla.tune import SweepSpec, sweep;"
        f"sweep(SweepSpec.model_validate(json.load(open({str(spec_path)!r}))), sweep_id={sweep_id!r})"
    )
    ray_tmp = Path(tempfile_dir())
    env = {**os.environ, **hub_env(hub), "FLOTILLA_HOME": str(home), "RAY_TMPDIR": str(ray_tmp)}
    env.pop("RAY_ADDRESS", None)
    log = open(tmp_path / f"{sweep_id}.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True, stdout=log, stderr=log)
    d = home / "sweeps" / sweep_id
    ended: list[dict] = []
    try:
        deadline = time.time() + 600
        while time.time() < deadline and not ended:
            time.sleep(1)
            journal = d / "lifecycle.jsonl"
            if journal.exists():
                events = [json.loads(x) for x in journal.read_text().splitlines() if x.strip()]
                ended = [e for e in events if e["event"] in ("complete", "stopped")]
            assert proc.poll() is None, (
                f"the sweep ended before it could be killed: {(tmp_path / f'{sweep_id}.log').read_text()[-3000:]}"
            )
        assert ended, "no trial finished in time"
        time.sleep(max(float(TUNE_STATE_PERIOD_S), PERIOD_S) + 3)  # one Tune save and one push after it
        assert proc.poll() is None, "the sweep ended before it could be killed"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started die at once
        proc.wait()
        log.close()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    shutil.rmtree(d)  # the machine is lost, and its sweep folder with it
    return {e["trial_id"] for e in ended}


def tempfile_dir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="fl-ray-", dir="/tmp")


def check_resumed(hub: Hub, sweep_id: str, d: Path, finished_before_kill: set[str]) -> None:
    """What a resume from another home must show: a winner, no finished trial run twice, no checkpoint
    committed twice, the mirror committed at the end, and the hub's secret in none of its objects."""
    starts = [json.loads(x)["trial_id"] for x in (d / "ledger.jsonl").read_text().splitlines()]
    for t in finished_before_kill:
        assert starts.count(t) == 1, f"finished trial {t} ran again: {starts}"
    repo = hub.repo(REPO)
    pinned = set(json.loads((d / "sweep.json").read_text())["commits"].values())
    for t in set(starts):
        branch = trial_branch(sweep_id, t)
        if not repo.branch_exists(branch):
            continue  # deleted by the retention policy
        ckpts = []
        for c in repo.log(branch, limit=200):
            if c.id in pinned:  # the data commit the trial's branch was made from
                break
            if "checkpoint epoch" in c.message:
                ckpts.append(c.message)
        repeated = [m for m, n in collections.Counter(ckpts).items() if n > 1]
        assert ckpts and not repeated, f"trial {t} committed a checkpoint twice (or none): {ckpts}"
    branch = mirror_branch(sweep_id)
    head = repo.commit_info(branch)
    assert head.message == f"sweep {sweep_id} state at its end", head.message
    assert not repo.uncommitted(branch, PREFIX), "the finished sweep's state was left uncommitted"
    keys = {o.path for o in repo.list(branch, PREFIX)}
    assert {f"{PREFIX}sweep.json", f"{PREFIX}optuna.db", f"{PREFIX}ledger.jsonl", f"{PREFIX}lifecycle.jsonl"} <= keys, keys
    assert not any(k.startswith(f"{PREFIX}wandb/") for k in keys) and f"{PREFIX}{LEASE}" not in keys
    secret = hub.credentials.secret_access_key.encode()
    leaked = [k for k in keys if secret in repo.get(branch, k)]
    assert not leaked, f"the hub's secret is in mirrored object(s) {leaked}"


def test_a_killed_sweep_resumes_under_another_home_without_rerunning_finished_trials(hub, data, tmp_path, capfd):
    sweep_id = f"anywhere-{os.getpid()}"
    home_a, home_b = tmp_path / "home-a", tmp_path / "home-b"
    finished_before_kill = start_and_kill(hub, sweep_id, home_a, tmp_path)
    repo = hub.repo(REPO)
    assert repo.uncommitted(mirror_branch(sweep_id), PREFIX), "nothing was mirrored while the sweep ran"

    hub_b = Hub(credentials=hub.credentials, settings=make_settings(home_b))
    # another driver, on another machine, renewed its lease just now: refused, naming it and the way out
    alive = {"host": "other-machine.example", "home": "/home/them/.flotilla", "pid": 4242, "at": time.time()}
    repo.put(mirror_branch(sweep_id), PREFIX + LEASE, json.dumps(alive))
    with pytest.raises(ConflictError) as err:
        resume(sweep_id, hub=hub_b)
    assert "other-machine.example" in err.value.message and "--force" in err.value.hint
    assert not (home_b / "sweeps" / sweep_id / "sweep.json").exists(), "a refused resume pulled the sweep"

    with helpers.local_ray(2, dashboard=True):
        result = resume(sweep_id, hub=hub_b, repo=REPO, force=True)  # that driver is known to be dead
        result.wait_for_plots()
    d = home_b / "sweeps" / sweep_id
    assert Path(result.directory) == d and (d / "results.json").exists()
    assert result.winner is not None and len(result.trials) == 4
    assert finished_before_kill <= {t.trial_id for t in result.trials}, "restored, not started over"
    assert not (home_a / "sweeps" / sweep_id / "optuna.db").exists(), "Tune's pickled searcher wrote to the lost home"
    check_resumed(hub, sweep_id, d, finished_before_kill)
    # the trials created after the resume live in the new folder too (Tune 2.60 alone looked for them in the old)
    assert "Failed to fetch metrics" not in capfd.readouterr().err


def test_a_sweep_job_resumes_a_killed_sweep_from_the_hub(hub, data, tmp_path, monkeypatch, capsys):
    """``resume: <id>`` in a sweep job: the job's driver (the entry point a Ray job runs) under a home that never
    saw the sweep. The driver is called as Ray calls it, in this process, with this process's Ray as the job's."""
    sweep_id = f"anywhere-job-{os.getpid()}"
    finished_before_kill = start_and_kill(hub, sweep_id, tmp_path / "home-a", tmp_path)
    job = tmp_path / "resume.yaml"
    job.write_text(f"kind: sweep\nname: resume-it\nresume: {sweep_id}\n")  # no repo: the mirror is searched for
    home_c = tmp_path / "home-c"
    for k, v in {**hub_env(hub), "FLOTILLA_HOME": str(home_c)}.items():
        monkeypatch.setenv(k, v)
    with helpers.local_ray(2, dashboard=True):
        monkeypatch.setenv("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
        rc = entrypoint.main([str(job)])
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
    [line] = [x for x in out.splitlines() if x.startswith(entrypoint.RESULT_MARKER)]
    summary = json.loads(line[len(entrypoint.RESULT_MARKER) :])
    assert summary["ok"] and summary["winner"], summary
    check_resumed(hub, sweep_id, home_c / "sweeps" / sweep_id, finished_before_kill)


def test_a_resume_job_submitted_to_a_local_cluster_finishes_the_sweep(hub, data, cluster, jobs_env, tmp_path):
    """The same through Ray's job server: flotilla's own two-node local cluster, whose jobs run under the
    session hub's home, which never saw the sweep (started under home A, lost with it)."""
    from flotilla.jobs.submission import submit

    sweep_id = f"anywhere-cluster-{os.getpid()}"
    finished_before_kill = start_and_kill(hub, sweep_id, tmp_path / "home-a", tmp_path)
    assert not (jobs_env.home / "sweeps" / sweep_id).exists()
    handle = submit({"kind": "sweep", "name": "resume-on-cluster", "resume": sweep_id, "repo": REPO})
    final = handle.wait(timeout=900)
    logs = handle.logs()
    assert final == "SUCCEEDED", logs[-4000:]
    assert handle.result()["winner"], logs[-3000:]
    check_resumed(hub, sweep_id, jobs_env.home / "sweeps" / sweep_id, finished_before_kill)
