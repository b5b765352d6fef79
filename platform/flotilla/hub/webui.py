"""lakeFS's web UI: building it into the server binary, and telling whether a server serves it.

lakeFS embeds ``webui/dist`` in its binary at ``go build`` time; its Go module ships the UI's
sources (a Vite/React app with a ``package-lock.json``) but not ``dist``, so a plain build serves
a "lakeFS UI Not Built" page. Provisioning runs ``npm ci`` (cache under flotilla's cache, so a
rebuild downloads nothing) and the app's ``build`` script before compiling. The UI is a
convenience: when Node or npm is missing or the npm build fails, the binary is built without it
and the reason is recorded beside the binary (:class:`BuildRecord`), where ``hub status`` finds it.

A cached binary without a record predates the UI build; :func:`needs_build` sends it back to the
build once, and never again (a no-UI record is final until ``flotilla hub install --rebuild``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

NOT_BUILT_MARKER = "lakeFS UI Not Built"  # the title of lakeFS's fallback.html, served when dist was empty
NPM_TIMEOUT_S = 1800.0
RECORD_NAME = "build.json"


@dataclass(frozen=True)
class BuildRecord:
    """How the cached binary was made; ``ui_reason`` says why there is no UI when ``ui`` is false."""

    version: str
    ui: bool
    ui_reason: str = ""
    how: str = "go build"

    def describe_ui(self) -> str:
        return "built in" if self.ui else f"not built: {self.ui_reason}"


@dataclass(frozen=True)
class UiBuild:
    """The outcome of one attempt to build ``webui/dist``."""

    built: bool
    reason: str = ""
    seconds: float = 0.0


def record_path(binary: Path) -> Path:
    return binary.parent / RECORD_NAME


def read_record(binary: Path) -> BuildRecord | None:
    """The record beside a cached binary; ``None`` when there is none (or it is unreadable)."""
    try:
        data = json.loads(record_path(binary).read_text())
        return BuildRecord(**{k: data[k] for k in ("version", "ui", "ui_reason", "how") if k in data})
    except (OSError, ValueError, TypeError, KeyError):
        return None


def write_record(binary: Path, record: BuildRecord) -> None:
    fd, tmp = tempfile.mkstemp(dir=binary.parent, prefix=".build-")
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(record), fh, indent=2)
    os.chmod(tmp, 0o644)
    os.replace(tmp, record_path(binary))


def needs_build(binary_exists: bool, record: BuildRecord | None, version: str) -> bool:
    """A cached binary is current when it exists and has a record for this version, UI or not.

    Without a record it is one built before flotilla built the UI: rebuild it once.
    """
    return not (binary_exists and record is not None and record.version == version)


def required_node_major(engines: str) -> int:
    """The lowest Node major version a package.json ``engines.node`` range such as ``>= 18`` allows (0: any)."""
    m = re.search(r"(\d+)", engines or "")
    return int(m.group(1)) if m else 0


def node_major(version_output: str) -> int:
    """``v20.20.2`` → 20 (0 when it cannot be read)."""
    m = re.match(r"\s*v?(\d+)", version_output or "")
    return int(m.group(1)) if m else 0


def why_not_buildable(node: str | None, npm: str | None, node_version: str, engines: str) -> str:
    """Empty when the UI can be built here, else the reason (shown to the user and recorded)."""
    if not node or not npm:
        missing = " and ".join(n for n, p in (("node", node), ("npm", npm)) if not p)
        return f"no {missing} on PATH (the UI needs Node.js >= {required_node_major(engines) or 18})"
    need, have = required_node_major(engines), node_major(node_version)
    if need and have < need:
        return f"Node {node_version.strip()} is older than the {need} lakeFS's UI needs"
    return ""


def build_ui(webui: Path, npm_cache: Path, env: dict[str, str], version: str) -> UiBuild:
    """``npm ci`` + ``npm run build`` in a writable copy of lakeFS's ``webui/``; never raises for a failed build."""
    node, npm = shutil.which("node", path=env.get("PATH")), shutil.which("npm", path=env.get("PATH"))
    try:
        engines = json.loads((webui / "package.json").read_text()).get("engines", {}).get("node", "")
    except (OSError, ValueError):
        return UiBuild(False, f"no readable {webui / 'package.json'} in the lakeFS module")
    node_version = _output([node, "--version"], env) if node else ""
    reason = why_not_buildable(node, npm, node_version, engines)
    if reason:
        return UiBuild(False, reason)
    assert npm is not None
    started = time.monotonic()
    npm_env = {**env, "npm_config_cache": str(npm_cache), "VERSION": version, "CI": "true"}
    steps = (
        [npm, "ci", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error"],
        [npm, "run", "build"],
    )
    for cmd in steps:
        try:
            proc = subprocess.run(cmd, cwd=webui, env=npm_env, capture_output=True, text=True, timeout=NPM_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return UiBuild(False, f"'npm {cmd[1]}' did not finish ({type(exc).__name__})")
        if proc.returncode != 0:
            tail = (proc.stderr.strip() or proc.stdout.strip())[-600:]
            return UiBuild(False, f"'npm {cmd[1]}' failed (exit {proc.returncode}): {tail}")
    if not (webui / "dist" / "index.html").is_file():
        return UiBuild(False, "'npm run build' produced no dist/index.html")
    return UiBuild(True, seconds=time.monotonic() - started)


def probe_ui(endpoint: str, timeout: float = 3.0) -> bool | None:
    """Does the server at ``endpoint`` serve the real UI (True), lakeFS's "not built" page (False), or nothing (None)?"""
    try:
        with urllib.request.urlopen(f"{endpoint}/", timeout=timeout) as resp:
            page = resp.read(200_000).decode("utf-8", "replace")
    except Exception:
        return None
    return NOT_BUILT_MARKER not in page


def describe_ui(endpoint: str, served: bool | None, record: BuildRecord | None) -> str:
    """One line for ``hub status``: the UI's address and how to log in, or why it is not there and what to do."""
    if served:
        return f"{endpoint}/  (log in with the keys 'flotilla hub credentials' prints)"
    if served is None:
        return f"{endpoint}/ did not answer"
    if record is not None and record.ui:
        return "not served: the running server predates the binary with the UI; 'flotilla hub down && flotilla hub up'"
    why = record.ui_reason if record is not None else "this lakeFS binary was built without it"
    return f"not built: {why}; to add it: 'flotilla hub install --rebuild', then 'flotilla hub down && flotilla hub up'"


def _output(cmd: list[str], env: dict[str, str]) -> str:
    try:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""
