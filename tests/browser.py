"""A headless Chromium driven over the DevTools protocol, for tests that must see a page as a browser does.

A plain module (imported as ``tests.browser``, as ``tests.chaos`` is), not test code. Unlike a
``--dump-dom`` run it evaluates JavaScript in the page (is every image decoded?), records what the
console and the network reported as errors, and takes full-page screenshots.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

INSTALL = "apt-get update && apt-get install -y chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1300,900",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


def chromium_or_skip() -> str:
    """The browser binary; a skip that says how to install it when there is none (a failure as root or in CI,
    where `make test` installs it)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.getuid() == 0 or os.environ.get("CI"):
        pytest.fail(f"no Chromium although `make browser` should have installed it; install it with: {INSTALL}")
    pytest.skip(f"no Chromium on this machine; install it with: {INSTALL}")


class Browser:
    """Navigate, evaluate, screenshot; every console error, uncaught exception and failed load is kept in ``errors``."""

    def __init__(self, binary: str, profile: Path) -> None:
        self.tmp = tempfile.mkdtemp(prefix="fl-chr-", dir="/tmp")  # Chromium's singleton socket wants a short path
        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "TMPDIR": self.tmp},
        )
        self.profile = profile
        self.ids = itertools.count(1)
        self.errors: list[str] = []

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
            for domain in ("Page", "Runtime", "Log"):
                await self.call(f"{domain}.enable")
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

    def _event(self, msg: dict[str, Any]) -> None:
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append(
                "console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            )
        elif method == "Runtime.exceptionThrown":
            self.errors.append("exception: " + str(params.get("exceptionDetails", {}).get("text", "")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}")

    async def call(self, method: str, **params: object) -> dict[str, Any]:
        i = next(self.ids)
        await self.ws.send_json({"id": i, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json()
            if msg.get("id") == i:
                assert "error" not in msg, msg
                return msg["result"]
            self._event(msg)

    async def eval(self, expression: str) -> Any:
        res = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        return res["result"].get("value")

    async def wait_text(self, needle: str, timeout: float = 30) -> str:
        """The page's text once ``needle`` is in it (an app that renders after load, like Ray's dashboard)."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = await self.eval("document.body ? document.body.innerText : ''") or ""
            if needle in text:
                return text
            await asyncio.sleep(0.5)
        raise AssertionError(f"{needle!r} did not appear; page text:\n{text[:2000]}")

    async def open(self, url: str, timeout: float = 30) -> None:
        """Navigate and wait until the document and every image in it have finished loading."""
        await self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.eval("document.readyState === 'complete' && Array.from(document.images).every(i => i.complete)"):
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"{url} did not finish loading in {timeout}s")

    async def screenshot(self, path: Path) -> None:
        """The whole page, not only the window."""
        shot = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
