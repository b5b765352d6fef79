"""The local hub's lifecycle against a real lakeFS process in its own temp home."""

import os
import signal
import stat
import subprocess

import psutil
import pytest

from flotilla.errors import BinaryNotFoundError, HubUnavailableError, ServerError
from flotilla.hub import Hub, LocalHub
from flotilla.hub.binary import ensure_binary
from flotilla.hub.server import free_port
from flotilla.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def server(isolated_settings, lakefs_binary):
    s = isolated_settings()
    srv = LocalHub(s.hub_dir, s.hub_port, lakefs_binary)
    yield s, srv
    srv.down()


def test_up_is_idempotent_and_data_survives_down_up(server):
    settings, srv = server
    first = srv.up()
    assert first.running and first.healthy
    assert srv.up().pid == first.pid  # idempotent: no second process
    hub = Hub(credentials=srv.credentials(), settings=settings)
    repo = hub.ensure_repo("keep")
    repo.put("main", "a/b.txt", b"persisted")
    commit = repo.commit("main", "data before restart").id

    assert "gracefully" in srv.down()
    assert not srv.status().running
    with pytest.raises(HubUnavailableError, match="flotilla hub up"):
        hub.repo("keep").resolve("main")

    second = srv.up()
    assert second.pid != first.pid
    again = Hub(credentials=srv.credentials(), settings=settings).repo("keep")
    assert again.resolve("main") == commit
    assert again.get(commit, "a/b.txt") == b"persisted"


def test_concurrent_ups_start_one_server(server, lakefs_binary):
    """Four ``up`` calls at once (separate LocalHub objects, as separate CLIs would be) share one lakeFS."""
    from concurrent.futures import ThreadPoolExecutor

    settings, srv = server
    hubs = [LocalHub(settings.hub_dir, settings.hub_port, lakefs_binary) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda h: h.up(), hubs))
    assert all(r.running and r.healthy for r in results)
    assert len({r.pid for r in results}) == 1
    servers = [p for p in psutil.process_iter(["cmdline"]) if str(srv.config_path) in " ".join(p.info["cmdline"] or [])]
    assert [p.pid for p in servers] == [results[0].pid]
    # every caller reads the credentials the running server was started with
    Hub(credentials=hubs[3].credentials(), settings=settings).ensure_repo("one")


def test_secrets_are_private_and_server_binds_loopback_only(server):
    _, srv = server
    st = srv.up()
    for f in (srv.credentials_path, srv.config_path):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    listening = [c for c in psutil.Process(st.pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert listening and all(c.laddr.ip == "127.0.0.1" for c in listening)


def test_stale_pid_and_crash_are_detected_and_recovered(server):
    _, srv = server
    st = srv.up()
    os.kill(st.pid, signal.SIGKILL)  # a crash
    os.waitpid(st.pid, 0)
    crashed = srv.status()
    assert not crashed.running and "stale pid file" in crashed.note
    assert "Up and running" in crashed.note or "lakeFS" in crashed.note  # the log's last lines are shown
    recovered = srv.up()
    assert recovered.healthy and "recovered" in recovered.note

    srv.down()
    srv.pid_path.write_text("999999")  # a pid that cannot exist
    assert "stale" in srv.status().note
    assert "stale pid file" in srv.down()


def test_port_in_use_is_a_clear_error(server, lakefs_binary, isolated_settings):
    settings, srv = server
    srv.up()
    other_settings = isolated_settings("other")
    other = LocalHub(other_settings.hub_dir, settings.hub_port, lakefs_binary)
    with pytest.raises(ServerError, match="FLOTILLA_HUB_PORT"):
        other.up()


def test_server_that_dies_at_start_reports_its_log(server):
    settings, srv = server
    srv.up()
    # a second server on the same state dir but another port: badger's lock makes it exit
    twin = LocalHub(settings.hub_dir, free_port(), srv.binary)
    twin.pid_path = settings.hub_dir / "twin.pid"
    with pytest.raises(ServerError) as info:
        twin.up(timeout=20)
    assert "Last log lines" in str(info.value)


def test_missing_binary_names_the_three_ways(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no lakefs, no go
    monkeypatch.delenv("FLOTILLA_LAKEFS_BIN", raising=False)
    settings = Settings(home=tmp_path / "h", cache=tmp_path / "c")
    with pytest.raises(BinaryNotFoundError) as info:
        ensure_binary(settings, allow_download=False)
    msg = str(info.value)
    assert "FLOTILLA_LAKEFS_BIN" in msg and "on PATH" in msg and "Go >=" in msg
    monkeypatch.setenv("FLOTILLA_LAKEFS_BIN", str(tmp_path / "nope"))
    with pytest.raises(BinaryNotFoundError, match="not an executable"):
        ensure_binary(settings)


def test_env_binary_is_used_first(tmp_path, monkeypatch, lakefs_binary):
    monkeypatch.setenv("FLOTILLA_LAKEFS_BIN", str(lakefs_binary))
    got = ensure_binary(Settings(home=tmp_path, cache=tmp_path / "empty-cache"))
    assert got == lakefs_binary
    out = subprocess.run([str(got), "--version"], capture_output=True, text=True).stdout
    assert "1.84.0" in out  # stamped version (a 'dev' version breaks lakefs-spec)


def test_a_running_hub_can_be_inspected_and_stopped_after_its_binary_is_removed(
    tmp_path, monkeypatch, isolated_settings, lakefs_binary
):
    """down/status/logs need only the state dir and pid file, never the binary (it may be gone or moved)."""
    from flotilla.hub import local

    link = tmp_path / "lakefs"
    link.symlink_to(lakefs_binary)
    monkeypatch.setenv("FLOTILLA_LAKEFS_BIN", str(link))
    settings = isolated_settings()
    st = local.up(settings)
    try:
        link.unlink()  # the binary the server was started from is removed (an upgrade, a cleaned temp dir)
        assert local.status(settings).running and local.status(settings).pid == st.pid
        assert 'msg="Config loaded"' in local.logs(settings, 10_000) and local.logs(settings, 5).strip()  # the server's own log
        assert "stopped" in local.down(settings)
        assert not local.status(settings).running
    finally:
        LocalHub(settings.hub_dir, settings.hub_port, lakefs_binary).down()
