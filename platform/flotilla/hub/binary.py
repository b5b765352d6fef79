"""Finding, downloading or building the lakeFS server binary.

Order (first hit wins): ``$FLOTILLA_LAKEFS_BIN`` → ``lakefs`` on ``PATH`` →
flotilla's per-version cache → the official release archive (only when the
internet answers) → a build from lakeFS's Go module at the pinned version.
Downloads and builds land in the cache atomically (temp file + rename) under a
file lock, so two ``make`` runs never race and a build happens once per machine.
A build compiles lakeFS's web UI first (``flotilla.hub.webui``); a :class:`BuildRecord`
beside the cached binary says whether it has the UI, and why not. A cached binary
without one predates the UI build and is rebuilt once.
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import platform as _stdlib_platform
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path

from flotilla.errors import BinaryNotFoundError
from flotilla.hostio import locked
from flotilla.hub.webui import BuildRecord, build_ui, needs_build, read_record, write_record
from flotilla.settings import Settings, child_env, lakefs_bin

Reporter = Callable[[str], None]
RELEASE_URL = "https://github.com/treeverse/lakeFS/releases/download/v{v}/lakeFS_{v}_{os}_{arch}.tar.gz"
MIN_GO = (1, 26, 4)
DOWNLOAD_TIMEOUT_S = 5.0  # per connect and per read: a stalled download falls through to the Go build


def _noop(_: str) -> None:
    pass


def cached_binary(settings: Settings) -> Path:
    return settings.cache / "lakefs" / settings.lakefs_version / "lakefs"


def build_record(settings: Settings) -> BuildRecord | None:
    """How the binary flotilla would use was made; ``None`` for one flotilla did not make (env var, PATH) or an old one."""
    if lakefs_bin() or shutil.which("lakefs"):  # never an error: status must work when that binary is gone
        return None
    return read_record(cached_binary(settings))


def find_binary(settings: Settings) -> Path | None:
    """Return an existing binary without downloading or building anything."""
    external = _external_binary()
    if external:
        return external
    cached = cached_binary(settings)
    return cached if cached.is_file() and os.access(cached, os.X_OK) else None


def _external_binary() -> Path | None:
    env = lakefs_bin()
    if env:
        path = Path(env).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BinaryNotFoundError(
                f"FLOTILLA_LAKEFS_BIN={env} is not an executable file",
                hint="point it at a lakeFS server binary, or unset it to let flotilla provide one",
            )
        return path
    on_path = shutil.which("lakefs")
    return Path(on_path) if on_path else None


def _current(target: Path, version: str) -> bool:
    return not needs_build(target.is_file() and os.access(target, os.X_OK), read_record(target), version)


def ensure_binary(settings: Settings, report: Reporter = _noop, *, allow_download: bool = True, rebuild: bool = False) -> Path:
    """Return a lakeFS binary, downloading or building it into the cache if needed.

    ``rebuild`` replaces the cached binary even when it is current (say, after installing Node).
    """
    external = _external_binary()
    if external:
        return external
    version = settings.lakefs_version
    target = cached_binary(settings)
    if not rebuild and _current(target, version):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with locked(target.parent / ".lock"):
        if not rebuild and _current(target, version):  # another process finished while we waited for the lock
            return target
        if target.is_file() and not rebuild:
            report(f"the cached lakeFS binary {target} predates flotilla's web UI build: replacing it once")
        errors: list[str] = []
        if allow_download:
            try:
                _download(version, target, report)
                write_record(target, BuildRecord(version, ui=True, how="release archive"))
                return target
            except _Unavailable as exc:
                errors.append(f"download: {exc}")
        try:
            write_record(target, _build(settings, target, report))
            return target
        except _Unavailable as exc:
            errors.append(f"build from the Go module: {exc}")
        if target.is_file() and os.access(target, os.X_OK):  # the binary we have still serves the hub
            failed = "rebuilding it failed (" + "; ".join(errors) + ")"
            if read_record(target) is None:  # once per machine, like a build: an old binary, kept without the UI
                reason = f"the binary predates flotilla's UI build and {failed}"
                write_record(target, BuildRecord(version, ui=False, ui_reason=reason, how="earlier build"))
            report(f"keeping the cached lakeFS binary {target}: {failed}")
            return target
    raise BinaryNotFoundError(
        "no lakeFS server binary found, downloaded or built (" + "; ".join(errors) + ")",
        hint=(
            "provide one of: (1) FLOTILLA_LAKEFS_BIN=/path/to/lakefs, "
            "(2) a 'lakefs' binary on PATH, or "
            f"(3) internet access or Go >= {'.'.join(map(str, MIN_GO))} so flotilla can fetch/build "
            f"lakeFS v{settings.lakefs_version} into {target.parent}"
        ),
    )


def binary_version(binary: Path) -> str:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    return (out.stdout or out.stderr).strip()


class _Unavailable(Exception):
    """This way of obtaining the binary does not work here; try the next one."""


def _download(version: str, target: Path, report: Reporter) -> None:
    arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(_stdlib_platform.machine().lower())
    osname = {"Linux": "Linux", "Darwin": "Darwin"}.get(_stdlib_platform.system())
    if not arch or not osname:
        raise _Unavailable(f"no release archive for {_stdlib_platform.system()}/{_stdlib_platform.machine()}")
    url = RELEASE_URL.format(v=version, os=osname, arch=arch)
    try:
        resp = urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S)
    except Exception as exc:  # no internet is the normal case on locked-down machines
        raise _Unavailable(f"release archive not reachable ({type(exc).__name__})") from None
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    total = int(resp.headers.get("Content-Length") or 0) or None
    with resp, tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        archive = Path(tmp) / "lakefs.tar.gz"
        # A connection that stalls or drops mid-download (timeout, IncompleteRead, reset) or a truncated
        # archive is "no download here", like no internet at all: fall through to the Go build instead
        # of surfacing a raw traceback. Errors writing our own cache dir are not caught: they are real.
        try:
            with Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn()) as bar:
                task = bar.add_task(f"downloading lakeFS v{version}", total=total)
                got = 0
                with open(archive, "wb") as out:
                    while chunk := _read_chunk(resp):
                        out.write(chunk)
                        got += len(chunk)
                        bar.advance(task, len(chunk))
            if total and got < total:  # read(n) returns b"" at a dropped connection, not IncompleteRead
                raise _Unavailable(f"download of the release archive broke off after {got} of {total} bytes")
            with tarfile.open(archive) as tar:
                member = next((m for m in tar.getmembers() if Path(m.name).name == "lakefs" and m.isfile()), None)
                if member is None:
                    raise _Unavailable("release archive has no 'lakefs' binary")
                src = tar.extractfile(member)
                assert src is not None
                data = src.read()
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise _Unavailable(f"release archive is damaged or truncated ({type(exc).__name__}: {exc})") from None
        _install_atomically(data, target)
    report(f"downloaded lakeFS v{version} to {target}")


def _read_chunk(resp: http.client.HTTPResponse) -> bytes:
    try:
        return resp.read(1 << 20)
    except (OSError, http.client.HTTPException) as exc:  # timeouts and resets are OSErrors; IncompleteRead is HTTP
        raise _Unavailable(f"download of the release archive broke off ({type(exc).__name__}: {exc})") from None


def _go_version(go: str) -> tuple[int, ...]:
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, timeout=60).stdout.strip()
    nums = out.removeprefix("go").split("-")[0].split(".")
    return tuple(int(n) for n in nums if n.isdigit())


def _build(settings: Settings, target: Path, report: Reporter) -> BuildRecord:
    go = shutil.which("go")
    if not go:
        raise _Unavailable("no 'go' on PATH")
    if _go_version(go) < MIN_GO:
        # the go command fetches a newer toolchain through the module proxy by itself (GOTOOLCHAIN=auto)
        report(f"local Go is older than {'.'.join(map(str, MIN_GO))}; letting 'go' fetch a toolchain")
    version = settings.lakefs_version
    work = settings.cache / "lakefs"
    env = {
        **child_env(),
        "GOMODCACHE": str(work / "gomod"),
        "GOCACHE": str(work / "gocache"),
        "GOFLAGS": "-modcacherw",
        "CGO_ENABLED": "0",
    }
    from rich.console import Console

    console = Console(stderr=True, emoji=False)
    started = time.monotonic()
    with console.status(f"building lakeFS v{version} from its Go module (first time only, several minutes)") as status:
        dl = _run([go, "mod", "download", "-json", f"github.com/treeverse/lakefs@v{version}"], env, work)
        try:
            src_dir = Path(json.loads(dl)["Dir"])
        except (ValueError, KeyError):
            raise _Unavailable(f"'go mod download' gave no module directory: {dl[-500:]}") from None
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            src = Path(tmp) / "src"
            shutil.copytree(src_dir, src)
            for p in src.rglob("*"):  # the module cache is read-only; npm writes node_modules and dist
                if not p.is_symlink():
                    p.chmod(p.stat().st_mode | 0o200)
            status.update(f"building lakeFS's web UI (npm ci, vite build; cache in {work / 'npm'})")
            ui = build_ui(src / "webui", work / "npm", child_env(), version)
            if ui.built:
                report(f"built lakeFS's web UI in {ui.seconds:.0f}s")
            else:
                report(f"lakeFS's web UI not built, the hub works without it: {ui.reason}")
            status.update(f"compiling lakeFS v{version} (go build ./cmd/lakefs)")
            out = Path(tmp) / "lakefs"
            ldflags = f"-s -w -X github.com/treeverse/lakefs/pkg/version.Version={version}"
            _run([go, "build", "-trimpath", "-ldflags", ldflags, "-o", str(out), "./cmd/lakefs"], env, src)
            _install_atomically(out.read_bytes(), target)
    ui_word = "with its web UI" if ui.built else "without its web UI"
    report(f"built lakeFS v{version} {ui_word} in {time.monotonic() - started:.0f}s -> {target}")
    return BuildRecord(version, ui=ui.built, ui_reason=ui.reason)


def _run(cmd: list[str], env: dict[str, str], cwd: Path) -> str:
    cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise _Unavailable(f"'{' '.join(cmd[:3])} ...' failed (exit {proc.returncode}): {proc.stderr.strip()[-1500:]}")
    return proc.stdout


def _install_atomically(data: bytes, target: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".lakefs-")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o755)
    os.replace(tmp, target)
