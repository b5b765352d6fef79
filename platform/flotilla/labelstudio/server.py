"""The local Label Studio flotilla runs itself, the way ``flotilla hub up`` runs lakeFS.

State lives under ``<FLOTILLA_HOME>/label-studio``::

    data/                 Label Studio's data dir (SQLite database, uploads, media)
    credentials.json      admin user, password and API token (0600), generated once
    label-studio.log      label-studio.pid      lifecycle.lock

The server binds 127.0.0.1 only, on the port flotilla chose and checked itself (Label Studio would
silently take the next port when its own is busy, and nothing would find it). Its error reporting,
analytics and version check are off. The admin user and a planted API token are created on first
boot (a new data dir) with legacy tokens enabled, the only kind a planted token can be; later boots
keep them. ``up`` is idempotent; ``down`` signals the whole process group (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from flotilla.errors import ConfigError, LabelStudioError
from flotilla.hostio import port_free, service_process, stop_process, write_private
from flotilla.settings import (
    FLOTILLA_LABEL_PORT,
    LABEL_STUDIO_PASSWORD,
    LABEL_STUDIO_PLAIN_NAMES,
    LABEL_STUDIO_PREFIXES,
    LABEL_STUDIO_QUIET_ENV,
    LABEL_STUDIO_USER_TOKEN,
    LABEL_STUDIO_USERNAME,
    PYTHON_PATH_VARS,
    USE_DEFAULT_BANNED_SUBNETS,
    USER_ADDITIONAL_BANNED_SUBNETS,
    child_env,
)

ADMIN_USER = "admin@flotilla.local"  # Label Studio's users are e-mail addresses

# Label Studio's SSRF guard refuses storage endpoints on reserved networks, loopback included, and so the local
# lakeFS's S3 gateway at 127.0.0.1. Its own default list, less loopback: every other reserved network stays banned.
BANNED_SUBNETS_BUT_LOOPBACK = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24",
    "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4",
    "233.252.0.0/24", "240.0.0.0/4", "255.255.255.255/32", "::/128", "::ffff:0:0/96", "::ffff:0:0:0/96",
    "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001:0000::/32", "2001:20::/28", "2001:db8::/32", "2002::/16",
    "fc00::/7", "fe80::/10", "ff00::/8",
)  # fmt: skip


@dataclass(frozen=True)
class LabelStudioCredentials:
    """Where the local Label Studio answers and how to log in; ``repr``/``str`` never show a secret."""

    url: str
    username: str
    password: str = field(repr=False)
    token: str = field(repr=False)
    path: Path | None = None

    def __str__(self) -> str:
        return f"{self.url} (user {self.username}, token in {self.path})"


@dataclass(frozen=True)
class LabelStudioStatus:
    """What ``flotilla label status`` reports."""

    running: bool
    healthy: bool
    pid: int | None
    url: str
    state_dir: Path
    version: str | None = None
    note: str = ""

    def describe(self) -> str:
        if self.running and self.healthy:
            return f"Label Studio {self.version or ''} running (pid {self.pid}) at {self.url}, state in {self.state_dir}"
        if self.running:
            return f"Label Studio process {self.pid} is running but not healthy at {self.url}. {self.note}".strip()
        return f"Label Studio is not running (state in {self.state_dir}). {self.note}".strip()


def server_env(creds: LabelStudioCredentials) -> dict[str, str]:
    """The environment Label Studio runs in: this one, less what would redirect it, plus its quiet settings and user.

    Label Studio reads each setting X as ``LABEL_STUDIO_X``, ``HEARTEX_X`` or plain ``X``, so a user's ``USERNAME``,
    ``PORT`` or ``DATABASE_NAME`` would change its admin, port or database: those are dropped, and so is the Python
    path of flotilla's own interpreter. Storages may reach loopback (the local lakeFS), no other reserved network.
    The user is created (the token planted) on the first boot that has none;
    later boots find it and change nothing. Secrets go in the environment, not argv: ``/proc/<pid>/environ`` is
    private to the user, ``cmdline`` is not.
    """
    env = child_env(drop=(*PYTHON_PATH_VARS, *LABEL_STUDIO_PLAIN_NAMES), drop_prefix=LABEL_STUDIO_PREFIXES)
    return (
        env
        | LABEL_STUDIO_QUIET_ENV
        | {
            USE_DEFAULT_BANNED_SUBNETS: "false",
            USER_ADDITIONAL_BANNED_SUBNETS: ",".join(BANNED_SUBNETS_BUT_LOOPBACK),
            LABEL_STUDIO_USERNAME: creds.username,
            LABEL_STUDIO_PASSWORD: creds.password,
            LABEL_STUDIO_USER_TOKEN: creds.token,
        }
    )


class LabelStudioServer:
    """Lifecycle of one local Label Studio bound to one state directory and one port."""

    def __init__(self, state_dir: Path, port: int, executable: Path | None = None, version: str | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.port = port
        self.executable = executable
        self.version = version
        self.data_dir = self.state_dir / "data"
        self.credentials_path = self.state_dir / "credentials.json"
        self.log_path = self.state_dir / "label-studio.log"
        self.pid_path = self.state_dir / "label-studio.pid"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- credentials ----------------------------------------------------------------
    def credentials(self) -> LabelStudioCredentials:
        """The admin user and API token, generated (once) on first use and kept 0600."""
        if self.credentials_path.exists():
            try:
                data = json.loads(self.credentials_path.read_text())
                username, password, token = data["username"], data["password"], data["token"]
            except (ValueError, KeyError, TypeError):
                raise ConfigError(
                    f"{self.credentials_path} is not a Label Studio credentials file flotilla wrote",
                    hint=f"stop Label Studio ('flotilla label down') and remove {self.state_dir} to start afresh",
                ) from None
        else:
            username, password, token = ADMIN_USER, secrets.token_hex(16), secrets.token_hex(20)  # a token: 40 chars max
            data = {"username": username, "password": password, "token": token}
            write_private(self.credentials_path, json.dumps(data, indent=2))
        return LabelStudioCredentials(self.url, username, password, token, self.credentials_path)

    # ---- process state ----------------------------------------------------------------
    def _read_pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _alive(self, pid: int) -> bool:
        return service_process(pid, "label-studio") is not None  # a zombie or a recycled pid is not our server

    def healthy(self, timeout: float = 2.0) -> bool:
        """Whether ``GET /health/`` on exactly our port answers ``{"status": "UP"}``."""
        try:
            with urllib.request.urlopen(f"{self.url}/health/", timeout=timeout) as resp:
                return bool(json.loads(resp.read()).get("status") == "UP")
        except Exception:
            return False

    def _server_version(self) -> str | None:
        try:
            with urllib.request.urlopen(f"{self.url}/api/version", timeout=2.0) as resp:
                release = json.loads(resp.read()).get("release")
                return str(release) if release else self.version
        except Exception:
            return self.version

    def status(self) -> LabelStudioStatus:
        pid = self._read_pid()
        if pid is None:
            return LabelStudioStatus(False, False, None, self.url, self.state_dir)
        if not self._alive(pid):
            note = f"stale pid file (process {pid} is gone; it crashed or was killed). Last log lines:\n" + self.tail(15)
            return LabelStudioStatus(False, False, pid, self.url, self.state_dir, note=note)
        healthy = self.healthy()
        return LabelStudioStatus(True, healthy, pid, self.url, self.state_dir, self._server_version() if healthy else None)

    def tail(self, lines: int = 50) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log yet)"
        return "\n".join(text.splitlines()[-lines:])

    # ---- lifecycle ----------------------------------------------------------------------
    @contextmanager
    def _lifecycle_lock(self) -> Iterator[None]:
        """One start or stop at a time per state directory, across processes."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        fd = os.open(self.state_dir / "lifecycle.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def up(self, timeout: float = 180.0) -> LabelStudioStatus:
        """Start Label Studio if needed and wait until ``/health/`` answers UP (first boot migrates: ~30 s)."""
        with self._lifecycle_lock():
            return self._up(timeout)

    def _up(self, timeout: float) -> LabelStudioStatus:
        st = self.status()
        if st.running:
            if st.healthy or self._wait_healthy(st.pid, timeout):
                return self.status()
            raise LabelStudioError(
                f"Label Studio process {st.pid} is running but {self.url} is not healthy. Last log lines:\n{self.tail(20)}",
                hint="run 'flotilla label down' then 'flotilla label up'",
            )
        self.pid_path.unlink(missing_ok=True)
        if self.executable is None:
            raise LabelStudioError("Label Studio is not installed", hint="run 'flotilla label install' first")
        if not port_free(self.port):
            raise LabelStudioError(
                f"port {self.port} on 127.0.0.1 is already in use by another program, so Label Studio cannot have it "
                "(it would silently move to another port)",
                hint=f"set {FLOTILLA_LABEL_PORT} to a free port (or stop what is using {self.port})",
            )
        if self.data_dir.is_dir() and any(self.data_dir.iterdir()) and not self.credentials_path.exists():
            raise ConfigError(
                f"{self.data_dir} holds a Label Studio but its credentials file {self.credentials_path} is gone: "
                "the admin token cannot be recovered (Label Studio plants it on first boot only)",
                hint=f"remove {self.data_dir} to start with a fresh Label Studio (its projects are lost)",
            )
        creds = self.credentials()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(self.executable),
            "start",
            "--no-browser",
            "--internal-host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--enable-legacy-api-token",  # read when the organisation is created (first boot): a planted token needs it
        ]
        env = server_env(creds)
        with open(self.log_path, "ab") as log:
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.state_dir,
                start_new_session=True,  # its own process group: down stops every worker it forked
            )
        self.pid_path.write_text(str(proc.pid))
        if not self._wait_healthy(proc.pid, timeout, proc):
            code = proc.poll()
            if code is None:
                self._terminate(proc.pid, 10)
            self.pid_path.unlink(missing_ok=True)
            why = f"exited with code {code}" if code is not None else f"did not answer {self.url}/health/ within {timeout:.0f}s"
            raise LabelStudioError(
                f"Label Studio {why}. Last log lines ({self.log_path}):\n{self.tail(20)}",
                hint="fix what the log says, then 'flotilla label up' again",
            )
        return self.status()

    def _wait_healthy(self, pid: int | None, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.healthy():
                return True
            if proc is not None and proc.poll() is not None:
                return False
            if proc is None and pid is not None and not self._alive(pid):
                return False
            time.sleep(0.5)
        return False

    def down(self, timeout: float = 30.0) -> str:
        """Stop the server (SIGTERM to its process group, SIGKILL after ``timeout``) and say what happened."""
        with self._lifecycle_lock():
            pid = self._read_pid()
            if pid is None:
                return "Label Studio was not running"
            if not self._alive(pid):
                self.pid_path.unlink(missing_ok=True)
                return f"Label Studio was not running (removed stale pid file for process {pid})"
            how = self._terminate(pid, timeout)
            self.pid_path.unlink(missing_ok=True)
            return f"Label Studio (pid {pid}) stopped {how}"

    def _terminate(self, pid: int, timeout: float) -> str:
        proc = service_process(pid, "label-studio")
        return "(it had already exited)" if proc is None else stop_process(proc, timeout, tree=True)
