"""Where flotilla keeps its state, and the few knobs read from the environment.

All environment lookups live here so that the rest of the code takes explicit
arguments (no hidden globals). ``Settings.from_env()`` is called at the edges
(CLI, ``Hub()`` with no arguments); tests build ``Settings`` directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from flotilla.errors import ConfigError

LAKEFS_VERSION = "1.84.0"
DEFAULT_HUB_PORT = 8770
DEFAULT_REPO = "faces"


def int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer", hint=f"unset {name} or set it to a port number") from None
    if not 1 <= value <= 65535:
        raise ConfigError(f"{name}={value} is not a valid port", hint="use a port between 1024 and 65535")
    return value


@dataclass(frozen=True)
class Settings:
    """Paths and defaults for one flotilla installation."""

    home: Path
    cache: Path
    hub_port: int = DEFAULT_HUB_PORT
    lakefs_version: str = LAKEFS_VERSION

    @classmethod
    def from_env(cls) -> "Settings":
        home = Path(os.environ.get("FLOTILLA_HOME") or Path.home() / ".flotilla").expanduser()
        cache = Path(
            os.environ.get("FLOTILLA_CACHE")
            or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "flotilla"
        ).expanduser()
        return cls(
            home=home.resolve(),
            cache=cache.resolve(),
            hub_port=int_env("FLOTILLA_HUB_PORT", DEFAULT_HUB_PORT),
            lakefs_version=os.environ.get("FLOTILLA_LAKEFS_VERSION") or LAKEFS_VERSION,
        )

    @property
    def hub_dir(self) -> Path:
        """State of the local hub: config, metadata, blocks, logs, pid."""
        return self.home / "hub"
