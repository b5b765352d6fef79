"""Four teams write to one hub at once, and nothing they write holds a secret (issue 22, deliverable 9).

A hub of its own under a ``FLOTILLA_HOME`` of its own: a dataset ingested from the command line, then, each from
its own client in its own thread at the same moment, two trainings that merge their models into main (one
tracked by W&B, offline), an ingest of a new dataset and a label fix of the dataset the trainings read; then the
commands that read what they made.

- **Concurrency**: all four succeed; their merges into main are serialized (main's first-parent history is a
  chain holding each of the four merges once, nothing lost to a race); afterwards main is consistent: both
  datasets pass the gate again at main's head, the fix is in, both models are on main.
- **Secrets**: every file under the home (the hub's state, data and logs, the runs' folders, W&B's offline run),
  W&B's folder and Ray's session folder is read whole, and every commit on every branch (message, metadata,
  committer) and every tag is read through the API: the hub's secret key appears, in any of its forms, only in
  the two files meant to hold it, which only their owner can read; the token of the local Ray the run trained on
  appears in none (its file is Ray's own, ``~/.ray/auth_token``). A flotilla cluster's token is scanned for the
  same way after real jobs in ``test_cluster_jobs.py``.

One module for both: the two trainings are the expensive part, and the scan reads what they wrote.
"""

from __future__ import annotations

import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from tests.integration.helpers import files_holding, secret_forms, tiny
from typer.testing import CliRunner

from flotilla.cli import app
from flotilla.data import Thresholds, generate, read_labels, relabel
from flotilla.hub import Hub, LocalHub
from flotilla.hub.server import free_port
from flotilla.settings import Settings
from flotilla.training import train

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

LAX = Thresholds(representativeness="warning")
MEANT_TO_HOLD_IT = {"hub/credentials.json", "hub/config.yaml"}
"""The files (relative to FLOTILLA_HOME) whose job is to hold the hub's secret: the local hub's credentials, and
lakeFS's config, from whose ``installation:`` block lakeFS makes its admin user at start-up."""


def cli(env: dict[str, str], *args: str) -> str:
    out = CliRunner().invoke(app, list(args), env=env)
    assert out.exit_code == 0, (args, out.output)
    return out.output


@pytest.fixture(scope="module")
def teams(tmp_path_factory: pytest.TempPathFactory, lakefs_binary: Path, local_ray) -> Any:
    settings = Settings(
        home=tmp_path_factory.mktemp("teams-home"), cache=Settings.from_env().cache, hub_port=free_port()
    )  # as conftest's
    server = LocalHub(settings.hub_dir, settings.hub_port, lakefs_binary)
    server.up(timeout=60)
    hub = Hub(credentials=server.credentials(), settings=settings)
    repo = hub.ensure_repo("faces")
    env = {"COLUMNS": "200", "FLOTILLA_HOME": str(settings.home), "FLOTILLA_HUB_PORT": str(settings.hub_port)}
    gate = ("--repo", "faces", "--allow-underrepresented", "--report-dir", str(settings.home / "reports"))
    printed = [cli(env, "data", "generate", "--n", "240", "--name", "faces", *gate)]
    start = repo.resolve("main")
    labels = read_labels(repo, "main", "faces")
    sid, gender = labels.column("sample_id")[0].as_py(), labels.column("gender")[0].as_py()
    go = threading.Barrier(4)

    def own_hub() -> Hub:  # a team's own client, as another process would have
        return Hub(credentials=hub.credentials, settings=settings)

    def training(name: str, wandb: bool):
        data = {"repo": "faces"}
        spec = tiny(name, data=data, epochs=1, scaling={"workers": 1}, tracking={"wandb": wandb}, merge_into="main")
        go.wait()
        return train(spec, hub=own_hub())

    def ingest():
        go.wait()
        return generate(own_hub(), "faces", "incoming", 120, seed=7, thresholds=LAX, report_dir=settings.home / "reports")

    def label_fix():
        go.wait()
        return relabel(own_hub(), "faces", "faces", {sid: {"gender": 1 - gender}}, reason="team 4's annotator")

    with pytest.MonkeyPatch.context() as mp, ThreadPoolExecutor(4) as pool:
        mp.delenv("WANDB_DIR", raising=False)  # W&B's run goes under the run's own folder in the home, as for a user
        futures = [pool.submit(training, "team-a", True), pool.submit(training, "team-b", False)]
        futures += [pool.submit(ingest), pool.submit(label_fix)]
        results = [f.result() for f in futures]  # every team succeeded: none raises
    for dataset in ("faces", "incoming"):  # main is consistent: both datasets pass the gate again at its head
        printed.append(cli(env, "data", "validate", "--dataset", dataset, *gate))
        assert "PASSED" in printed[-1]
    printed += [
        cli(env, *args)
        for args in (("models", "list", "--repo", "faces"), ("hub", "branches"), ("data", "show", "--repo", "faces"))
    ]
    yield {"hub": hub, "repo": repo, "settings": settings, "start": start, "results": results, "printed": printed}
    server.down()


def first_parents(repo, ref: str, stop: str) -> list[str]:
    """main's first-parent chain from ``ref`` back to ``stop`` (exclusive): the commits made on main itself."""
    chain, commit = [], repo.commit_info(ref)
    while commit.id != stop:
        chain.append(commit.id)
        commit = repo.commit_info(commit.parents[0])
    return chain


def test_two_trainings_an_ingest_and_a_label_fix_at_once_all_land_on_main_one_after_another(teams):
    repo, start = teams["repo"], teams["start"]
    team_a, team_b, ingested, fixed = teams["results"]
    merges = {
        "team a": team_a.models[0].merge_commit,
        "team b": team_b.models[0].merge_commit,
        "ingest": ingested.merge_commit,
        "label fix": fixed.merge_commit,
    }
    assert all(merges.values()), merges
    chain = first_parents(repo, "main", start)
    assert len(chain) == len(set(chain)) and set(merges.values()) <= set(chain), (merges, chain)
    for result in (team_a, team_b):  # each read the commit main had when it pinned its data
        assert result.data.commit == start or result.data.commit in chain
        assert repo.exists("main", f"models/{result.run_id}/family/card.json")
    assert fixed.samples == 1 and fixed.base_commit in [start, *chain]
    fixed_row = read_labels(repo, "main", "faces").slice(0, 1).to_pylist()[0]
    before_row = read_labels(repo, start, "faces").slice(0, 1).to_pylist()[0]
    assert fixed_row["sample_id"] == before_row["sample_id"] and fixed_row["gender"] == 1 - before_row["gender"]


def ray_token() -> str | None:
    """The token the local Ray runs with: Ray's own default file (``ray.init`` makes one when there is none)."""
    path = Path.home() / ".ray" / "auth_token"
    return (path.read_text().strip() or None) if path.is_file() else None


def test_the_secrets_are_only_in_their_own_private_files(teams):
    settings, creds = teams["settings"], teams["hub"].credentials
    secrets = {"the hub's secret key": secret_forms(creds.secret_access_key, creds.access_key_id)}
    if token := ray_token():
        secrets["the Ray token"] = secret_forms(token)
    assert list((settings.home / "runs").glob("*/wandb/offline-run-*")), "team a's W&B run is under its run folder"
    roots = [settings.home, Path(os.environ["WANDB_DIR"]), Path(os.environ["RAY_TMPDIR"])]
    allowed = {settings.home / p for p in MEANT_TO_HOLD_IT}
    forms = {f"{what} {how}": form for what, by_form in secrets.items() for how, form in by_form.items()}
    found, scanned = files_holding(roots, forms)
    print(f"\n{scanned} files read under {', '.join(map(str, roots))}; found in {sorted(map(str, found))}")
    assert scanned > 100  # the hub's state, the shards, the runs' checkpoints, W&B's files, Ray's logs
    assert set(found) <= allowed, {str(p): hits for p, hits in found.items() if p not in allowed}
    assert all(h.startswith("the hub's") for hits in found.values() for h in hits), found  # never the Ray token
    for text in teams["printed"]:  # nor anything the commands printed
        assert not any(f.decode() in text for f in forms.values())
    found, _ = files_holding(allowed, secrets["the hub's secret key"])
    assert set(found) == allowed  # the scan finds the secret where it is
    for path in allowed:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_no_commit_or_tag_on_any_branch_holds_the_hub_secret(teams):
    hub = teams["hub"]
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
    assert commits >= 10  # the ingests and their merges, the fix and its receipt, the runs' checkpoints and merges
