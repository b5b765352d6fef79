"""A killed ingest leaves no ownerless branch (issue 22, item 4).

``flotilla data generate`` runs in its own process and is SIGKILLed (with its shard workers, as a
kill of its process group or the OOM killer would) once its ingest branch holds staged shards.
Nothing can clean up in a process that gets no signal handler; the next ``flotilla hub branches``
sees the branch's owner is gone and lists it as orphaned, and ``--prune`` deletes it. Main never
saw any of it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from flotilla.cli import app
from flotilla.errors import HubUnavailableError
from flotilla.hub import flotilla_branches, owners, prune_branches
from flotilla.hub.client import Hub
from flotilla.hub.server import LocalHub

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def _cli(hub_settings, *args: str, code: int = 0) -> str:
    env = {"COLUMNS": "400", "FLOTILLA_HOME": str(hub_settings.home), "FLOTILLA_HUB_PORT": str(hub_settings.hub_port)}
    out = CliRunner().invoke(app, list(args), env=env)
    assert out.exit_code == code, out.output
    assert "Traceback" not in out.output, out.output
    return out.output


def _staged_ingest_branch(repo, proc: subprocess.Popen[bytes], timeout: float = 180.0) -> str:
    """The ingest branch once shards are staged on it (uploaded, not committed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the ingest ended before it could be killed: raise --n"
        for b in repo.branches():
            if b.startswith("ingest-") and any(c.path.endswith(".parquet") for c in repo.uncommitted(b)):
                return b
        time.sleep(0.2)
    raise AssertionError("no ingest branch with staged shards appeared")


def test_a_killed_ingest_is_listed_orphaned_and_prune_removes_it(hub, hub_settings, repo):
    env = {**os.environ, "FLOTILLA_HOME": str(hub_settings.home), "FLOTILLA_HUB_PORT": str(hub_settings.hub_port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flotilla.cli", "data", "generate", "--n", "60000", "--repo", repo.name, "--name", "big"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        branch = _staged_ingest_branch(repo, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    record = owners.owner_of(hub_settings.home, repo.name, branch)
    assert record is not None and record.pid == proc.pid and record.gone()
    assert repo.uncommitted(branch), "the kill should leave staged shards behind"

    listing = _cli(hub_settings, "hub", "branches", "--repo", repo.name)
    row = next(line for line in listing.splitlines() if branch in line)
    assert "orphaned" in row and f"pid {proc.pid}" in row and "yes" in row, listing

    pruned = _cli(hub_settings, "hub", "branches", "--repo", repo.name, "--prune")
    assert branch in pruned and "deleted 1 branch(es)" in pruned, pruned
    assert repo.branches() == ["main"]
    assert owners.owner_of(hub_settings.home, repo.name, branch) is None
    assert repo.list("main", "datasets/") == []  # main never saw any of it (only the gate the ingest installs first)


def test_an_ingest_branch_the_dead_hub_kept_names_itself_and_is_pruned_later(isolated_settings, lakefs_binary, monkeypatch):
    """The hub dies mid-ingest: the abort cannot delete the branch; the error names it and the prune command."""
    monkeypatch.setenv("FLOTILLA_HUB_RETRY_S", "2")  # do not wait the default 2 minutes for the hub to come back
    settings = isolated_settings()
    server = LocalHub(settings.hub_dir, settings.hub_port, lakefs_binary)
    server.up(timeout=60)
    try:
        hub = Hub(credentials=server.credentials(), settings=settings)
        repo = hub.ensure_repo("outage")
        ingest = repo.transact("faces-1", "main", prefix="ingest-")
        with pytest.raises(HubUnavailableError) as info, ingest:
            ingest.put("datasets/faces/shard-0.parquet", b"half an ingest")
            server.down()  # as a crash would, for what the client sees: nothing answers
            ingest.put("datasets/faces/shard-1.parquet", b"never written")
        assert ingest.branch in str(info.value) and "flotilla hub branches --prune" in str(info.value)
        record = owners.owner_of(settings.home, "outage", ingest.branch)
        assert record is not None and record.abandoned
        server.up(timeout=60)
        hub = Hub(credentials=server.credentials(), settings=settings)
        repo = hub.repo("outage")
        (info_row,) = flotilla_branches(repo)
        assert info_row.name == ingest.branch and info_row.state == "orphaned" and info_row.prunable
        assert [b.name for b in prune_branches(repo)] == [ingest.branch]
        assert repo.branches() == ["main"]
    finally:
        server.down()
