"""cluster.yaml: the fields flotilla's scale-out docs rely on, and no secret written into it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

CLUSTER_YAML = Path(__file__).resolve().parents[2] / "cluster.yaml"


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def _strings(node):
    """Every string value anywhere in the config (keys included)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)
    elif isinstance(node, str):
        yield node


def test_names_provider_and_head(config):
    assert config["cluster_name"] == "flotilla"
    assert config["provider"]["type"]
    types = config["available_node_types"]
    assert config["head_node_type"] in types


def test_gpu_worker_type_with_sane_autoscaling_bounds(config):
    types = config["available_node_types"]
    gpu = [name for name, t in types.items() if name != config["head_node_type"] and t.get("resources", {}).get("GPU", 0) >= 1]
    assert gpu, "no worker type offers a GPU"
    for name in gpu:
        t = types[name]
        assert 0 <= t["min_workers"] <= t["max_workers"], name
        assert t["max_workers"] <= config["max_workers"], name
    for name, t in types.items():
        assert t.get("min_workers", 0) <= t.get("max_workers", 0), name


def test_setup_installs_flotilla_and_reads_secrets_from_the_secret_store(config):
    setup = " ".join(config["setup_commands"])
    assert re.search(r"pip install[^\n]*flotilla", setup)
    assert "secretsmanager get-secret-value" in setup  # lakeFS keys and the Ray token come from there
    assert "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY" in setup and "umask 077" in setup


def test_no_secret_is_written_into_the_file(config):
    text = CLUSTER_YAML.read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}", text), "an AWS/lakeFS access key id is inline"
    for s in _strings(config):
        for word in re.findall(r"[A-Za-z0-9/+=]{40}", s):
            # a 40-char run of key alphabet with both cases and a digit looks like a secret access key
            looks_random = re.search(r"[a-z]", word) and re.search(r"[A-Z]", word) and re.search(r"[0-9]", word)
            assert not looks_random, f"value looks like an inline secret: {word[:6]}…"
    inline = re.search(r"^\s*(secret_access_key|access_key_id|password|token|auth_token)\s*:\s*\S", text, re.M | re.I)
    assert not inline, f"a credential key with an inline value: {inline.group(1) if inline else ''}"


def test_dashboard_binds_localhost_and_token_auth_stays_on(config):
    head = " ".join(config["head_start_ray_commands"])
    assert "ray start --head" in head
    assert "--dashboard-host=127.0.0.1" in head or "--dashboard-host 127.0.0.1" in head
    assert "RAY_AUTH_MODE=token" in head and "RAY_AUTH_MODE=token" in " ".join(config["worker_start_ray_commands"])
    assert "0.0.0.0" not in head


def test_the_secret_step_runs_and_writes_the_env_file(config, tmp_path):
    """Run the setup step itself: bash parses it, and its Python turns the secret JSON into the env file.

    ``aws`` is replaced by a stub printing a fake secret, and HOME by a temp dir; ``python3`` is this
    interpreter. (The first version used backslashes inside an f-string, which Python before 3.12
    refuses — the step could never have run on the nodes' stock python3.)
    """
    import json
    import os
    import stat
    import subprocess
    import sys

    (step,) = [c for c in config["setup_commands"] if "flotilla/lakefs" in c]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    secret = {"endpoint": "http://hub:8000", "access_key_id": "AKIDEXAMPLE", "secret_access_key": "s3cr3t"}
    (bin_dir / "aws").write_text(f"#!/bin/sh\necho '{json.dumps(secret)}'\n")
    (bin_dir / "python3").symlink_to(sys.executable)
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "HOME": str(tmp_path), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    subprocess.run(["bash", "-n", "-c", step], check=True)
    subprocess.run(["bash", "-c", step], check=True, env=env, timeout=60)
    out = tmp_path / ".flotilla" / "lakefs.env"
    assert out.read_text().splitlines() == [
        "LAKECTL_SERVER_ENDPOINT_URL=http://hub:8000",
        "LAKECTL_CREDENTIALS_ACCESS_KEY_ID=AKIDEXAMPLE",
        "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY=s3cr3t",
    ]
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
