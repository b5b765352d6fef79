"""Shared fixtures: a real lakeFS server on a free port in a temp dir, per session.

Nothing here mocks lakeFS. The binary comes from flotilla's own provisioning
(``make test`` ran ``flotilla hub install`` first), so the tests exercise the
same path users do. Environment variables that would point flotilla at a
user's own hub are cleared for the whole session.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.hub import Hub, LocalHub
from flotilla.hub.binary import ensure_binary
from flotilla.hub.server import free_port
from flotilla.settings import Settings

_LEAKY_ENV = [k for k in os.environ if k.startswith(("LAKECTL_", "LAKEFS_"))] + ["FLOTILLA_HOME", "FLOTILLA_HUB_PORT"]


@pytest.fixture(scope="session", autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    saved = {k: os.environ.pop(k) for k in _LEAKY_ENV if k in os.environ}
    # wandb / ray / torch write caches under HOME-relative paths: keep them in the temp dir
    base = tmp_path_factory.mktemp("env")
    extra = {"WANDB_MODE": "offline", "WANDB_DIR": str(base), "RAY_USAGE_STATS_ENABLED": "0"}
    old = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    os.environ.update(saved)


@pytest.fixture(scope="session")
def lakefs_binary() -> Path:
    return ensure_binary(Settings.from_env())


def make_settings(home: Path) -> Settings:
    """Settings for an isolated flotilla home (own hub state and port), sharing the binary cache."""
    return Settings(home=home, cache=Settings.from_env().cache, hub_port=free_port())


@pytest.fixture(scope="session")
def hub_settings(tmp_path_factory: pytest.TempPathFactory, lakefs_binary: Path) -> Settings:
    return make_settings(tmp_path_factory.mktemp("flotilla-home"))


@pytest.fixture(scope="session")
def local_server(hub_settings: Settings, lakefs_binary: Path) -> Iterator[LocalHub]:
    server = LocalHub(hub_settings.hub_dir, hub_settings.hub_port, lakefs_binary)
    server.up(timeout=60)
    yield server
    server.down()


@pytest.fixture(scope="session")
def hub(local_server: LocalHub, hub_settings: Settings) -> Hub:
    return Hub(credentials=local_server.credentials(), settings=hub_settings)


@pytest.fixture
def repo(hub: Hub):
    """A fresh repository per test (cheap: metadata only), deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    r = hub.ensure_repo(name)
    yield r
    hub.delete_repo(name)


@pytest.fixture
def isolated_settings(tmp_path: Path, lakefs_binary: Path):
    """Factory of Settings with their own home and port, for tests that stop/start servers."""
    return lambda name="home": make_settings(tmp_path / name)
