"""Label Studio in its own virtualenv, created on first use and cached per machine.

Label Studio pins what flotilla's stack cannot take (pyarrow < 25, Django 5.2, numpy < 2.3 through
its SDK's opencv), so it never shares flotilla's environment: it gets a virtualenv of its own under
the cache (``<cache>/label-studio/<version>/venv``) and runs as a subprocess. A stamp file written
last marks a complete install; an install cut short (no stamp) is thrown away and redone. A file
lock makes two concurrent ``flotilla label install`` take turns, so the install happens once.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from flotilla.errors import LabelStudioError
from flotilla.hostio import locked
from flotilla.settings import PYTHON_PATH_VARS, Settings, child_env

LABEL_STUDIO_VERSION = "1.23.2"
Reporter = Callable[[str], None]


def _noop(_: str) -> None:
    pass


def install_dir(settings: Settings) -> Path:
    return settings.cache / "label-studio" / LABEL_STUDIO_VERSION


def venv_dir(settings: Settings) -> Path:
    return install_dir(settings) / "venv"


def executable(settings: Settings) -> Path:
    """The ``label-studio`` command of the cached install (it may not exist yet)."""
    return venv_dir(settings) / "bin" / "label-studio"


def _stamp(settings: Settings) -> Path:
    return install_dir(settings) / "installed"


def find_install(settings: Settings) -> Path | None:
    """The ``label-studio`` command when a complete install is cached, else None (nothing is installed)."""
    exe = executable(settings)
    stamp = _stamp(settings)
    if stamp.is_file() and stamp.read_text().strip() == LABEL_STUDIO_VERSION and exe.is_file():
        return exe
    return None


def ensure_installed(settings: Settings, report: Reporter = _noop) -> Path:
    """Return the ``label-studio`` command, creating its virtualenv and installing it first if needed."""
    found = find_install(settings)
    if found:
        return found
    root = install_dir(settings)
    root.mkdir(parents=True, exist_ok=True)
    with locked(root / ".lock"):
        found = find_install(settings)  # another process finished while we waited for the lock
        if found:
            return found
        venv = venv_dir(settings)
        if venv.exists():
            report(f"removing an incomplete Label Studio install in {venv}")
            shutil.rmtree(venv)
        started = time.monotonic()
        report(f"installing Label Studio {LABEL_STUDIO_VERSION} into its own virtualenv {venv} (first time only, ~1-2 min)")
        _run([sys.executable, "-m", "venv", str(venv)], "creating the virtualenv")
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        _run([*pip, "--upgrade", "pip"], "upgrading pip in the virtualenv")
        _run([*pip, f"label-studio=={LABEL_STUDIO_VERSION}"], f"pip install label-studio=={LABEL_STUDIO_VERSION}")
        if not executable(settings).is_file():
            raise LabelStudioError(
                f"pip installed label-studio=={LABEL_STUDIO_VERSION} but {executable(settings)} is missing",
                hint=f"remove {root} and run 'flotilla label install' again",
            )
        _stamp(settings).write_text(LABEL_STUDIO_VERSION + "\n")
        report(f"installed Label Studio {LABEL_STUDIO_VERSION} in {time.monotonic() - started:.0f}s -> {venv}")
        return executable(settings)


def _run(cmd: list[str], what: str) -> None:
    env = child_env(drop=PYTHON_PATH_VARS)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-2000:]
        raise LabelStudioError(
            f"{what} failed (exit {proc.returncode}):\n{tail}",
            hint="Label Studio installs from PyPI: check the machine reaches it, then 'flotilla label install' again",
        )
