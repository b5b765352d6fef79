"""Python twins of ``flotilla hub install | up | down | status | logs | credentials``.

Each takes optional :class:`~flotilla.settings.Settings` (default: from the
environment), so tests and notebooks drive the same code the CLI does.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flotilla.errors import ConfigError
from flotilla.hub.binary import Reporter, _noop, build_record, ensure_binary, find_binary
from flotilla.hub.blockstore import S3Blockstore
from flotilla.hub.client import Hub
from flotilla.hub.credentials import HubCredentials
from flotilla.hub.server import HubStatus, LocalHub, free_port
from flotilla.hub.webui import describe_ui, probe_ui
from flotilla.settings import Settings


def local_hub(settings: Settings | None = None, *, install: bool = False, report: Reporter = _noop) -> LocalHub:
    """The local hub of ``settings``; with ``install=True`` the binary is fetched/built if missing."""
    settings = settings or Settings.from_env()
    binary = ensure_binary(settings, report) if install else find_binary(settings)
    return LocalHub(settings.hub_dir, settings.hub_port, binary)


def attach(settings: Settings | None = None) -> LocalHub:
    """The local hub of ``settings`` without looking up the binary: stopping, inspecting and reading
    the log of a server only need its state dir and pid file, and must work even when the binary the
    server was started from has since been removed (or ``FLOTILLA_LAKEFS_BIN`` points nowhere)."""
    settings = settings or Settings.from_env()
    return LocalHub(settings.hub_dir, settings.hub_port, None)


def install(settings: Settings | None = None, report: Reporter = _noop, *, rebuild: bool = False) -> Path:
    return ensure_binary(settings or Settings.from_env(), report, rebuild=rebuild)


def up(settings: Settings | None = None, timeout: float = 60.0, report: Reporter = _noop) -> HubStatus:
    settings = settings or Settings.from_env()
    return with_ui(local_hub(settings, install=True, report=report).up(timeout=timeout), settings)


def down(settings: Settings | None = None) -> str:
    return attach(settings).down()


def status(settings: Settings | None = None) -> HubStatus:
    settings = settings or Settings.from_env()
    return with_ui(attach(settings).status(), settings)


def credentials(settings: Settings | None = None) -> HubCredentials:
    """The local hub's admin key pair (for the web UI's login form); an error, not new keys, before the first ``up``."""
    hub = attach(settings)
    if not hub.credentials_path.exists():
        raise ConfigError(f"the local hub has no keys yet ({hub.credentials_path} is missing)", hint="run 'flotilla hub up'")
    return hub.credentials()


def with_ui(st: HubStatus, settings: Settings) -> HubStatus:
    """``st`` with where the web UI is, or why there is none: what the running server serves decides,
    the binary's build record says why."""
    if not (st.running and st.healthy):
        return st
    return dataclasses.replace(st, ui=describe_ui(st.endpoint, probe_ui(st.endpoint), build_record(settings)))


def logs(settings: Settings | None = None, lines: int = 50) -> str:
    return attach(settings).tail(lines)


@contextmanager
def private_hub(prefix: str = "flotilla-", *, blockstore: S3Blockstore | None = None) -> Iterator[tuple[Hub, LocalHub]]:
    """A throwaway local hub in a temp home on a free port (benchmarks, notebooks); removed on exit.
    ``blockstore``: keep its objects in that S3-compatible bucket instead of the temp home."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        settings = Settings(home=Path(tmp), cache=Settings.from_env().cache, hub_port=free_port())
        server = LocalHub(settings.hub_dir, settings.hub_port, ensure_binary(settings), blockstore=blockstore)
        server.up()
        try:
            yield Hub(credentials=server.credentials(), settings=settings), server
        finally:
            server.down()
