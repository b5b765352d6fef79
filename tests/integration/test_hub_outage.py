"""A short hub outage is ridden out; a hub that is simply not started fails at once (issue 22).

lakeFS is SIGKILLed (as a crash or the OOM killer would) and restarted some seconds later by
``LocalHub.up``, as ``flotilla hub up`` does. Meanwhile the lakeFS SDK's calls and a pyarrow S3
read through the gateway keep trying (:mod:`flotilla.hub.retry`) and finish once it is back, with
every write done exactly once.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from flotilla.errors import HubUnavailableError
from flotilla.hub.client import Hub
from flotilla.hub.credentials import HubCredentials
from flotilla.hub.server import LocalHub

pytestmark = pytest.mark.integration

OUTAGE_S = 6.0


def kill_hard(server: LocalHub) -> None:
    pid = int(server.pid_path.read_text())
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
            return  # a zombie until LocalHub's Popen reaps it: dead, its port is free
        time.sleep(0.05)


def test_reads_and_writes_ride_out_a_lakefs_crash_and_restart(isolated_settings, lakefs_binary):
    settings = isolated_settings()
    server = LocalHub(settings.hub_dir, settings.hub_port, lakefs_binary)
    server.up(timeout=60)
    try:
        hub = Hub(credentials=server.credentials(), settings=settings)
        repo = hub.ensure_repo("outage")
        repo.put("main", "a.txt", b"before")
        repo.commit("main", "write a")
        s3 = pafs.S3FileSystem(**hub.credentials.s3_options())  # made before the outage, used during it

        kill_hard(server)
        started = time.monotonic()
        restarted = threading.Timer(OUTAGE_S, lambda: server.up(timeout=60))
        restarted.start()
        s3_read: list[bytes] = []
        reader = threading.Thread(target=lambda: s3_read.append(s3.open_input_stream("outage/main/a.txt").read()), daemon=True)
        reader.start()

        repo.put("main", "b.txt", b"during")  # both reach the hub only once it is back, each once
        repo.commit("main", "write b")
        assert repo.get("main", "a.txt") == b"before"
        took = time.monotonic() - started
        reader.join(timeout=120)
        restarted.join()

        assert took >= OUTAGE_S - 1, f"finished in {took:.1f} s: the hub was never down?"
        assert s3_read == [b"before"], "the S3 gateway read did not survive the outage"
        assert [c.message for c in repo.log("main", limit=10)][:2] == ["write b", "write a"]
        assert sum(c.message == "write b" for c in repo.log("main", limit=10)) == 1
        assert sorted(o.path for o in repo.list("main")) == ["a.txt", "b.txt"]
        assert not repo.uncommitted("main")
    finally:
        server.down()


def test_a_command_with_the_hub_not_running_fails_at_once(isolated_settings, lakefs_binary):
    """A forgotten ``hub up`` (here: a hub that crashed before this process started) is not an outage to wait out."""
    settings = isolated_settings()
    server = LocalHub(settings.hub_dir, settings.hub_port, lakefs_binary)
    server.up(timeout=60)
    kill_hard(server)  # a stale pid file: what a crash or a reboot leaves
    try:
        env = {
            **os.environ,
            "FLOTILLA_HOME": str(settings.home),
            "FLOTILLA_HUB_PORT": str(settings.hub_port),
        }
        started = time.monotonic()
        code = (
            "import time,sys; t=time.monotonic(); from flotilla.hub.client import Hub; h=Hub()\n"
            "try: h.repos()\nexcept Exception as e: print(type(e).__name__, round(time.monotonic()-t, 2)); print(e)"
        )
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert out.stdout.startswith("HubUnavailableError"), out.stdout + out.stderr
        assert float(out.stdout.split()[1]) < 2.0, out.stdout  # the call itself: no waiting on a hub never seen
        assert "not running" in out.stdout and "flotilla hub up" in out.stdout
        cli = subprocess.run(
            [sys.executable, "-m", "flotilla.cli", "data", "show"], env=env, capture_output=True, text=True, timeout=300
        )
        assert cli.returncode == 1 and "not running" in cli.stdout + cli.stderr
        assert "Traceback" not in cli.stdout + cli.stderr
        assert time.monotonic() - started < 60  # both processes, imports included: far under the 120 s budget

        with pytest.raises(HubUnavailableError, match="not running"):  # in this process too: never seen alive
            t = time.monotonic()
            Hub(credentials=server.credentials(), settings=settings).repos()
        assert time.monotonic() - t < 2.0
    finally:
        server.down()


def test_a_hub_down_for_longer_than_the_budget_is_reported_with_how_long(isolated_settings, lakefs_binary, monkeypatch):
    monkeypatch.setenv("FLOTILLA_HUB_RETRY_S", "3")
    settings = isolated_settings()
    server = LocalHub(settings.hub_dir, settings.hub_port, lakefs_binary)
    server.up(timeout=60)
    try:
        hub = Hub(credentials=server.credentials(), settings=settings)
        assert hub.repos() == []  # seen alive: worth waiting for
        kill_hard(server)
        started = time.monotonic()
        with pytest.raises(HubUnavailableError, match=r"was down for \d+ s.*FLOTILLA_HUB_RETRY_S=3 s.*not running") as err:
            hub.repos()
        assert 3 <= time.monotonic() - started < 3 + 6
        assert "flotilla hub up" in str(err.value)
    finally:
        server.down()


class AnswerDropper:
    """A TCP proxy in front of lakeFS that lets a matching request through, waits for lakeFS's answer and
    then cuts the connection instead of passing that answer on: the server did the write, the client
    never heard. What a hub that dies between doing a request and answering it does, deterministically."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.drop: re.Pattern[bytes] | None = None
        self.dropped: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def drop_next(self, request_line: str) -> None:
        self.drop = re.compile(request_line.encode())

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self.upstream)
        cut = threading.Event()

        def answers() -> None:
            try:
                while (data := upstream.recv(65536)) and not cut.is_set():
                    client.sendall(data)
                client.shutdown(socket.SHUT_RDWR)  # a FIN the client sees at once, even mid-request
            except OSError:
                pass
            client.close()

        threading.Thread(target=answers, daemon=True).start()
        try:
            while data := client.recv(65536):
                first = data.split(b"\r\n", 1)[0]
                if self.drop is not None and self.drop.match(first):
                    self.drop, cut_now = None, True
                    self.dropped.append(first)
                else:
                    cut_now = False
                if cut_now:
                    cut.set()  # the answer of this request goes nowhere, and the connection with it
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            upstream.close()

    def close(self) -> None:
        self.listener.close()


@pytest.mark.timeout(180)
def test_a_write_whose_answer_was_lost_is_checked_or_re_sent_and_lands_once(isolated_settings, lakefs_binary):
    """The hub did the write, the answer never came (a crash between the two): each write lands exactly once.

    An object written whole is simply sent again; a commit (even an empty one, which a re-send would
    make twice), a branch creation and a branch deletion are checked first and not sent again when done.
    """
    settings = isolated_settings()
    server = LocalHub(settings.hub_dir, settings.hub_port, lakefs_binary)
    server.up(timeout=60)
    proxy = AnswerDropper(settings.hub_port)
    try:
        direct = server.credentials()
        creds = HubCredentials(f"http://127.0.0.1:{proxy.port}", direct.access_key_id, direct.secret_access_key)
        hub = Hub(credentials=creds, settings=settings)
        repo = hub.ensure_repo("lost")
        base = repo.resolve("main")

        proxy.drop_next(r"POST /api/v1/repositories/lost/branches/main/objects")
        info = repo.put("main", "a.bin", b"x" * 1_000_000)
        assert proxy.dropped and info.size == 1_000_000 and repo.get("main", "a.bin") == b"x" * 1_000_000

        proxy.drop_next(r"POST /api/v1/repositories/lost/branches/main/commits")
        commit = repo.commit("main", "write a", {"epoch": 1})
        assert len(proxy.dropped) == 2
        proxy.drop_next(r"POST /api/v1/repositories/lost/branches/main/commits")
        empty = repo.commit("main", "mark", {"epoch": 2}, allow_empty=True)  # a re-send would commit it twice
        assert len(proxy.dropped) == 3
        assert [c.message for c in repo.log("main", limit=10)][:3] == ["mark", "write a", repo.log(base, limit=1)[0].message]
        assert repo.resolve("main") == empty.id and commit.id in empty.parents

        proxy.drop_next(r"POST /api/v1/repositories/lost/branches ")
        assert repo.create_branch("exp-1", "main") == "exp-1"  # not "already exists": it was made once
        assert len(proxy.dropped) == 4 and repo.resolve("exp-1") == empty.id

        proxy.drop_next(r"DELETE /api/v1/repositories/lost/branches/exp-1 ")
        repo.delete_branch("exp-1")  # not "not found": it was deleted once
        assert len(proxy.dropped) == 5 and "exp-1" not in repo.branches()

        proxy.drop_next(r"POST /api/v1/repositories/lost/branches/main/objects/delete")
        repo.delete("main", ["a.bin"])
        assert len(proxy.dropped) == 6 and not repo.exists("main", "a.bin")
    finally:
        proxy.close()
        server.down()
