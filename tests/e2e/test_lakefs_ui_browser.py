"""A real headless Chromium logs into the embedded hub's lakeFS web UI and finds a repository and its experiment branch.

The UI is only there when provisioning built ``webui/`` into the binary (``make lakefs`` runs
``flotilla hub install``, which does so wherever Node.js and npm are installed). A binary without
it serves lakeFS's "UI Not Built" page: on a machine with Node that is a provisioning failure, so
the test fails and says why instead of skipping. The log-in goes through the UI's own form with the
key pair ``flotilla hub credentials`` prints. Screenshots stay in ``artifacts/test/``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from pathlib import Path

import pytest
from tests.browser import Browser, chromium_or_skip

from flotilla.hub.binary import build_record
from flotilla.hub.webui import describe_ui, probe_ui

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "test"


def _ui_or_fail(endpoint: str, settings) -> None:
    served = probe_ui(endpoint)
    if served:
        return
    why = describe_ui(endpoint, served, build_record(settings))
    if served is False and not (shutil.which("node") and shutil.which("npm")):
        pytest.skip(f"the hub's lakeFS binary has no web UI and this machine has no Node.js/npm to build it: {why}")
    pytest.fail(
        f"the embedded hub serves no lakeFS web UI although Node.js and npm are here, so provisioning should have built it: {why}"
    )


async def _wait_for(b: Browser, condition: str, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await b.eval(condition):
            return
        await asyncio.sleep(0.3)
    text = await b.eval("document.body ? document.body.innerText : ''")
    raise AssertionError(f"{what} did not appear within {timeout}s; page text:\n{str(text)[:1500]}")


async def _type_into(b: Browser, selector: str, text: str) -> None:
    """Focus the field and type, as a person pasting the key would (the form reads the inputs' values on submit)."""
    assert await b.eval(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.focus(); return !!e; }})()")
    await b.call("Input.insertText", text=text)


async def _look(binary: str, profile: Path, endpoint: str, key: str, secret: str, repo: str, branch: str) -> str:
    async with Browser(binary, profile) as b:
        await b.call("Page.navigate", url=f"{endpoint}/repositories")
        await _wait_for(b, "!!document.querySelector('input[name=password]')", "the login form")
        assert repo not in await b.eval("document.body.innerText")  # nothing is shown before logging in
        await _type_into(b, "input[name=username]", key)
        await _type_into(b, "input[name=password]", secret)
        await b.eval("document.querySelector('form button[type=submit]').click()")
        await b.wait_text(repo)
        await b.screenshot(ARTIFACTS / "lakefs-ui-repositories.png")
        await b.call("Page.navigate", url=f"{endpoint}/repositories/{repo}/branches")
        text = await b.wait_text(branch)
        await b.screenshot(ARTIFACTS / "lakefs-ui.png")
        return text


@pytest.mark.timeout(240)
def test_the_lakefs_ui_logs_in_and_shows_the_repository_and_its_experiment_branch(hub, hub_settings, tmp_path):
    binary = chromium_or_skip()
    endpoint = hub.credentials.endpoint
    _ui_or_fail(endpoint, hub_settings)
    name = f"faces-ui-{uuid.uuid4().hex[:6]}"
    repo = hub.ensure_repo(name)
    try:
        with repo.transact("ui-check", "main", message="an experiment the UI should list") as exp:
            exp.put("data/faces/part-0.txt", "one face")
        text = asyncio.run(
            _look(
                binary,
                tmp_path / "chromium",
                endpoint,
                hub.credentials.access_key_id,
                hub.credentials.secret_access_key,
                name,
                exp.branch,
            )
        )
        assert exp.branch.startswith("exp-") and "main" in text
    finally:
        hub.delete_repo(name)
