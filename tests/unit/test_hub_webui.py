"""The lakeFS web UI in provisioning: when the cached binary is rebuilt, when the UI can be built, what status says.

The npm build itself runs in ``flotilla hub install`` (and the browser test checks its result); here
the decisions around it, with real files, a real HTTP server and a PATH without Node.
"""

from __future__ import annotations

import http.server
import threading

import pytest

from flotilla.hub import binary
from flotilla.hub.webui import (
    NOT_BUILT_MARKER,
    BuildRecord,
    build_ui,
    describe_ui,
    needs_build,
    node_major,
    probe_ui,
    read_record,
    required_node_major,
    why_not_buildable,
    write_record,
)
from flotilla.settings import Settings


def test_a_binary_without_a_record_predates_the_ui_build_and_is_rebuilt_once():
    assert needs_build(False, None, "1.84.0")
    assert needs_build(True, None, "1.84.0")  # an old cache entry: once
    assert not needs_build(True, BuildRecord("1.84.0", ui=True), "1.84.0")
    assert not needs_build(True, BuildRecord("1.84.0", ui=False, ui_reason="no node"), "1.84.0")  # final, not retried
    assert needs_build(True, BuildRecord("1.83.0", ui=True), "1.84.0")


def test_node_versions_and_engines_ranges_are_read():
    assert required_node_major(">= 18") == 18 and required_node_major("^20.11") == 20 and required_node_major("") == 0
    assert node_major("v20.20.2\n") == 20 and node_major("garbage") == 0


@pytest.mark.parametrize(
    ("node", "npm", "version", "engines", "expected"),
    [
        ("/usr/bin/node", "/usr/bin/npm", "v20.20.2", ">= 18", ""),
        (None, "/usr/bin/npm", "", ">= 18", "no node on PATH"),
        (None, None, "", ">= 18", "no node and npm on PATH"),
        ("/usr/bin/node", None, "v20.1.0", ">= 18", "no npm on PATH"),
        ("/usr/bin/node", "/usr/bin/npm", "v16.2.0", ">= 18", "Node v16.2.0 is older than the 18"),
    ],
)
def test_why_the_ui_cannot_be_built(node, npm, version, engines, expected):
    got = why_not_buildable(node, npm, version, engines)
    assert (got == "") if not expected else got.startswith(expected), got


def test_without_node_the_ui_build_says_so_instead_of_failing(tmp_path):
    webui = tmp_path / "webui"
    webui.mkdir()
    (webui / "package.json").write_text('{"engines": {"node": ">= 18"}}')
    got = build_ui(webui, tmp_path / "npm", {"PATH": str(tmp_path)}, "1.84.0")
    assert not got.built and got.reason.startswith("no node and npm on PATH") and "needs Node.js >= 18" in got.reason
    assert not (webui / "node_modules").exists()


def test_build_record_round_trips_and_a_damaged_one_counts_as_none(tmp_path):
    exe = tmp_path / "lakefs"
    assert read_record(exe) is None
    rec = BuildRecord("1.84.0", ui=False, ui_reason="no node and npm on PATH")
    write_record(exe, rec)
    assert read_record(exe) == rec and rec.describe_ui() == "not built: no node and npm on PATH"
    (tmp_path / "build.json").write_text("{not json")
    assert read_record(exe) is None


def _fake_binary(settings: Settings) -> None:
    exe = binary.cached_binary(settings)
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\necho lakeFS 1.84.0\n")
    exe.chmod(0o755)


def test_an_old_cached_binary_that_cannot_be_rebuilt_is_kept_and_the_reason_recorded_once(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no lakefs, no go, no node
    monkeypatch.delenv("FLOTILLA_LAKEFS_BIN", raising=False)
    settings = Settings(home=tmp_path / "h", cache=tmp_path / "c")
    _fake_binary(settings)
    said: list[str] = []
    got = binary.ensure_binary(settings, said.append, allow_download=False)
    assert got == binary.cached_binary(settings)
    assert any("predates flotilla's web UI build" in s for s in said) and any("no 'go' on PATH" in s for s in said)
    rec = binary.build_record(settings)
    assert rec is not None and not rec.ui and "rebuilding it failed" in rec.ui_reason
    said.clear()
    assert binary.ensure_binary(settings, said.append, allow_download=False) == got and said == []  # no second try


def test_a_current_cached_binary_is_used_as_is_and_rebuild_forces_a_new_attempt(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("FLOTILLA_LAKEFS_BIN", raising=False)
    settings = Settings(home=tmp_path / "h", cache=tmp_path / "c")
    _fake_binary(settings)
    write_record(binary.cached_binary(settings), BuildRecord(settings.lakefs_version, ui=True))
    said: list[str] = []
    assert binary.ensure_binary(settings, said.append, allow_download=False) == binary.cached_binary(settings)
    assert said == []
    binary.ensure_binary(settings, said.append, allow_download=False, rebuild=True)
    assert any("rebuilding it failed" in s for s in said)
    assert binary.build_record(settings) == BuildRecord(settings.lakefs_version, ui=True)  # the record stays true


@pytest.fixture
def page_server():
    pages: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = pages["/"]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield pages, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_probe_tells_the_ui_from_the_not_built_page_and_from_silence(page_server):
    pages, endpoint = page_server
    pages["/"] = b'<html><div id="root"></div><script src="/assets/index.js"></script></html>'
    assert probe_ui(endpoint) is True
    pages["/"] = f"<html><h1>{NOT_BUILT_MARKER}</h1><code>make gen-ui</code></html>".encode()
    assert probe_ui(endpoint) is False
    assert probe_ui("http://127.0.0.1:9", timeout=0.5) is None


def test_status_line_gives_the_address_and_login_or_the_reason_and_remedy():
    ep = "http://127.0.0.1:8770"
    assert describe_ui(ep, True, None) == f"{ep}/  (log in with the keys 'flotilla hub credentials' prints)"
    no_node = describe_ui(ep, False, BuildRecord("1.84.0", ui=False, ui_reason="no node and npm on PATH"))
    assert "no node and npm on PATH" in no_node and "flotilla hub install --rebuild" in no_node
    assert "hub down && flotilla hub up" in describe_ui(ep, False, BuildRecord("1.84.0", ui=True))
    assert "built without it" in describe_ui(ep, False, None)
    assert "did not answer" in describe_ui(ep, None, None)
