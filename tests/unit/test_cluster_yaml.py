"""cluster.yaml: the fields flotilla's scale-out docs rely on, and no secret written into it; what a user must set
named once at the top, work kept off the head, the image given the Python flotilla needs, the IAM permissions
listed, and the autoscaling test's variant keeping its node types. The GPU job spec parses through the real
job-spec parser and fits cluster.yaml's GPU workers."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml
from tests import cluster_config

from flotilla.jobs.specs import TrainJob, family_of, load_job_spec

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = cluster_config.CLUSTER_YAML
TEXT = CLUSTER_YAML.read_text()
CONFIG = cluster_config.load()


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
    (bin_dir / "aws").chmod(0o755)
    venv = tmp_path / "flotilla-venv" / "bin"  # the setup's own Python 3.11 venv (see the uv steps)
    venv.mkdir(parents=True)
    (venv / "python").symlink_to(sys.executable)
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


def _top_block() -> list[str]:
    """The leading comment lines, up to the first line of YAML."""
    lines = []
    for line in TEXT.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return lines


@pytest.mark.parametrize("which", ["cluster.yaml", "fake variant"])
def test_rays_own_schema_accepts_the_file_and_its_variant(which):
    """What `ray up` checks first (a command YAML read as a mapping, a misspelt key, a wrong type)."""
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = CONFIG if which == "cluster.yaml" else cluster_config.fake_variant(CONFIG, gcs_address="127.0.0.1:1")
    jsonschema.validate(config, schema)


def test_every_value_to_set_is_a_placeholder_named_in_the_top_block():
    named = [m.group(1) for line in _top_block() if (m := cluster_config.SET_LINE.match(line))]
    assert len(named) == len(set(named)) >= 4, named
    body = TEXT.split("\n", len(_top_block()))[-1]
    used = set(cluster_config.PLACEHOLDER.findall(body))
    assert used == set(named), f"used but not named: {used - set(named)}; named but not used: {set(named) - used}"
    # nothing that looks like a real value where the user has to choose one
    for fake in ("ami-", "your-org", "your-bucket", "example.com"):
        assert fake not in TEXT, fake


def test_the_head_advertises_no_cpu_for_work():
    head = CONFIG["available_node_types"][CONFIG["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and not head["resources"].get("GPU"), head
    assert head["max_workers"] == 0
    start = " ".join(CONFIG["head_start_ray_commands"])
    assert "--num-cpus=0" in start and "--autoscaling-config=" in start and "--dashboard-host=127.0.0.1" in start
    assert all(t["resources"].get("CPU", 0) > 0 for t in cluster_config.worker_types(CONFIG).values())


def test_the_image_gets_a_python_flotilla_supports_and_ray_runs_from_it():
    setup = "\n".join(CONFIG["setup_commands"])
    assert "--python 3.11" in setup and "~/flotilla-venv/bin/python" in setup
    for cmds in (CONFIG["head_start_ray_commands"], CONFIG["worker_start_ray_commands"]):
        assert "PATH=$HOME/flotilla-venv/bin:$PATH" in cmds[-1], cmds
    requires = (ROOT / "pyproject.toml").read_text().split("requires-python", 1)[1].splitlines()[0]
    assert ">=3.11" in requires.replace(" ", ""), requires


def test_the_iam_permissions_of_head_and_workers_are_listed():
    top = "\n".join(_top_block())
    head = top.split("#   head ", 1)[1].split("#   workers ", 1)[0]
    for action in (
        "ec2:RunInstances",
        "ec2:TerminateInstances",
        "ec2:DescribeInstances",
        "ec2:CreateTags",
        "iam:PassRole",
        "secretsmanager:GetSecretValue",
    ):
        assert action in head, action
    workers = top.split("#   workers ", 1)[1].split("#   you ", 1)[0]
    assert "secretsmanager:GetSecretValue" in workers and "ec2:" not in workers
    profiles = {t["node_config"]["IamInstanceProfile"]["Name"] for t in CONFIG["available_node_types"].values()}
    assert profiles == {"<set: head instance profile>", "<set: worker instance profile>"}, profiles


def test_the_autoscaling_variant_keeps_the_node_types_and_a_drift_is_caught():
    variant = cluster_config.fake_variant(CONFIG, gcs_address="127.0.0.1:1")
    assert cluster_config.same_shape(CONFIG, variant) == []
    assert variant["provider"]["type"] == "fake_multinode" and variant["idle_timeout_minutes"] < 1
    drifted = copy.deepcopy(variant)
    drifted["available_node_types"]["cpu_worker"]["resources"]["GPU"] = 1
    del drifted["available_node_types"]["gpu_worker"]
    problems = cluster_config.same_shape(CONFIG, drifted)
    assert any("worker types" in p for p in problems) and any("cpu_worker" in p for p in problems), problems
    edited = copy.deepcopy(CONFIG)
    edited["available_node_types"][CONFIG["head_node_type"]]["resources"]["CPU"] = 2
    assert any("head resources" in p for p in cluster_config.same_shape(edited, variant))


def test_the_gpu_job_spec_parses_and_fits_the_gpu_workers():
    path = ROOT / "jobs/train_face_family_gpu.yaml"
    job = load_job_spec(path, root=ROOT)
    assert isinstance(job, TrainJob)
    family = family_of(job, ROOT)
    s = family.scaling
    assert s.use_gpu and s.gpus_per_worker == 1 and s.workers > 1
    assert family.backend == "deepspeed" and family.deepspeed.dtype == "auto"  # bf16 where the GPU has it
    gpu = CONFIG["available_node_types"]["gpu_worker"]
    assert s.gpus_per_worker <= gpu["resources"]["GPU"] and s.cpus_per_worker <= gpu["resources"]["CPU"]
    assert s.workers <= gpu["max_workers"]
    assert "NEEDS GPU NODES" in path.read_text().split("\nkind:", 1)[0]
