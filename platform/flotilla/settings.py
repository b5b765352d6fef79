"""Where flotilla keeps its state, and every knob read from the environment.

All environment lookups live here so that the rest of the code takes explicit
arguments (no hidden globals). ``Settings.from_env()`` is called at the edges
(CLI, ``Hub()`` with no arguments); tests build ``Settings`` directly. What is
read per call (it may change while a process runs, as tests and a notebook's
``%env`` change it) is a function here, never a field: the cluster's ports and
address, the Ray auth variables, the marker of flotilla's own Ray cluster.

The names of the variables flotilla sets for others (a Ray job's runtime env,
its own Ray nodes, this process's Ray before it connects) are constants here too,
so that one grep finds every variable flotilla reads or writes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flotilla.errors import ConfigError

LAKEFS_VERSION = "1.84.0"
DEFAULT_HUB_PORT = 8770
DEFAULT_LABEL_PORT = 8771  # not Label Studio's 8080: a user's own Label Studio (or any dev server there) keeps working
DEFAULT_REPO = "faces"
DEFAULT_RAY_PORT = 6390  # not Ray's 6379 (also Redis's): a user's own `ray start` keeps working
DEFAULT_DASHBOARD_PORT = 8275  # not Ray's 8265: a plain ray.init() elsewhere keeps its dashboard

# ---- flotilla's own variables ---------------------------------------------------------------------
FLOTILLA_HOME = "FLOTILLA_HOME"
FLOTILLA_CACHE = "FLOTILLA_CACHE"
FLOTILLA_HUB_PORT = "FLOTILLA_HUB_PORT"
FLOTILLA_LABEL_PORT = "FLOTILLA_LABEL_PORT"
FLOTILLA_LAKEFS_VERSION = "FLOTILLA_LAKEFS_VERSION"
FLOTILLA_LAKEFS_BIN = "FLOTILLA_LAKEFS_BIN"
FLOTILLA_PROTECT_MAIN = "FLOTILLA_PROTECT_MAIN"  # a repository flotilla creates gets its main protected (docs/hub.md)
FLOTILLA_HUB_RETRY_S = "FLOTILLA_HUB_RETRY_S"  # how long hub calls ride out an outage (docs/hub.md, "Outages")
DEFAULT_HUB_RETRY_S = 120.0
FLOTILLA_PRESIGN = "FLOTILLA_PRESIGN"  # training data read straight from the object store when it can (docs/scale-out.md)
PRESIGN_MODES = ("auto", "off")
FLOTILLA_RAY_PORT = "FLOTILLA_RAY_PORT"
FLOTILLA_DASHBOARD_PORT = "FLOTILLA_DASHBOARD_PORT"
FLOTILLA_RAY_ADDRESS = "FLOTILLA_RAY_ADDRESS"  # the cluster `flotilla jobs` and `cluster status` talk to
FLOTILLA_RAY_CLUSTER = "FLOTILLA_RAY_CLUSTER"  # marks every process of flotilla's local Ray cluster
FLOTILLA_CODE_SHA = "FLOTILLA_CODE_SHA"  # a job's code version (its copy of the project has no .git)
FLOTILLA_CODE_DIRTY = "FLOTILLA_CODE_DIRTY"
FLOTILLA_CODE_DIFF = "FLOTILLA_CODE_DIFF"  # where a dirty tree's diff lies in the job's copy of the project
FLOTILLA_CODE_DIFF_SHA256 = "FLOTILLA_CODE_DIFF_SHA256"

# ---- other tools' variables -----------------------------------------------------------------------
LAKECTL_SERVER_ENDPOINT_URL = "LAKECTL_SERVER_ENDPOINT_URL"  # a remote hub, as lakectl and the lakeFS SDK name it
LAKECTL_CREDENTIALS_ACCESS_KEY_ID = "LAKECTL_CREDENTIALS_ACCESS_KEY_ID"
LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY = "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY"
LAKECTL_CONFIG_FILE = "LAKECTL_CONFIG_FILE"
LAKEFS_PREFIX = "LAKEFS_"  # lakeFS's own overrides of its config file, kept from the server flotilla starts
# Label Studio reads each setting X as LABEL_STUDIO_X, HEARTEX_X or plain X: a user's USERNAME, PORT, HOST or
# DATABASE_NAME would change its admin, port, URL or database. Dropped from the server flotilla starts.
LABEL_STUDIO_PREFIXES = ("LABEL_STUDIO_", "HEARTEX_")
LABEL_STUDIO_PLAIN_NAMES = (
    "USERNAME", "PASSWORD", "USER_TOKEN", "PORT", "HOST", "DATABASE_NAME", "DJANGO_DB", "BASE_DATA_DIR", "STORAGE_TYPE",
)  # fmt: skip
PYTHON_PATH_VARS = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")  # would mix flotilla's interpreter into Label Studio's
LABEL_STUDIO_QUIET_ENV = {  # no error reports or analytics to the vendor, no version check: it may have no internet
    "SENTRY_DSN": "",
    "FRONTEND_SENTRY_DSN": "",
    "COLLECT_ANALYTICS": "false",
    "LATEST_VERSION_CHECK": "false",
}
LABEL_STUDIO_USERNAME = "LABEL_STUDIO_USERNAME"  # the admin, password and planted token of a first boot
LABEL_STUDIO_PASSWORD = "LABEL_STUDIO_PASSWORD"
LABEL_STUDIO_USER_TOKEN = "LABEL_STUDIO_USER_TOKEN"
USE_DEFAULT_BANNED_SUBNETS = "USE_DEFAULT_BANNED_SUBNETS"  # Label Studio's SSRF guard: which addresses storages may not reach
USER_ADDITIONAL_BANNED_SUBNETS = "USER_ADDITIONAL_BANNED_SUBNETS"
RAY_ADDRESS = "RAY_ADDRESS"  # set by Ray for a job's driver: the cluster the job runs on
RAY_API_SERVER_ADDRESS = "RAY_API_SERVER_ADDRESS"
RAY_AUTH_MODE = "RAY_AUTH_MODE"
RAY_AUTH_TOKEN = "RAY_AUTH_TOKEN"
RAY_AUTH_TOKEN_PATH = "RAY_AUTH_TOKEN_PATH"
RAY_TMPDIR = "RAY_TMPDIR"
RAY_USAGE_STATS_ENABLED = "RAY_USAGE_STATS_ENABLED"
RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S = "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"
RAY_TRAIN_ENABLE_PRINT_PATCH = "RAY_TRAIN_ENABLE_PRINT_PATCH"
RAY_TRAIN_HEALTH_CHECK_INTERVAL_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's single-host mode (cluster/loopback.py)
TUNE_DISABLE_SIGINT_HANDLER = "TUNE_DISABLE_SIGINT_HANDLER"
TUNE_GLOBAL_CHECKPOINT_S = "TUNE_GLOBAL_CHECKPOINT_S"
TUNE_DISABLE_AUTO_CALLBACK_LOGGERS = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"
WANDB_API_KEY = "WANDB_API_KEY"
WANDB_DIR = "WANDB_DIR"
WANDB_MODE = "WANDB_MODE"


RAY_TRAIN_ENV: dict[str, str] = {
    RAY_TRAIN_ENABLE_PRINT_PATCH: "0",  # workers' prints stay prints, not Ray Train's rewritten log lines
    # Ray Train v2's controller polls its workers every 2 s, and hears of each epoch's report and of the
    # workers' end only at a poll: up to 2 s late per epoch and at the end of every run and multi-worker
    # trial (issue 21's trace). A quarter of a second costs a few cheap RPCs a second.
    RAY_TRAIN_HEALTH_CHECK_INTERVAL_S: "0.25",
}
"""The environment flotilla gives Ray Train's processes (a local Ray it starts, a job it submits); the user's own
value of any of them wins."""


def _number_env(
    name: str, default: float, parse: type[int] | type[float], low: float, high: float, *, wanted: str, hint: str
) -> float:
    """``name``'s value read by ``parse`` and checked to lie in [low, high]; ``default`` when unset or empty.

    One reader for every numeric setting, so each refuses a bad value the same way: a ConfigError naming the
    variable, the value and what it should be (a NaN fails the range check too).
    """
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not {'an integer' if parse is int else 'a number'}", hint=hint) from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={raw!r} is not {wanted}", hint=hint)
    return value


def hub_retry_budget_s() -> float:
    """Seconds a hub call keeps retrying transient failures (:mod:`flotilla.hub.retry`); 0 turns retries off."""
    return _number_env(
        FLOTILLA_HUB_RETRY_S,
        DEFAULT_HUB_RETRY_S,
        float,
        0,
        3600,
        wanted="a number of seconds between 0 and 3600",
        hint=f"unset it for the default ({DEFAULT_HUB_RETRY_S:.0f} s) or set e.g. {FLOTILLA_HUB_RETRY_S}=120",
    )


def int_env(name: str, default: int) -> int:
    """A port number from ``name`` (``default`` when unset)."""
    return int(
        _number_env(
            name, default, int, 1, 65535, wanted="a valid port", hint=f"unset {name} or set it to a port between 1024 and 65535"
        )
    )


@dataclass(frozen=True)
class Settings:
    """Paths and defaults for one flotilla installation."""

    home: Path
    cache: Path
    hub_port: int = DEFAULT_HUB_PORT
    lakefs_version: str = LAKEFS_VERSION
    label_port: int = DEFAULT_LABEL_PORT

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(os.environ.get(FLOTILLA_HOME) or Path.home() / ".flotilla").expanduser()
        cache = Path(
            os.environ.get(FLOTILLA_CACHE) or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "flotilla"
        ).expanduser()
        for name, path in ((FLOTILLA_HOME, home), (FLOTILLA_CACHE, cache)):
            if path.exists() and not path.is_dir():
                raise ConfigError(
                    f"{name}={path} is a file, not a folder: flotilla keeps its hub, runs and caches in that folder",
                    hint=f"point {name} at a folder (it is created if missing), or unset it for the default",
                )
        return cls(
            home=home.resolve(),
            cache=cache.resolve(),
            hub_port=int_env(FLOTILLA_HUB_PORT, DEFAULT_HUB_PORT),
            lakefs_version=os.environ.get(FLOTILLA_LAKEFS_VERSION) or LAKEFS_VERSION,
            label_port=int_env(FLOTILLA_LABEL_PORT, DEFAULT_LABEL_PORT),
        )

    @property
    def hub_dir(self) -> Path:
        """State of the local hub: config, metadata, blocks, logs, pid."""
        return self.home / "hub"

    @property
    def label_dir(self) -> Path:
        """State of the local Label Studio: its data dir, credentials, log, pid."""
        return self.home / "label-studio"


# ---- read per call ----------------------------------------------------------------------------------
def local_ray_port() -> int:
    """The GCS port of flotilla's local Ray cluster (when ``flotilla cluster up`` is given none)."""
    return int_env(FLOTILLA_RAY_PORT, DEFAULT_RAY_PORT)


def local_dashboard_port() -> int:
    """The dashboard (and Jobs API) port of flotilla's local Ray cluster."""
    return int_env(FLOTILLA_DASHBOARD_PORT, DEFAULT_DASHBOARD_PORT)


def ray_address() -> str | None:
    """The cluster flotilla's job client and ``cluster status`` talk to when given no address (None: the local one)."""
    return os.environ.get(FLOTILLA_RAY_ADDRESS) or None


def job_ray_address() -> str | None:
    """Inside a Ray job's driver: the address of the cluster the job runs on, as Ray hands it down."""
    return os.environ.get(RAY_ADDRESS) or None


def in_flotilla_cluster() -> bool:
    """Whether this process runs on flotilla's local Ray cluster (a job's driver there inherits the marker)."""
    return bool(os.environ.get(FLOTILLA_RAY_CLUSTER))


def ray_auth_chosen() -> bool:
    """Whether the user chose a Ray token (RAY_AUTH_MODE alone does not count: Ray sets it in any process
    that started a local Ray)."""
    return any(k in os.environ for k in (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH))


def ray_auth_token() -> str | None:
    """The token given in RAY_AUTH_TOKEN itself (None when unset or empty)."""
    return os.environ.get(RAY_AUTH_TOKEN) or None


def ray_auth_token_path() -> Path | None:
    return Path(os.environ[RAY_AUTH_TOKEN_PATH]) if os.environ.get(RAY_AUTH_TOKEN_PATH) else None


def hub_credentials_env() -> dict[str, str]:
    """The LAKECTL_* endpoint and key pair that are set (non-empty), by name."""
    names = (LAKECTL_SERVER_ENDPOINT_URL, LAKECTL_CREDENTIALS_ACCESS_KEY_ID, LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY)
    return {n: os.environ[n] for n in names if os.environ.get(n)}


def lakectl_config_file() -> Path:
    return Path(os.environ.get(LAKECTL_CONFIG_FILE) or Path.home() / ".lakectl.yaml")


def lakefs_bin() -> str | None:
    """A lakeFS server binary the user names (FLOTILLA_LAKEFS_BIN), before PATH and the cache."""
    return os.environ.get(FLOTILLA_LAKEFS_BIN) or None


def wandb_api_key_set() -> bool:
    """Whether ``WANDB_API_KEY`` is set: one of W&B's own ways to be logged in (the others are its files)."""
    return bool(os.environ.get(WANDB_API_KEY))


def wandb_mode() -> str | None:
    """``WANDB_MODE`` when a person set it (online, offline, disabled): it decides, as it does for W&B itself."""
    return os.environ.get(WANDB_MODE, "").strip().lower() or None


def wandb_dir() -> str | None:
    """``WANDB_DIR`` when set: W&B's runs go there instead of under the run's own folder."""
    return os.environ.get(WANDB_DIR) or None


def protect_new_repos() -> bool:
    """``FLOTILLA_PROTECT_MAIN`` set to 1/true/yes: a repository flotilla creates gets a branch protection rule on its
    default branch at once, so nothing but a merge ever changes it (docs/hub.md, "Branch protection")."""
    return os.environ.get(FLOTILLA_PROTECT_MAIN, "").strip().lower() in ("1", "true", "yes", "on")


def presign_mode() -> str:
    """``FLOTILLA_PRESIGN``: ``auto`` (the default) reads training data through URLs lakeFS presigns, straight from the
    object store, where the hub's blockstore can presign (S3, GCS, Azure); ``off`` reads everything through the hub's
    S3 gateway. Read where the data is read (a Ray node's own environment): whether a node reaches the bucket is its fact."""
    raw = os.environ.get(FLOTILLA_PRESIGN, "").strip().lower() or "auto"
    if raw not in PRESIGN_MODES:
        raise ConfigError(
            f"{FLOTILLA_PRESIGN}={os.environ[FLOTILLA_PRESIGN]!r} is not one of {', '.join(PRESIGN_MODES)}",
            hint=f"unset it (auto: presigned reads where the hub's blockstore supports them) or set {FLOTILLA_PRESIGN}=off "
            "to read everything through the hub's S3 gateway",
        )
    return raw


def tune_handles_sigint() -> bool:
    """Whether Ray Tune installs its own Ctrl-C handler (unless TUNE_DISABLE_SIGINT_HANDLER is set to non-zero)."""
    return os.environ.get(TUNE_DISABLE_SIGINT_HANDLER, "0") in ("", "0")


@dataclass(frozen=True)
class ShippedCode:
    """The code version job submission handed a job (its copy of the project has no ``.git``).

    ``diff`` is the dirty tree's diff as a path relative to the project root (the staged copy holds
    it), ``diff_sha256`` its hash; both None for a clean tree.
    """

    sha: str
    dirty: bool | None
    diff: str | None = None
    diff_sha256: str | None = None


def code_vars(sha: str, dirty: bool | None, diff: str | None = None, diff_sha256: str | None = None) -> dict[str, str]:
    """The variables that hand a submitted job its code version (read back there by :func:`shipped_code`)."""
    out = {FLOTILLA_CODE_SHA: sha, FLOTILLA_CODE_DIRTY: str(dirty)}
    if diff and diff_sha256:
        out |= {FLOTILLA_CODE_DIFF: diff, FLOTILLA_CODE_DIFF_SHA256: diff_sha256}
    return out


def shipped_code() -> ShippedCode | None:
    """The code version job submission handed this job (see :func:`code_vars`), or None outside a job."""
    sha = os.environ.get(FLOTILLA_CODE_SHA)
    if not sha:
        return None
    dirty = os.environ.get(FLOTILLA_CODE_DIRTY)
    return ShippedCode(
        sha,
        None if dirty in (None, "None") else dirty == "True",
        os.environ.get(FLOTILLA_CODE_DIFF) or None,
        os.environ.get(FLOTILLA_CODE_DIFF_SHA256) or None,
    )


def child_env(*, drop: Iterable[str] = (), drop_prefix: str | tuple[str, ...] | None = None) -> dict[str, str]:
    """This process's environment, for a child process to inherit, less ``drop`` and names starting ``drop_prefix``
    (one prefix or several)."""
    gone = set(drop)
    return {k: v for k, v in os.environ.items() if k not in gone and not (drop_prefix and k.startswith(drop_prefix))}


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """``values`` in this process's environment while within (processes started there inherit them); afterwards
    each variable is as it was, set or unset."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
