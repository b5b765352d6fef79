"""Python twins of ``flotilla label install | up | down | status``, and a client for the local server.

Each takes optional :class:`~flotilla.settings.Settings` (default: from the environment), so tests
and notebooks drive the same code the CLI does.
"""

from __future__ import annotations

from pathlib import Path

from flotilla.labelstudio.client import LabelStudioClient
from flotilla.labelstudio.install import LABEL_STUDIO_VERSION, Reporter, _noop, ensure_installed, find_install
from flotilla.labelstudio.server import LabelStudioServer, LabelStudioStatus
from flotilla.settings import Settings


def local_server(settings: Settings | None = None, *, install: bool = False, report: Reporter = _noop) -> LabelStudioServer:
    """The local Label Studio of ``settings``; with ``install=True`` its virtualenv is created if missing."""
    settings = settings or Settings.from_env()
    exe = ensure_installed(settings, report) if install else find_install(settings)
    return LabelStudioServer(settings.label_dir, settings.label_port, exe, LABEL_STUDIO_VERSION)


def install(settings: Settings | None = None, report: Reporter = _noop) -> Path:
    return ensure_installed(settings or Settings.from_env(), report)


def up(settings: Settings | None = None, timeout: float = 180.0, report: Reporter = _noop) -> LabelStudioStatus:
    return local_server(settings, install=True, report=report).up(timeout=timeout)


def down(settings: Settings | None = None) -> str:
    return local_server(settings).down()


def status(settings: Settings | None = None) -> LabelStudioStatus:
    return local_server(settings).status()


def local_client(settings: Settings | None = None) -> LabelStudioClient:
    """A client for the local Label Studio, with the token from its credentials file."""
    server = local_server(settings)
    creds = server.credentials()
    return LabelStudioClient(creds.url, creds.token, credentials_path=creds.path)
