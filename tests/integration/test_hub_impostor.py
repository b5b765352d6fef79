"""Credentials only to flotilla's own hub: a program that takes a stopped hub's port receives nothing.

With the hub stopped, any local user could bind 127.0.0.1:<hub port> first; every command used to
send the admin key there as HTTP Basic auth (issue 22). Clients built from the embedded hub's
credentials now confirm the port is held by the lakeFS process of the hub's pid file first.
"""

from __future__ import annotations

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

from flotilla.cli import app
from flotilla.errors import HubUnavailableError
from flotilla.hub.client import Hub
from flotilla.hub.identity import confirm_local_hub
from flotilla.hub.server import LocalHub

pytestmark = pytest.mark.integration


class _Spy(BaseHTTPRequestHandler):
    """Answers everything with an empty JSON object and remembers every request's headers."""

    seen: ClassVar[list[dict[str, str]]] = []

    def _any(self) -> None:
        type(self).seen.append({k.lower(): v for k, v in self.headers.items()})
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any

    def log_message(self, *args: Any) -> None:
        pass


def test_a_listener_on_a_stopped_hubs_port_receives_no_credentials(isolated_settings, lakefs_binary):
    settings = isolated_settings()
    server = LocalHub(settings.hub_dir, settings.hub_port, lakefs_binary)
    server.up(timeout=60)
    creds = server.credentials()
    assert Hub(credentials=creds, settings=settings).repos() == []  # the real hub: the check lets it through
    server.down()

    _Spy.seen = []
    spy = ThreadingHTTPServer(("127.0.0.1", settings.hub_port), _Spy)
    threading.Thread(target=spy.serve_forever, daemon=True).start()
    try:
        env = {"FLOTILLA_HOME": str(settings.home), "FLOTILLA_HUB_PORT": str(settings.hub_port)}
        for args in (["data", "show"], ["data", "generate", "--n", "10"]):
            out = CliRunner().invoke(app, args, env=env)
            assert out.exit_code != 0, out.output
            assert "not running" in out.output and "nothing was sent" in out.output, out.output
            assert "Traceback" not in out.output
        with pytest.raises(HubUnavailableError, match="nothing was sent"):
            Hub(credentials=creds, settings=settings).repos()
        with pytest.raises(HubUnavailableError, match="nothing was sent"):
            creds.s3_options()  # the S3 gateway's clients (loader, checkpoints) ask the same question
    finally:
        spy.shutdown()
        spy.server_close()
    assert not any("authorization" in h for h in _Spy.seen)
    assert _Spy.seen == []  # nothing at all reached it


def test_a_live_process_that_is_not_lakefs_is_not_the_hub(tmp_path):
    pidfile = tmp_path / "lakefs.pid"
    pidfile.write_text(str(os.getpid()))  # alive, ours, but pytest and not lakeFS: a recycled pid looks like this
    with pytest.raises(HubUnavailableError, match="not running"):
        confirm_local_hub(pidfile, "http://127.0.0.1:1")
    pidfile.write_text("not a pid")
    with pytest.raises(HubUnavailableError, match="hub up"):
        confirm_local_hub(pidfile, "http://127.0.0.1:1")
