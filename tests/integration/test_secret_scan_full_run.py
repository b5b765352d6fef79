"""No secret in anything a full run writes (issue 22, deliverable 9).

A run under its own ``FLOTILLA_HOME`` with its own hub, from the command line as a user does it: an ingest
(``data generate``), a training with W&B (offline) merged into main, then the commands that read what they
made. Every file under the home (the hub's state, data and logs, the run's folder, W&B's offline run), Ray's
session folder and W&B's folder is read whole, and every commit on every branch (message and metadata) and
every tag of the hub is read through its API: the hub's secret key appears, in any of its forms, only in the
file meant to hold it, which only its owner can read; the token of the local Ray the run trained on appears in
none of them (its file is Ray's own, ``~/.ray/auth_token``). A flotilla cluster's token is scanned for the same
way after real jobs in ``test_cluster_jobs.py``.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
import yaml
from tests.conftest import make_settings
from tests.integration.helpers import files_holding, secret_forms
from typer.testing import CliRunner

from flotilla.cli import app
from flotilla.hub import Hub, LocalHub

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

MEANT_TO_HOLD_IT = {"hub/credentials.json", "hub/config.yaml"}
"""The files (relative to FLOTILLA_HOME) whose job is to hold the hub's secret: the local hub's credentials, and
lakeFS's config, from whose ``installation:`` block lakeFS makes its admin user at start-up."""


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory, lakefs_binary: Path, local_ray):
    """A hub of its own, a dataset ingested and a family trained and merged, all through the CLI."""
    settings = make_settings(tmp_path_factory.mktemp("scan-home"))
    server = LocalHub(settings.hub_dir, settings.hub_port, lakefs_binary)
    server.up(timeout=60)
    hub = Hub(credentials=server.credentials(), settings=settings)
    hub.ensure_repo("faces")
    env = {"COLUMNS": "200", "FLOTILLA_HOME": str(settings.home), "FLOTILLA_HUB_PORT": str(settings.hub_port)}
    spec = settings.home.parent / "family.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "scan",
                "data": {"repo": "faces", "dataset": "faces"},
                "model": {"width": 8},
                "epochs": 1,
                "batch_size": 64,
                "scaling": {"workers": 1, "cpus_per_worker": 1},
                "tracking": {"wandb": True, "project": "scan"},
                "merge_into": "main",
            }
        )
    )
    reports = settings.home / "reports"
    commands = [
        [
            "data",
            "generate",
            "--n",
            "240",
            "--repo",
            "faces",
            "--name",
            "faces",
            "--allow-underrepresented",
            "--report-dir",
            str(reports),
        ],
        ["train", str(spec)],
        ["data", "show", "--repo", "faces", "--dataset", "faces"],
        ["models", "list", "--repo", "faces"],
        ["hub", "branches"],
        ["hub", "status"],
    ]
    outputs = []
    for argv in commands:
        t = time.monotonic()
        out = CliRunner().invoke(app, argv, env=env)
        assert out.exit_code == 0, (argv, out.output)
        print(f"\nflotilla {' '.join(argv[:2])}: {time.monotonic() - t:.1f}s")
        outputs.append(out.output)
    yield settings, hub, outputs
    server.down()


def ray_token() -> str | None:
    """The token the local Ray runs with: Ray's own default file (``ray.init`` makes one when there is none)."""
    path = Path.home() / ".ray" / "auth_token"
    return path.read_text().strip() or None if path.is_file() else None


def test_the_secrets_are_only_in_their_own_private_files(full_run):
    settings, hub, outputs = full_run
    creds = hub.credentials
    secrets = {"the hub's secret key": secret_forms(creds.secret_access_key, creds.access_key_id)}
    if token := ray_token():
        secrets["the Ray token"] = secret_forms(token)
    wandb_dir = Path(os.environ["WANDB_DIR"])
    assert list(wandb_dir.glob("wandb/offline-run-*")), "W&B wrote its offline run there"
    roots = [settings.home, wandb_dir, Path(os.environ["RAY_TMPDIR"])]
    allowed = {settings.home / p for p in MEANT_TO_HOLD_IT}
    forms = {f"{what} {how}": form for what, by_form in secrets.items() for how, form in by_form.items()}
    found, scanned = files_holding(roots, forms)
    print(f"\n{scanned} files read under {', '.join(map(str, roots))}; found in {sorted(map(str, found))}")
    assert scanned > 100  # the hub's state, the shards, the run's checkpoints, W&B's files, Ray's logs
    assert set(found) <= allowed, {str(p): hits for p, hits in found.items() if p not in allowed}
    assert all(h.startswith("the hub's") for hits in found.values() for h in hits), found  # never the Ray token
    for text in outputs:  # nor anything the commands printed
        assert not any(f.decode() in text for f in forms.values())
    found, _ = files_holding(allowed, secrets["the hub's secret key"])
    assert set(found) == allowed  # the scan finds the secret where it is
    for path in allowed:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_no_commit_or_tag_on_any_branch_holds_the_hub_secret(full_run):
    _, hub, _ = full_run
    forms = [f.decode() for f in secret_forms(hub.credentials.secret_access_key, hub.credentials.access_key_id).values()]
    commits = 0
    for name in hub.repos():
        repo = hub.repo(name)
        for branch in repo.branches():
            for c in repo.log(branch, limit=1000):
                text = c.message + " ".join(f"{k}={v}" for k, v in c.metadata.items()) + c.committer
                assert not any(f in text for f in forms), (name, branch, c.id)
                commits += 1
        for tag, commit in repo.tags().items():
            assert not any(f in tag + commit for f in forms)
    assert commits >= 4  # the repository's first commit, the ingest, its merge, the run's checkpoints and merge
