"""Where the hub's endpoint and key pair come from.

Resolution order, first complete hit wins:
1. explicit arguments;
2. environment: ``LAKECTL_SERVER_ENDPOINT_URL``, ``LAKECTL_CREDENTIALS_ACCESS_KEY_ID``,
   ``LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY`` (the names lakectl and the lakeFS SDK use);
3. flotilla's local hub (its 0600 credentials file), the embedded default;
4. the lakectl config file (``$LAKECTL_CONFIG_FILE`` or ``~/.lakectl.yaml``).

``HubCredentials`` never shows its secret in ``repr``/``str``, so logging a
credentials object or an exception that holds one cannot leak it. The embedded hub's credentials
carry its pid file: every client built from them first confirms that the port is held by that
hub (:mod:`flotilla.hub.identity`), so the key never goes to a listener that took the port.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flotilla.errors import AuthError, ConfigError
from flotilla.hub.identity import PID_FILE, confirm_local_hub, vouch
from flotilla.hub.retry import mark_answered, s3_retry_strategy
from flotilla.settings import (
    LAKECTL_CREDENTIALS_ACCESS_KEY_ID,
    LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY,
    LAKECTL_SERVER_ENDPOINT_URL,
    Settings,
    hub_credentials_env,
    lakectl_config_file,
)
from flotilla.specfiles import safe_yaml

_ENV_NAMES = (LAKECTL_SERVER_ENDPOINT_URL, LAKECTL_CREDENTIALS_ACCESS_KEY_ID, LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY)


@dataclass(frozen=True)
class HubCredentials:
    endpoint: str
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    source: str = "arguments"
    pidfile: str | None = None  # the embedded hub's pid file: set only on its own credentials

    def __post_init__(self) -> None:
        object.__setattr__(self, "endpoint", _normalise_endpoint(self.endpoint))

    def confirm_server(self, *, fresh: bool = False, deadline: float | None = None) -> None:
        """Raise, before anything is sent, unless the endpoint is served by the hub these credentials belong to.

        Only the embedded hub's credentials are checked (see :mod:`flotilla.hub.identity`, which also
        says when it waits for a hub being restarted); a remote hub's identity is its TLS certificate's business.
        """
        if self.pidfile is not None:
            confirm_local_hub(self.pidfile, self.endpoint, fresh=fresh, deadline=deadline)

    def vouch(self) -> None:
        """Wait out this hub's outages in this process from its first call, as if it had answered here:
        for a process started by one that confirmed the hub (a sweep's trial, see
        :func:`flotilla.hub.identity.vouch` and :func:`flotilla.hub.retry.mark_answered`)."""
        mark_answered(self.endpoint)
        if self.pidfile is not None:
            vouch(self.pidfile, self.endpoint)

    def before_resend(self, deadline: float) -> None:
        """Run before a hub call is re-sent after a failure (:mod:`flotilla.hub.retry`): the server again."""
        self.confirm_server(fresh=True, deadline=deadline)

    def __str__(self) -> str:
        return f"{self.endpoint} (key {self.access_key_id[:4]}…, from {self.source})"

    def s3_options(self) -> dict[str, Any]:
        """Options for pyarrow's S3FileSystem talking to lakeFS's S3 gateway (the server confirmed first),
        retrying transient failures for the hub retry budget (:mod:`flotilla.hub.retry`)."""
        self.confirm_server()
        return {
            "retry_strategy": s3_retry_strategy(),
            "endpoint_override": self.endpoint.split("://", 1)[1],
            "scheme": self.endpoint.split("://", 1)[0],
            "access_key": self.access_key_id,
            "secret_key": self.secret_access_key,
            "region": "us-east-1",
        }


def _normalise_endpoint(url: str) -> str:
    url = url.strip().rstrip("/")
    if url.endswith("/api/v1"):
        url = url[: -len("/api/v1")]
    if "://" not in url:
        url = "http://" + url
    return url


def resolve_credentials(
    settings: Settings,
    endpoint: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
) -> HubCredentials:
    """Apply the resolution order above; raise ``AuthError`` naming every place looked at."""
    if endpoint or access_key_id or secret_access_key:
        if not (endpoint and access_key_id and secret_access_key):
            given = (("endpoint", endpoint), ("access_key_id", access_key_id), ("secret_access_key", secret_access_key))
            raise ConfigError(
                f"incomplete hub credentials: missing {', '.join(n for n, v in given if not v)}",
                hint="pass endpoint, access_key_id and secret_access_key together (or none, to use the local hub)",
            )
        return HubCredentials(endpoint, access_key_id, secret_access_key, source="arguments")
    env = hub_credentials_env()
    named = [n for n in _ENV_NAMES if n in env]
    if len(named) == 3:
        return HubCredentials(
            env[LAKECTL_SERVER_ENDPOINT_URL],
            env[LAKECTL_CREDENTIALS_ACCESS_KEY_ID],
            env[LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY],
            source="environment",
        )
    if named:  # half a remote hub must not fall back, silently, to the local one
        missing = [n for n in _ENV_NAMES if n not in env]
        raise ConfigError(
            f"incomplete hub credentials in the environment: {', '.join(named)} set but {', '.join(missing)} not",
            hint="set all three LAKECTL_* variables for a remote hub, or unset them all to use the local one",
        )
    local = settings.hub_dir / "credentials.json"
    if local.exists():
        data = read_credentials_file(local)
        return HubCredentials(
            f"http://127.0.0.1:{settings.hub_port}",
            data["access_key_id"],
            data["secret_access_key"],
            source="local hub",
            pidfile=str(settings.hub_dir / PID_FILE),
        )
    lakectl = lakectl_config_file()
    if lakectl.exists():
        cfg = safe_yaml(lakectl.read_text(), str(lakectl)) or {}
        creds = cfg.get("credentials") or {}
        url = (cfg.get("server") or {}).get("endpoint_url")
        if url and creds.get("access_key_id") and creds.get("secret_access_key"):
            return HubCredentials(url, creds["access_key_id"], creds["secret_access_key"], source=str(lakectl))
    raise AuthError(
        "no lakeFS hub credentials found (looked at arguments, LAKECTL_* environment variables, "
        f"the local hub in {settings.hub_dir}, and {lakectl})",
        hint="start the embedded hub with 'flotilla hub up', or set LAKECTL_SERVER_ENDPOINT_URL, "
        "LAKECTL_CREDENTIALS_ACCESS_KEY_ID and LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY",
    )


def read_credentials_file(path: Path) -> dict[str, Any]:
    """The local hub's key file; a damaged one is named, never echoed (it holds secrets)."""
    try:
        data = json.loads(Path(path).read_text())
        if not (isinstance(data, dict) and data.get("access_key_id") and data.get("secret_access_key")):
            raise ValueError("keys missing")
        return data
    except (ValueError, OSError) as exc:
        raise ConfigError(
            f"the local hub's credentials file {path} is unreadable or damaged ({type(exc).__name__})",
            hint="restore it from a backup: it holds the keys the hub's existing data was written with; "
            "for a fresh, empty hub, move the whole hub folder aside and run 'flotilla hub up'",
        ) from None
