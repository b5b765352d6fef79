"""The CLI as a user runs it: separate processes, exit codes, a private FLOTILLA_HOME."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flotilla.hub.server import free_port

pytestmark = pytest.mark.integration

FLOTILLA = [sys.executable, "-m", "flotilla.cli"]


@pytest.fixture
def cli(tmp_path, lakefs_binary):
    port = free_port()
    env = {
        **os.environ,
        "FLOTILLA_HOME": str(tmp_path / "home"),
        "FLOTILLA_HUB_PORT": str(port),
        "FLOTILLA_LAKEFS_BIN": str(lakefs_binary),
        "COLUMNS": "200",
    }

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([*FLOTILLA, *args], env=env, capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"flotilla {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    run.port = port  # type: ignore[attr-defined]
    yield run
    run("hub", "down", check=False)


def test_hub_up_status_logs_down(cli, tmp_path):
    assert cli("hub", "status", check=False).returncode == 3
    up = cli("hub", "up")
    assert "running" in up.stdout and "127.0.0.1" in up.stdout
    assert cli("hub", "up").returncode == 0  # idempotent
    assert "running" in cli("hub", "status").stdout
    assert "lakeFS" in cli("hub", "logs", "-n", "30").stdout
    assert "gracefully" in cli("hub", "down").stdout
    assert cli("hub", "status", check=False).returncode == 3
    creds = Path(tmp_path / "home" / "hub" / "credentials.json")
    assert oct(creds.stat().st_mode & 0o777) == "0o600"


def test_hub_credentials_prints_the_login_and_status_says_where_the_ui_is(cli, tmp_path):
    before = cli("hub", "credentials", check=False)  # no keys are made up before the hub first ran
    assert before.returncode == 1 and "flotilla hub up" in before.stdout + before.stderr
    assert not (tmp_path / "home" / "hub" / "credentials.json").exists()
    cli("hub", "up")
    keys = json.loads((tmp_path / "home" / "hub" / "credentials.json").read_text())
    out = cli("hub", "credentials").stdout
    assert f"http://127.0.0.1:{cli.port}/" in out
    assert keys["access_key_id"] in out and keys["secret_access_key"] in out
    status = cli("hub", "status").stdout
    assert "web UI:" in status and keys["secret_access_key"] not in status  # the secret only where asked for


def test_errors_are_one_clear_message_and_exit_1(cli, tmp_path):
    cli("hub", "up")
    # a second hub on the same port but another home: the port is taken
    env_home = tmp_path / "other"
    proc = subprocess.run(
        [*FLOTILLA, "hub", "up"],
        env={**os.environ, "FLOTILLA_HOME": str(env_home), "FLOTILLA_HUB_PORT": str(cli.port)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "already in use" in proc.stderr and "FLOTILLA_HUB_PORT" in proc.stderr and "Traceback" not in proc.stderr


def _sweep_check(spec: str, cwd: Path) -> subprocess.CompletedProcess:
    """``flotilla sweep <spec> --check`` in ``cwd``, on a terminal wide enough that Rich does not wrap."""
    return subprocess.run(
        [*FLOTILLA, "sweep", spec, "--check"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "250"},
    )


def test_sweep_check_validates_without_running_anything(tmp_path):
    root = Path(__file__).resolve().parents[2]
    ok = _sweep_check("tuning/face_family.yaml", root)
    assert ok.returncode == 0 and "8 trials" in ok.stdout and "tpe + asha" in ok.stdout
    (tmp_path / "tuning").mkdir()
    bad = (
        (root / "tuning" / "face_family.yaml")
        .read_text()
        .replace("optim.lr:", "optim.lrr:")
        .replace("val/age/mae", "val/age/mea")
    )
    (tmp_path / "tuning" / "bad.yaml").write_text(bad)
    (tmp_path / "jobs").symlink_to(root / "jobs")
    proc = _sweep_check("tuning/bad.yaml", tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "did you mean 'lr'" in proc.stderr and "'val/age/mea'" in proc.stderr and "val/age/mae" in proc.stderr


def test_sweep_actions_misspelled_or_pointing_outside_the_sweeps_folder_are_clear_errors(tmp_path):
    env = {**os.environ, "COLUMNS": "250", "FLOTILLA_HOME": str(tmp_path / "home")}
    typo = subprocess.run([*FLOTILLA, "sweep", "resum", "abc"], capture_output=True, text=True, timeout=120, env=env)
    assert typo.returncode == 2 and "Did you mean 'resume'?" in typo.stderr and "Traceback" not in typo.stderr
    escape = subprocess.run([*FLOTILLA, "sweep", "show", "../../etc"], capture_output=True, text=True, timeout=120, env=env)
    assert escape.returncode == 1 and "invalid sweep id '../../etc'" in escape.stderr and "Traceback" not in escape.stderr


def test_data_validate_prints_its_report_saves_it_and_exits_by_the_verdict(cli, tmp_path):
    import re

    cli("hub", "up")
    # 120 faces are too few for the gate's group counts, judged strictly (by default groups that small only warn):
    # the ingest fails and leaves its branch to fix; validate judges the branch by the thresholds it recorded
    strict = tmp_path / "strict.yaml"
    strict.write_text("representativeness: error\n")
    failed = cli(
        "data", "generate", "--n", "120", "--name", "few", "--thresholds", str(strict), "--report-dir", str(tmp_path / "r1"),
        check=False,
    )  # fmt: skip
    assert failed.returncode == 1
    branch = re.search(r"--ref (ingest-few-[\w-]+)", failed.stderr.replace("\n", "")).group(1)
    again = cli("data", "validate", "--dataset", "few", "--ref", branch, "--report-dir", str(tmp_path / "r2"), check=False)
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert (
        "dataset 'few': FAILED" in again.stdout
        and list((tmp_path / "r2").glob("*.json"))
        and list((tmp_path / "r2").glob("*.png"))
    )
    # with --merge a failure raises: the report is still printed and saved first, and the error names the failing checks
    merge = cli(
        "data", "validate", "--dataset", "few", "--ref", branch, "--merge", "--report-dir", str(tmp_path / "r5"), check=False
    )
    assert merge.returncode == 1 and "Traceback" not in merge.stderr
    assert "dataset 'few': FAILED" in merge.stdout and (tmp_path / "r5" / "few-validation.json").is_file()
    assert "representativeness." in merge.stderr and "nothing was merged" in merge.stderr.replace("\n", " ")
    cli("data", "generate", "--n", "1500", "--name", "enough", "--report-dir", str(tmp_path / "r3"))
    ok = cli("data", "validate", "--dataset", "enough", "--report-dir", str(tmp_path / "r4"))
    assert "PASSED" in ok.stdout and "Traceback" not in ok.stderr


def test_a_generator_option_out_of_range_is_a_clear_error(tmp_path):
    env = {**os.environ, "COLUMNS": "250", "FLOTILLA_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [*FLOTILLA, "data", "generate", "--n", "10", "--lighting", "2"], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 1 and "lighting" in proc.stderr and "Traceback" not in proc.stderr
