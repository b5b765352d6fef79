"""A real headless Chromium opens the local cluster's dashboard and finds the job flotilla submitted.

Token auth is on, so the dashboard first shows its "Authentication Token
Required" dialog. A browser authenticates the way that dialog does: it POSTs the
token as ``Authorization: Bearer`` to ``/api/authenticate`` on the dashboard's
origin, which answers with an HttpOnly ``ray-authentication-token`` cookie (Ray
2.60 accepts no token in the URL). Command-line ``--dump-dom`` runs cannot do
that, so the test drives Chromium over the DevTools protocol (aiohttp, which Ray
already depends on). The screenshot stays in ``artifacts/test/``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import pytest
from tests.browser import Browser, chromium_or_skip

from flotilla.cluster import LocalCluster
from flotilla.hub.server import free_port
from flotilla.jobs.submission import submit
from flotilla.settings import Settings

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "test"


@pytest.fixture(scope="module")
def chromium() -> str:
    """The browser binary; checked before any cluster starts, so a machine without it skips fast."""
    return chromium_or_skip()


@pytest.fixture(scope="module")
def cluster(chromium: str, hub_settings: Settings, local_server):
    mp = pytest.MonkeyPatch()
    mp.setenv("FLOTILLA_HOME", str(hub_settings.home))
    mp.setenv("FLOTILLA_HUB_PORT", str(hub_settings.hub_port))
    mp.delenv("FLOTILLA_RAY_ADDRESS", raising=False)
    c = LocalCluster(Settings.from_env())
    try:
        c.up(num_cpus=1, ray_port=free_port(), dashboard_port=free_port(), object_store_mb=128)
        yield c
    finally:
        c.down()
        if str(c.tmpdir).startswith("/tmp/flotilla-ray-"):
            shutil.rmtree(c.tmpdir, ignore_errors=True)
        mp.undo()


async def _look(binary: str, profile: Path, url: str, token: str, job_id: str) -> str:
    async with Browser(binary, profile) as b:
        await b.call("Page.navigate", url=f"{url}/#/jobs")
        await b.wait_text("Authentication Token Required")  # auth is on: nothing shown without the token
        await b.screenshot(ARTIFACTS / "dashboard-login.png")
        # what the dashboard's own token dialog does (the token never appears in a URL or on the page)
        status = await b.eval(
            f"fetch('/api/authenticate', {{method: 'POST', headers: {{Authorization: 'Bearer ' + {json.dumps(token)}}}}})"
            ".then(r => r.status)"
        )
        assert status == 200
        await b.call("Page.reload", ignoreCache=True)
        text = await b.wait_text(job_id)
        await b.wait_text("ingest: dashboard-check")  # the Name column: the job_name metadata flotilla sets
        await b.screenshot(ARTIFACTS / "dashboard-jobs.png")
        return text


@pytest.mark.timeout(240)
def test_dashboard_shows_the_submitted_job(chromium, cluster, tmp_path):
    repo = f"t-dash-{int(time.time())}"
    handle = submit(
        {
            "kind": "ingest",
            "name": "dashboard-check",
            "repo": repo,
            "create_repo": True,  # a fresh repository per run: made only when asked
            "dataset": "faces",
            "synthetic": {"n": 200, "seed": 5},
            "thresholds": {"min_group_count": 1},
        }
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    token = cluster.token_path.read_text().strip()
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    text = asyncio.run(_look(chromium, profile, cluster.state()["dashboard_url"], token, handle.submission_id))
    assert "Authentication Token Required" not in text
    assert (ARTIFACTS / "dashboard-jobs.png").stat().st_size > 10_000
    assert token not in text
    assert handle.wait(timeout=120) == "SUCCEEDED", handle.logs()[-2000:]
    from flotilla.hub import Hub

    Hub().delete_repo(repo)
