"""flotilla.labelstudio's own logic, without Label Studio: credentials, the server's environment, the install
stamp, the port check, and the client's error translation against a small real HTTP server."""

from __future__ import annotations

import json
import socket
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from flotilla.errors import (
    ConfigError,
    LabelStudioAuthError,
    LabelStudioError,
    LabelStudioNotFoundError,
    LabelStudioUnavailableError,
)
from flotilla.hub.server import free_port
from flotilla.labelstudio import LABEL_STUDIO_VERSION, LabelStudioClient, LabelStudioServer, find_install
from flotilla.labelstudio.install import executable, install_dir
from flotilla.labelstudio.server import server_env
from flotilla.settings import Settings

TOKEN = "t0ken" * 8


def test_credentials_are_made_once_kept_0600_and_never_shown(tmp_path: Path) -> None:
    server = LabelStudioServer(tmp_path / "ls", free_port())
    creds = server.credentials()
    assert len(creds.token) == 40 and creds.password and "@" in creds.username
    assert stat.S_IMODE(server.credentials_path.stat().st_mode) == 0o600
    assert server.credentials() == creds  # read back, not regenerated
    shown = repr(creds) + str(creds)
    assert creds.token not in shown and creds.password not in shown
    assert creds.url == server.url == f"http://127.0.0.1:{server.port}"


def test_a_damaged_credentials_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    server = LabelStudioServer(tmp_path / "ls", free_port())
    server.credentials_path.parent.mkdir(parents=True)
    server.credentials_path.write_text('{"username": "a"}')
    with pytest.raises(ConfigError, match=r"credentials\.json"):
        server.credentials()


def test_a_data_dir_without_its_credentials_is_refused_not_booted_without_a_token(tmp_path: Path) -> None:
    server = LabelStudioServer(tmp_path / "ls", free_port(), Path("/nonexistent/label-studio"))
    server.data_dir.mkdir(parents=True)
    (server.data_dir / "label_studio.sqlite3").write_bytes(b"")
    with pytest.raises(ConfigError, match="cannot be recovered"):
        server.up(timeout=1)
    assert not server.pid_path.exists()


def test_the_server_environment_is_quiet_and_cannot_be_redirected(tmp_path: Path, monkeypatch) -> None:
    for name in ("USERNAME", "PORT", "HOST", "DATABASE_NAME", "LABEL_STUDIO_BASE_DATA_DIR", "HEARTEX_PORT", "PYTHONPATH"):
        monkeypatch.setenv(name, "theirs")
    monkeypatch.setenv("SENTRY_DSN", "https://vendor.example/1")
    creds = LabelStudioServer(tmp_path / "ls", free_port()).credentials()
    env = server_env(creds)
    for name in ("USERNAME", "PORT", "HOST", "DATABASE_NAME", "LABEL_STUDIO_BASE_DATA_DIR", "HEARTEX_PORT", "PYTHONPATH"):
        assert name not in env, name
    assert env["SENTRY_DSN"] == "" and env["FRONTEND_SENTRY_DSN"] == ""
    assert env["COLLECT_ANALYTICS"] == "false" and env["LATEST_VERSION_CHECK"] == "false"
    assert env["LABEL_STUDIO_USER_TOKEN"] == creds.token and env["LABEL_STUDIO_USERNAME"] == creds.username
    banned = env["USER_ADDITIONAL_BANNED_SUBNETS"].split(",")
    assert env["USE_DEFAULT_BANNED_SUBNETS"] == "false"
    assert "10.0.0.0/8" in banned and "169.254.0.0/16" in banned
    assert "127.0.0.0/8" not in banned and "::1/128" not in banned  # the local lakeFS's gateway


def test_only_a_stamped_install_of_the_pinned_version_counts(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", cache=tmp_path / "cache")
    exe = executable(settings)
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    assert find_install(settings) is None  # a venv without its stamp: an install cut short
    stamp = install_dir(settings) / "installed"
    stamp.write_text("0.0.1\n")
    assert find_install(settings) is None
    stamp.write_text(LABEL_STUDIO_VERSION + "\n")
    assert find_install(settings) == exe


def test_a_busy_port_is_refused_before_starting_and_names_the_setting(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = LabelStudioServer(tmp_path / "ls", port, Path("/nonexistent/label-studio"))
        with pytest.raises(LabelStudioError, match=f"port {port}") as info:
            server.up(timeout=1)
    assert "FLOTILLA_LABEL_PORT" in str(info.value)
    assert not server.pid_path.exists() and not server.data_dir.exists()


def test_up_without_an_install_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(LabelStudioError, match="flotilla label install"):
        LabelStudioServer(tmp_path / "ls", free_port()).up(timeout=1)


def test_the_label_port_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("FLOTILLA_LABEL_PORT", "9123")
    assert Settings.from_env().label_port == 9123
    monkeypatch.setenv("FLOTILLA_LABEL_PORT", "nope")
    with pytest.raises(ConfigError, match="FLOTILLA_LABEL_PORT"):
        Settings.from_env()


class _Canned(BaseHTTPRequestHandler):
    """Answers each path with a fixed status and body (the body of /boom echoes the request's token)."""

    def do_GET(self) -> None:
        routes = {
            "/api/current-user/whoami": (401, {"detail": "Invalid token."}),
            "/api/tasks/7/": (404, {"detail": "Not found."}),
            "/boom": (500, {"detail": f"failed with {self.headers.get('Authorization')}"}),
            "/api/projects/": (200, {"count": 1, "results": [{"id": 3, "title": "round 1"}]}),
        }
        code, body = routes.get(self.path.split("?")[0], (404, {}))
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def canned() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Canned)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_client_errors_say_what_to_do_and_never_show_the_token(canned: str, tmp_path: Path) -> None:
    ls = LabelStudioClient(canned, TOKEN, credentials_path=tmp_path / "credentials.json")
    with pytest.raises(LabelStudioAuthError, match="flotilla label down") as auth:
        ls.whoami()
    assert str(tmp_path / "credentials.json") in str(auth.value)
    with pytest.raises(LabelStudioNotFoundError, match="task 7"):
        ls.task(7)
    with pytest.raises(LabelStudioError, match="HTTP 500") as boom:
        ls.read_file("/boom")
    assert TOKEN not in str(boom.value) and "***" in str(boom.value)
    assert TOKEN not in repr(ls)
    assert [p.title for p in ls.projects()] == ["round 1"]
    assert ls.find_project("round 1") is not None and ls.find_project("other") is None


def test_a_client_of_a_stopped_server_says_to_start_it() -> None:
    with pytest.raises(LabelStudioUnavailableError, match="flotilla label up"):
        LabelStudioClient(f"http://127.0.0.1:{free_port()}", TOKEN).projects()
