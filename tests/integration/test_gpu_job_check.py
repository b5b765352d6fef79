"""`flotilla jobs submit jobs/train_face_family_gpu.yaml --check` on a machine without a GPU: the GPU job spec is
valid, its data commit is pinned against a real hub, and nothing is submitted (there is no cluster here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flotilla.cli import app
from flotilla.data.api import generate
from flotilla.data.store import list_datasets
from flotilla.data.validate import Thresholds
from flotilla.jobs.specs import family_of, load_job_spec

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
JOB = ROOT / "jobs/train_face_family_gpu.yaml"


@pytest.fixture
def faces(hub):
    """The repository and dataset the shipped family spec names (made here when the session has none)."""
    family = family_of(load_job_spec(JOB, root=ROOT), ROOT)
    repo, dataset = family.data.repo, family.data.dataset
    made = repo not in hub.repos()
    hub.ensure_repo(repo)
    if dataset not in list_datasets(hub.repo(repo), "main"):
        generate(hub, repo, dataset, 60, seed=2, thresholds=Thresholds(min_group_count=1))
    yield hub.repo(repo)
    if made:
        hub.delete_repo(repo)


def test_the_gpu_job_passes_the_dry_run_without_a_gpu(faces, hub_settings):
    env = {"FLOTILLA_HOME": str(hub_settings.home), "FLOTILLA_HUB_PORT": str(hub_settings.hub_port), "COLUMNS": "250"}
    out = CliRunner().invoke(app, ["jobs", "submit", str(JOB), "--check"], env=env)
    assert out.exit_code == 0, out.output
    pinned = yaml.safe_load(out.stdout.split(" with:\n", 1)[1])
    scaling = pinned["family"]["scaling"]
    assert scaling["use_gpu"] and scaling["gpus_per_worker"] == 1 and pinned["family"]["backend"] == "deepspeed"
    assert pinned["family"]["data"]["ref"] == faces.resolve("main")  # pinned to the commit, not the branch name
