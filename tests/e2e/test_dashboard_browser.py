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
import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from flotilla.cluster import LocalCluster
from flotilla.hub.server import free_port
from flotilla.jobs.submission import submit
from flotilla.settings import Settings

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "test"
INSTALL = "apt-get update && apt-get install -y chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


@pytest.fixture(scope="module")
def chromium() -> str:
    """The browser binary; checked before any cluster starts, so a machine without it skips fast."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.getuid() == 0 or os.environ.get("CI"):  # `make test` installs it as root (CI is root): missing = set-up broke
        pytest.fail(f"no Chromium although `make browser` should have installed it; install it with: {INSTALL}")
    pytest.skip(f"no Chromium on this machine; install it with: {INSTALL}")


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


class Browser:
    """Just enough of the DevTools protocol: navigate, evaluate, reload, screenshot."""

    def __init__(self, binary: str, profile: Path) -> None:
        # Chromium's own temp files (its singleton socket: short path!) in a dir removed afterwards
        self.tmp = tempfile.mkdtemp(prefix="fl-chr-", dir="/tmp")
        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "TMPDIR": self.tmp},
        )
        self.profile = profile
        self.ids = itertools.count(1)

    async def __aenter__(self) -> Browser:
        import aiohttp

        self.session = aiohttp.ClientSession()
        try:
            port_file = self.profile / "DevToolsActivePort"
            deadline = time.monotonic() + 30
            while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
                assert self.proc.poll() is None and time.monotonic() < deadline, "Chromium did not open its DevTools port"
                await asyncio.sleep(0.1)
            port = port_file.read_text().split()[0]
            pages = await (await self.session.get(f"http://127.0.0.1:{port}/json/list")).json()
            page = next(p for p in pages if p["type"] == "page")
            self.ws = await self.session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
            await self.call("Page.enable")
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if getattr(self, "ws", None) is not None:
            await self.ws.close()
        await self.session.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.tmp, ignore_errors=True)

    async def call(self, method: str, **params: object) -> dict:
        i = next(self.ids)
        await self.ws.send_json({"id": i, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json()
            if msg.get("id") == i:
                assert "error" not in msg, msg
                return msg["result"]

    async def eval(self, expression: str) -> object:
        res = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        return res["result"].get("value")

    async def wait_text(self, needle: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = await self.eval("document.body ? document.body.innerText : ''") or ""
            if needle in text:
                return text
            await asyncio.sleep(0.5)
        raise AssertionError(f"{needle!r} did not appear; page text:\n{text[:2000]}")

    async def screenshot(self, path: Path) -> None:
        shot = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))


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
