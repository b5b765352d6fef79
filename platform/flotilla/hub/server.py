"""The local lakeFS server flotilla runs itself (the embedded default hub).

State lives under ``<FLOTILLA_HOME>/hub``::

    config.yaml        lakeFS config (0600: holds the encryption secret)
    credentials.json   admin key pair + endpoint (0600), generated once
    metadata/          local KV store (badger)     block/   local blockstore (unless an S3 one is given)
    cache/             committed-data cache        lakefs.log, lakefs.pid
    lifecycle.lock     held while ``up``/``down`` run, so concurrent calls take turns

The server binds 127.0.0.1 only, usage statistics are off, and the admin user is
created at start-up from ``installation.*`` (a no-op once it exists), so there
is no interactive setup step. ``up`` is idempotent; ``down`` sends SIGTERM and
waits, so badger closes cleanly and data survives restarts.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
import string
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from flotilla.errors import ServerError
from flotilla.hostio import port_free, service_process, stop_process, write_private
from flotilla.hub.blockstore import S3Blockstore
from flotilla.hub.credentials import HubCredentials, read_credentials_file
from flotilla.hub.identity import PID_FILE, forget
from flotilla.settings import LAKEFS_PREFIX, child_env

_KEY_ALPHABET = string.ascii_uppercase + "234567"


@dataclass(frozen=True)
class HubStatus:
    """What ``flotilla hub status`` reports."""

    running: bool
    healthy: bool
    pid: int | None
    endpoint: str
    state_dir: Path
    note: str = ""
    ui: str = ""  # where the web UI is, or why there is none (filled in by flotilla.hub.local)

    def describe(self) -> str:
        if self.running and self.healthy:
            line = f"lakeFS hub running (pid {self.pid}) at {self.endpoint}, state in {self.state_dir}"
            return f"{line}\nweb UI: {self.ui}" if self.ui else line
        if self.running:
            return f"lakeFS hub process {self.pid} is running but not healthy at {self.endpoint}. {self.note}".strip()
        return f"lakeFS hub is not running (state in {self.state_dir}). {self.note}".strip()


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (for tests and parallel hubs)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LocalHub:
    """Lifecycle of one local lakeFS server bound to one state directory.

    ``blockstore``: an S3-compatible bucket to keep objects in instead of ``block/`` (tests and benchmarks of
    presigned reads, :mod:`flotilla.hub.blockstore`); it is written into the config at each ``up``."""

    def __init__(self, state_dir: Path, port: int, binary: Path | None = None, *, blockstore: S3Blockstore | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.port = port
        self.binary = binary
        self.blockstore = blockstore
        self.config_path = self.state_dir / "config.yaml"
        self.credentials_path = self.state_dir / "credentials.json"
        self.log_path = self.state_dir / "lakefs.log"
        self.pid_path = self.state_dir / PID_FILE
        self.block_dir = self.state_dir / "block"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- credentials and config -------------------------------------------------
    def credentials(self) -> HubCredentials:
        """The admin credentials, generated (once) on first use and kept 0600."""
        if self.credentials_path.exists():
            data = read_credentials_file(self.credentials_path)
        else:
            data = {
                "access_key_id": "AKIAJ" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(15)),
                "secret_access_key": secrets.token_urlsafe(30)[:40],
                "encrypt_secret": secrets.token_urlsafe(48),
            }
            write_private(self.credentials_path, json.dumps(data, indent=2))
        return HubCredentials(
            self.endpoint, data["access_key_id"], data["secret_access_key"], source="local hub", pidfile=str(self.pid_path)
        )

    def _write_config(self) -> None:
        creds = self.credentials()
        encrypt = json.loads(self.credentials_path.read_text())["encrypt_secret"]
        import_root = str(self.state_dir.parent / "imports")
        config = {
            "listen_address": f"127.0.0.1:{self.port}",
            "logging": {"format": "text", "level": "INFO", "output": "-"},
            "database": {"type": "local", "local": {"path": str(self.state_dir / "metadata")}},
            "blockstore": self.blockstore.config()
            if self.blockstore
            else {
                "type": "local",
                "local": {
                    "path": str(self.block_dir),
                    "import_enabled": True,
                    "allowed_external_prefixes": [import_root],
                },
            },
            "committed": {"local_cache": {"dir": str(self.state_dir / "cache")}},
            "auth": {"encrypt": {"secret_key": encrypt}},
            "installation": {
                "user_name": "admin",
                "access_key_id": creds.access_key_id,
                "secret_access_key": creds.secret_access_key,
            },
            "stats": {"enabled": False},
            "email_subscription": {"enabled": False},
            # no phoning home from a local hub: the machine may have no internet at all
            "security": {"check_latest_version": False},
        }
        write_private(self.config_path, yaml.safe_dump(config, sort_keys=False))

    # ---- process state ----------------------------------------------------------
    def _read_pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _alive(self, pid: int) -> bool:
        return service_process(pid, "lakefs") is not None  # a zombie or a recycled pid is not our server

    def healthy(self, timeout: float = 1.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/_health", timeout=timeout) as resp:
                status: int = resp.status
                return 200 <= status < 300
        except Exception:
            return False

    def status(self) -> HubStatus:
        pid = self._read_pid()
        if pid is None:
            return HubStatus(False, False, None, self.endpoint, self.state_dir)
        if not self._alive(pid):
            return HubStatus(
                False,
                False,
                pid,
                self.endpoint,
                self.state_dir,
                note=f"stale pid file (process {pid} is gone; it crashed or was killed). Last log lines:\n" + self.tail(15),
            )
        return HubStatus(True, self.healthy(), pid, self.endpoint, self.state_dir)

    def tail(self, lines: int = 50) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log yet)"
        return "\n".join(text.splitlines()[-lines:])

    # ---- lifecycle --------------------------------------------------------------
    @contextmanager
    def _lifecycle_lock(self) -> Iterator[None]:
        """One start or stop at a time per hub directory, across processes.

        Two ``hub up`` at once (two terminals, ``make demo`` beside a notebook) would both find no
        server, both write the config and credentials, and both start lakeFS: the second fails on
        the port or badger's directory lock, and the pid file may name the loser. With the lock the
        second waits for the first and then finds its server running.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        fd = os.open(self.state_dir / "lifecycle.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def up(self, timeout: float = 60.0) -> HubStatus:
        """Start the server if needed and wait until it answers health checks."""
        with self._lifecycle_lock():
            return self._up(timeout)

    def _up(self, timeout: float) -> HubStatus:
        st = self.status()
        if st.running:
            if st.healthy or self._wait_healthy(pid=st.pid, timeout=timeout):
                return self.status()
            raise ServerError(
                f"lakeFS process {st.pid} is running but {self.endpoint} is not healthy. Last log lines:\n{self.tail(20)}",
                hint="run 'flotilla hub down' then 'flotilla hub up'",
            )
        stale_note = st.note
        self.pid_path.unlink(missing_ok=True)
        if self.binary is None:
            raise ServerError("no lakeFS binary configured", hint="run 'flotilla hub install' first")
        if not port_free(self.port):
            raise ServerError(
                f"port {self.port} on 127.0.0.1 is already in use by another program",
                hint="set FLOTILLA_HUB_PORT to a free port (or stop what is using it)",
            )
        self._write_config()  # the state dir exists (0700): the lifecycle lock made it
        # LAKEFS_* variables would silently override our config (credentials, ports): drop them.
        env = child_env(drop_prefix=LAKEFS_PREFIX)
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                [str(self.binary), "run", "-c", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.state_dir,
                start_new_session=True,  # survives the CLI that started it; Ctrl-C in a shell does not kill it
            )
        self.pid_path.write_text(str(proc.pid))
        if not self._wait_healthy(pid=proc.pid, timeout=timeout, proc=proc):
            code = proc.poll()
            if code is None:
                self._terminate(proc.pid, 10)
            self.pid_path.unlink(missing_ok=True)
            why = f"exited with code {code}" if code is not None else f"did not become healthy within {timeout:.0f}s"
            raise ServerError(
                f"lakeFS server {why}. Last log lines ({self.log_path}):\n{self.tail(20)}",
                hint="fix what the log says (a port clash, a locked metadata dir), then 'flotilla hub up' again",
            )
        st = self.status()
        if stale_note:
            return HubStatus(
                st.running, st.healthy, st.pid, st.endpoint, st.state_dir, note="recovered from a " + stale_note.split(".")[0]
            )
        return st

    def _wait_healthy(self, pid: int | None, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.healthy(timeout=1.0):
                return True
            if proc is not None and proc.poll() is not None:
                return False
            if proc is None and pid is not None and not self._alive(pid):
                return False
            time.sleep(0.1)
        return False

    def down(self, timeout: float = 30.0) -> str:
        """Stop the server gracefully (SIGTERM, then SIGKILL after ``timeout``) and say what happened."""
        with self._lifecycle_lock():
            return self._down(timeout)

    def _down(self, timeout: float) -> str:
        pid = self._read_pid()
        if pid is None:
            return "lakeFS hub was not running"
        if not self._alive(pid):
            self.pid_path.unlink(missing_ok=True)
            forget()  # stopped on purpose: commands in this process fail fast rather than wait for it
            return f"lakeFS hub was not running (removed stale pid file for process {pid})"
        how = self._terminate(pid, timeout)
        self.pid_path.unlink(missing_ok=True)
        forget()  # this process must not trust the stopped hub's identity for the seconds it is remembered
        return f"lakeFS hub (pid {pid}) stopped {how}"

    def _terminate(self, pid: int, timeout: float) -> str:
        proc = service_process(pid, "lakefs")
        return "(it had already exited)" if proc is None else stop_process(proc, timeout)
