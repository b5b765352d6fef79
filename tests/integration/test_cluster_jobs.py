"""A real two-node local Ray cluster (flotilla's own) running real jobs against the session's real lakeFS hub.

One cluster for the module (head + one worker node, 1 CPU each): an ingest job
followed to SUCCEEDED through its streamed logs, a train job pinned to a commit
and stopped, a bad spec refused before submission, and ``down`` stopping this
cluster's processes only (a second flotilla cluster keeps running). Nothing is
mocked; the jobs find the hub through FLOTILLA_HOME like users' jobs do.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from tests.integration.helpers import files_holding, secret_forms, stop_cluster

from flotilla.cluster.files import ray_tmpdir
from flotilla.cluster.local import LocalCluster
from flotilla.cluster.procs import alive, descendants, marked_processes
from flotilla.data.store import list_datasets
from flotilla.errors import SpecError
from flotilla.hub.server import free_port
from flotilla.jobs.handle import list_jobs
from flotilla.jobs.submission import submit
from flotilla.settings import Settings

pytestmark = pytest.mark.integration

N_IMAGES = 300


def _procs(cluster: LocalCluster) -> set[int]:
    st = cluster.state()
    return descendants([n["pid"] for n in st["nodes"]]) | marked_processes(st["cluster_id"])


@pytest.fixture(scope="module")
def data_repo(hub):
    name = f"t-jobs-{uuid.uuid4().hex[:8]}"
    repo = hub.ensure_repo(name)
    yield repo
    hub.delete_repo(name)


@pytest.fixture(scope="module")
def ingested(cluster, data_repo):
    """Submit a small synthetic ingest and follow it to its end, keeping what was streamed."""
    spec = {
        "kind": "ingest",
        "name": "ingest-test",
        "repo": data_repo.name,
        "dataset": "faces",
        "synthetic": {"n": N_IMAGES, "seed": 3},
        "thresholds": {"min_group_count": 2},
    }
    t0 = time.monotonic()
    handle = submit(spec)
    streamed = "".join(handle.tail(follow=True))
    final = handle.wait(timeout=120)
    print(f"ingest job submit -> {final}: {time.monotonic() - t0:.1f}s")
    return handle, streamed, final


def test_state_token_and_temp_dir_are_private_and_short(cluster, jobs_env):
    st = cluster.state()
    token = cluster.token_path.read_text().strip()
    assert len(token) == 64
    for path in (cluster.token_path, cluster.state_path):
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert token not in cluster.state_path.read_text()
    assert not any(token in p.read_text(errors="replace") for p in cluster.log_dir.glob("*.log"))
    # the pytest home is long: Ray's sockets go to a short stand-in instead
    assert len(str(jobs_env.home / "ray" / "tmp")) > 36 and st["ray_tmpdir"] == str(ray_tmpdir(jobs_env))
    assert st["ray_tmpdir"].startswith("/tmp/flotilla-ray-") and ray_tmpdir(jobs_env) == ray_tmpdir(jobs_env)
    assert Path(st["ray_tmpdir"], "ray", "ray_current_cluster").exists()
    assert cluster.up().pids == cluster.status().pids  # idempotent: nothing new started


def test_bad_spec_is_refused_before_submission_with_every_problem(cluster, data_repo):
    before = {j.submission_id for j in list_jobs()}
    bad = {"kind": "ingest", "name": "bad", "repo": data_repo.name, "datset": "x", "synthetic": {"n": 0, "sed": 1}}
    with pytest.raises(SpecError) as info:
        submit(bad)
    text = "\n".join(info.value.problems)
    assert "datset: unknown key (did you mean 'dataset'?)" in text
    assert "synthetic.sed: unknown key (did you mean 'seed'?)" in text
    assert "synthetic.n:" in text
    assert {j.submission_id for j in list_jobs()} == before


def test_ingest_job_succeeds_and_its_logs_stream(ingested, data_repo, hub):
    handle, streamed, final = ingested
    assert final == "SUCCEEDED", handle.logs()[-3000:]
    assert f"[flotilla] ingest faces: {N_IMAGES} samples, validation passed" in streamed
    result = handle.result()
    assert result["ok"] and result["counts"]["samples"] == N_IMAGES and result["merge_commit"]
    assert "faces" in list_datasets(data_repo, "main")
    assert data_repo.resolve("main") == result["merge_commit"]
    info = handle.info()
    assert info.metadata["flotilla.kind"] == "ingest" and info.metadata["flotilla.data_repo"] == data_repo.name
    assert all(isinstance(v, str) for v in info.metadata.values())
    # no credential anywhere Ray shows or stores for the job
    shown = (
        json.dumps({"metadata": info.metadata, "runtime_env": info.runtime_env, "entrypoint": info.entrypoint}) + handle.logs()
    )
    assert hub.credentials.secret_access_key not in shown and hub.credentials.access_key_id not in shown
    assert LocalCluster().token_path.read_text().strip() not in shown
    assert "LAKECTL" not in json.dumps(info.runtime_env)
    # Ray Train's controller hears its workers every quarter second, not every 2 s (issue 21)
    assert info.runtime_env["env_vars"]["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "0.25"


def test_cli_lists_and_shows_the_job(ingested):
    from typer.testing import CliRunner

    from flotilla.cli import app

    handle = ingested[0]
    runner = CliRunner()
    out = runner.invoke(app, ["jobs", "list"], env={"COLUMNS": "40"})  # piped and narrow: tab-separated, nothing cut
    assert out.exit_code == 0, out.output
    [row] = [line.split("\t") for line in out.output.splitlines() if line.startswith(handle.submission_id + "\t")]
    assert len(row) == 7 and row[1] == "SUCCEEDED" and row[2] == "ingest" and all(row), row
    out = runner.invoke(app, ["jobs", "list", "--json"], env={"COLUMNS": "40"})  # narrow: JSON does not care
    assert out.exit_code == 0, out.output
    [job] = [j for j in json.loads(out.output) if j["submission_id"] == handle.submission_id]
    assert job["status"] == "SUCCEEDED" and job["kind"] == "ingest" and job["name"].startswith("ingest: ")
    assert job["data_commit"] is None or len(job["data_commit"]) > 12  # unabbreviated, unlike the table
    out = runner.invoke(app, ["jobs", "status", handle.submission_id], env={"COLUMNS": "220"})
    assert out.exit_code == 0 and "SUCCEEDED" in out.output and '"merge_commit"' in out.output
    out = runner.invoke(app, ["jobs", "status", handle.submission_id, "--json"])
    assert out.exit_code == 0, out.output
    status = json.loads(out.stdout)
    assert status["status"] == "SUCCEEDED" and status["result"]["merge_commit"], status
    out = runner.invoke(app, ["cluster", "status"], env={"COLUMNS": "220"})
    assert out.exit_code == 0 and "2 node(s)" in out.output


def test_rays_own_cli_reaches_the_cluster_through_flotilla_cluster_env(cluster):
    """`eval "$(flotilla cluster env)"` is all `ray job list`, `ray status` (the GCS on 127.0.0.1, which Ray's CLI
    would rewrite to the routable IP without the single-host setting) and `ray get-auth-token` need, and the
    token Ray prints is the one `flotilla cluster token` prints (what the dashboard's dialog asks for)."""
    from typer.testing import CliRunner

    from flotilla.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["cluster", "env"])
    assert out.exit_code == 0, out.output
    env = dict(line.removeprefix("export ").split("=", 1) for line in out.stdout.splitlines())
    token = cluster.token_path.read_text().strip()
    assert token not in out.stdout and env["RAY_AUTH_TOKEN_PATH"] == str(cluster.token_path)
    ray = str(Path(sys.executable).parent / "ray")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    listed = subprocess.run([ray, "job", "list"], env={**clean, **env}, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr[-2000:]
    ray_status = subprocess.run([ray, "status"], env={**clean, **env}, capture_output=True, text=True, timeout=60)
    assert ray_status.returncode == 0 and "Active:" in ray_status.stdout, ray_status.stdout[-1000:] + ray_status.stderr[-2000:]
    printed = subprocess.run([ray, "get-auth-token"], env={**clean, **env}, capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0 and printed.stdout == token
    out = runner.invoke(app, ["cluster", "token"])
    assert out.exit_code == 0 and out.stdout.strip() == token


def test_cluster_status_tells_a_refused_token_from_nothing_there(cluster):
    """A running cluster asked with the wrong token is "refused" (exit 5), a port where nothing listens
    is "not running" (exit 3), and the local cluster's own dashboard URL gets the local token (exit 0)."""
    from flotilla.cluster.local import remote_status, status

    url = cluster.status().address
    assert status(address=url).exit_code == 0
    refused = remote_status(url, {"Authorization": "Bearer " + "0" * 64})
    assert refused.refused and refused.exit_code == 5 and "refused the auth token" in refused.describe()
    absent = remote_status(f"http://127.0.0.1:{free_port()}", {})
    assert not absent.running and not absent.refused and absent.exit_code == 3
    assert "not running" in absent.describe()


def test_an_unknown_job_id_is_a_clear_error_everywhere(cluster):
    from typer.testing import CliRunner

    from flotilla.cli import app
    from flotilla.jobs.client import JobError
    from flotilla.jobs.handle import get_job

    handle = get_job("ingest-no-such-job-20260101-000000-abcd")
    for call in (handle.status, handle.logs, lambda: list(handle.tail(follow=True))):
        with pytest.raises(JobError) as info:
            call()
        assert "ingest-no-such-job" in info.value.message and info.value.hint
    for args in (["jobs", "logs", handle.submission_id, "-f"], ["jobs", "status", handle.submission_id]):
        out = CliRunner().invoke(app, args, env={"COLUMNS": "220"})
        assert out.exit_code == 1 and "error:" in out.output and "Traceback" not in out.output, out.output


def test_train_job_reads_its_pinned_commit_and_can_be_stopped(ingested, data_repo):
    assert ingested[2] == "SUCCEEDED"
    pinned_commit = data_repo.resolve("main")
    family = {
        "name": "stop-me",
        "data": {"repo": data_repo.name, "dataset": "faces", "ref": "main", "image_size": 32},
        "epochs": 1000,
        "batch_size": 32,
        "model": {"width": 8},
        "tracking": {"wandb": False},
        "scaling": {"workers": 1, "cpus_per_worker": 0.5},
    }
    handle = submit({"kind": "train", "name": "long-train", "family": family})
    assert handle.pinned.pinned["data_commit"] == pinned_commit
    assert handle.info().metadata["flotilla.data_commit"] == pinned_commit
    moved = data_repo.commit("main", "main moves on after submission", allow_empty=True).id
    assert moved != pinned_commit
    deadline = time.monotonic() + 90
    while "[flotilla] train 'stop-me'" not in handle.logs():
        assert handle.status() in ("PENDING", "RUNNING"), handle.logs()[-3000:]
        assert time.monotonic() < deadline, "train job never started"
        time.sleep(0.5)
    logs = handle.logs()
    assert f"lakefs://{data_repo.name}/{pinned_commit}" in logs and moved not in logs
    assert handle.status() == "RUNNING"
    assert handle.stop()
    assert handle.wait(timeout=60) == "STOPPED"


def test_a_train_job_bigger_than_the_cluster_fails_at_once_instead_of_waiting_forever(ingested, data_repo):
    """flotilla's local cluster cannot grow: Ray Train would retry starting 8 workers on its 2 CPUs without end."""
    family = {
        "name": "too-big",
        "data": {"repo": data_repo.name, "dataset": "faces", "ref": "main", "image_size": 32},
        "epochs": 1,
        "batch_size": 32,
        "model": {"width": 8},
        "tracking": {"wandb": False},
        "scaling": {"workers": 8, "cpus_per_worker": 1},
    }
    handle = submit({"kind": "train", "name": "too-big", "family": family})
    assert handle.wait(timeout=120) == "FAILED", handle.logs()[-3000:]
    logs = " ".join(handle.logs().split())
    assert "could never start: it needs 8 CPU, the cluster has 2" in logs and "lower scaling.workers" in logs, logs[-3000:]
    assert not [b for b in data_repo.branches() if "too-big" in b], "a branch was made for work that could never run"


def test_a_driver_outside_the_cluster_joins_by_its_gcs_or_ray_client_address(cluster, jobs_env, monkeypatch):
    """`flotilla train/sweep --address` against flotilla's own cluster: its token is sent for the user, and
    only to it (without it Ray says "Failed to connect" or "Ray client connection timeout", nothing of auth)."""
    from flotilla.cluster import driver_auth_env

    st, state = cluster.status(), cluster.state()
    assert st.client_address == f"ray://127.0.0.1:{state['client_port']}" and st.client_address in st.describe()
    token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(jobs_env.home / "ray" / "auth_token")}
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # what Ray leaves in any process that started a local Ray: not a token choice
    assert driver_auth_env(st.gcs_address, jobs_env) == driver_auth_env(f"localhost:{state['ray_port']}", jobs_env) == token
    assert driver_auth_env(f"ray://127.0.0.1:{state['ray_port']}", jobs_env) == {}  # the GCS port is not the client port
    assert driver_auth_env(f"127.0.0.1:{free_port()}", jobs_env) == {}  # another cluster here: its token is not offered
    assert driver_auth_env(f"head.example.com:{state['ray_port']}", jobs_env) == {}
    code = (
        "import sys, ray; from flotilla.cluster import ensure_ray; ensure_ray(sys.argv[1]); "
        "print('CPUS', ray.cluster_resources()['CPU'])"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k not in ("RAY_ADDRESS", "RAY_TMPDIR")}
    for address in (st.gcs_address, st.client_address):
        out = subprocess.run([sys.executable, "-c", code, address], env=clean, capture_output=True, text=True, timeout=180)
        if out.returncode != 0 or "CPUS 2.0" not in out.stdout:  # pytest.fail: an assert's message is cut short
            pytest.fail(f"the driver could not join at {address}: {out.stderr[-3000:]}")


def test_no_file_or_job_record_holds_the_token_or_the_hub_secret_but_their_own(cluster, jobs_env, ingested, hub):
    """After real jobs (an ingest followed to its end, trainings started, stopped and refused), the cluster's token
    and the hub's secret key are, in any of their forms, only in the 0600 files meant to hold them: not in the
    home's state and logs, Ray's session folder (its logs, the jobs' driver logs) or what the Jobs API keeps."""
    creds = hub.credentials
    forms = {f"the Ray token {how}": f for how, f in secret_forms(cluster.token_path.read_text().strip()).items()}
    forms |= {f"the hub's secret {how}": f for how, f in secret_forms(creds.secret_access_key, creds.access_key_id).items()}
    roots = [jobs_env.home, Path(cluster.state()["ray_tmpdir"])]
    found, scanned = files_holding(roots, forms)
    print(f"\n{scanned} files read under {', '.join(map(str, roots))}; found in {sorted(map(str, found))}")
    meant = {cluster.token_path: "the Ray token", jobs_env.hub_dir / "credentials.json": "the hub's secret"}
    meant[jobs_env.hub_dir / "config.yaml"] = "the hub's secret"  # lakeFS makes its admin user from it
    for p in set(found) - set(meant):  # where it leaked, the token masked: what the failure must show
        for f in forms.values():
            for line in p.read_bytes().splitlines():
                if f in line:
                    print(f"{p}: {line.replace(f, b'<SECRET>')[:600]!r}")
    assert scanned > 50 and set(found) <= set(meant), {str(p): h for p, h in found.items() if p not in meant}
    assert all(h.startswith(meant[p]) for p, hits in found.items() for h in hits), found
    assert cluster.token_path in found and stat.S_IMODE(cluster.token_path.stat().st_mode) == 0o600
    records = json.dumps([j.dict() if hasattr(j, "dict") else vars(j) for j in list_jobs()], default=str)
    assert "long-train" in records and not any(f.decode() in records for f in forms.values())


def test_down_stops_only_this_cluster(cluster, jobs_env, tmp_path_factory):
    other = LocalCluster(Settings(home=tmp_path_factory.mktemp("other-home"), cache=jobs_env.cache))
    try:
        assert other.up(num_cpus=1, ray_port=free_port(), dashboard_port=free_port(), object_store_mb=128).healthy
        mine, theirs = _procs(cluster), _procs(other)
        assert mine and theirs and not mine & theirs
        tmp = Path(cluster.state()["ray_tmpdir"])
        t0 = time.monotonic()
        msg = cluster.down()
        print(f"cluster down: {time.monotonic() - t0:.1f}s ({msg})")
        time.sleep(0.5)  # orphans are reaped by init
        assert not [p for p in mine if alive(p)], msg
        assert not (tmp / "ray" / "ray_current_cluster").exists() and cluster.state() is None
        assert not cluster.status().running
        assert all(alive(p) for p in theirs)
        st = other.status()
        assert st.running and st.healthy and st.nodes == 1
        assert "was not running" in cluster.down()
    finally:
        stop_cluster(other)
    assert os.environ["FLOTILLA_HOME"] == str(jobs_env.home)
