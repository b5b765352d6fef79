"""``flotilla.Hub``: a connection to a lakeFS data hub.

A ``Hub`` is cheap: it holds credentials and creates the SDK client lazily on
first use. ``Hub()`` with no arguments connects to whatever
:func:`~flotilla.hub.credentials.resolve_credentials` finds (the local hub by
default). Repository-level work goes through :class:`~flotilla.hub.repo.Repo`
handles from :meth:`Hub.repo` / :meth:`Hub.ensure_repo`.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from flotilla.errors import ConfigError, ConflictError, NotFoundError
from flotilla.hub import protection
from flotilla.hub._translate import translate
from flotilla.hub.credentials import HubCredentials, resolve_credentials
from flotilla.hub.repo import Repo
from flotilla.hub.retry import install_sdk_retry, sdk_retry
from flotilla.hub.sdk import lakefs
from flotilla.names import check_repo_id
from flotilla.settings import Settings, hub_retry_budget_s, protect_new_repos

if TYPE_CHECKING:
    import lakefs as sdk_types


class _RepoExists(ConflictError):
    """The repository ``ensure_repo`` would create exists already: its handle is the answer."""


class Hub:
    """A lakeFS endpoint plus credentials; the entry point of the data API."""

    def __init__(
        self,
        endpoint: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        *,
        credentials: HubCredentials | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.credentials = credentials or resolve_credentials(self.settings, endpoint, access_key_id, secret_access_key)
        self._client: sdk_types.Client | None = None

    def __repr__(self) -> str:
        return f"Hub({self.credentials})"

    @property
    def endpoint(self) -> str:
        return self.credentials.endpoint

    @property
    def client(self) -> sdk_types.Client:
        """The SDK client; the embedded hub's identity is confirmed on every use (remembered for seconds),
        so a listener that took the port of a stopped hub never receives the key. Its requests retry
        transient failures for the hub retry budget (:mod:`flotilla.hub.retry`), confirming the
        embedded hub again before each re-send."""
        self.credentials.confirm_server()
        if self._client is None:
            client = lakefs().Client(
                host=self.credentials.endpoint,
                username=self.credentials.access_key_id,
                password=self.credentials.secret_access_key,
            )
            resend = self.credentials.before_resend if self.credentials.pidfile is not None else None
            install_sdk_retry(client, sdk_retry(hub_retry_budget_s(), resend, self.credentials.endpoint))
            self._client = client
        return self._client

    def version(self) -> str:
        """The server's version; also the cheapest authenticated round trip (a health check)."""
        with translate("read the server version", self.endpoint):
            return self.client.version

    def repo(self, name: str) -> Repo:
        """A handle on an existing repository (not checked until first use)."""
        return Repo(self, check_repo_id(name))

    def repos(self) -> list[str]:
        with translate("list repositories", self.endpoint):
            return [r.id for r in lakefs().repositories(client=self.client)]

    def existing_repo(self, name: str, *, hint: str | None = None) -> Repo:
        """The handle of ``name``, checked to exist now: a writer that must not create a repository by a typo
        (``facse`` for ``faces``) calls this rather than :meth:`ensure_repo`. ``hint``: how the caller creates one."""
        check_repo_id(name)
        existing = self.repos()
        if name not in existing:
            raise NotFoundError(
                missing_repo_message(name, existing, self.endpoint), hint=hint or f"create it with Hub.ensure_repo({name!r})"
            )
        return Repo(self, name)

    def ensure_repo(
        self,
        name: str,
        *,
        default_branch: str = "main",
        storage_namespace: str | None = None,
        protect: bool | None = None,
    ) -> Repo:
        """Create the repository if it does not exist; return its handle either way.

        On a local blockstore the namespace defaults to ``local://<name>``; on a
        cloud blockstore pass ``storage_namespace`` (e.g. ``s3://bucket/faces``).
        ``protect``: give a repository created now a branch protection rule on its default branch
        (default: ``FLOTILLA_PROTECT_MAIN``); an existing repository's rules are left as they are.
        """
        check_repo_id(name)
        if storage_namespace is None:
            # this server's config, asked of it: lakefs 0.16's Client.storage_config kept every server's in one dict
            # shared by the whole process (patched in flotilla.hub.sdk), so a second hub in one process answered for the first
            with translate("read the server's storage config", self.endpoint):
                conf = self.client.sdk_client.config_api.get_config()
            cfg = conf.storage_config or (conf.storage_config_list or [None])[0]
            if cfg is None:
                raise ConfigError("the hub's config names no storage", hint="pass storage_namespace (e.g. s3://bucket/name)")
            if cfg.blockstore_type != "local":
                raise ConfigError(
                    f"the hub stores data on {cfg.blockstore_type}; flotilla cannot guess a storage namespace",
                    hint=f"pass storage_namespace, e.g. {cfg.blockstore_namespace_example}",
                )
            storage_namespace = f"local://{name}"
        try:
            with translate(f"create repository {name!r}", self.endpoint, conflict=_RepoExists):
                lakefs().Repository(name, client=self.client).create(
                    storage_namespace=storage_namespace, default_branch=default_branch
                )
        except _RepoExists:  # lakeFS's 409 on create; a namespace in use (a 400) is still an error
            return Repo(self, name)
        repo = Repo(self, name)
        if protect_new_repos() if protect is None else protect:
            protection.protect(repo, default_branch)
        return repo

    def delete_repo(self, name: str) -> None:
        with translate(f"delete repository {name!r}", self.endpoint, not_found=lambda: f"repositories: {self.repos()}"):
            lakefs().Repository(check_repo_id(name), client=self.client).delete()


def missing_repo_message(name: str, existing: list[str], endpoint: str) -> str:
    """``repository 'facse' does not exist on the hub at ...; did you mean 'faces'? existing repositories: ...``."""
    close = difflib.get_close_matches(name, existing, n=1)
    guess = f" (did you mean {close[0]!r}?)" if close else ""
    listing = ", ".join(existing) or "(none)"
    return f"repository {name!r} does not exist on the hub at {endpoint}{guess}; existing repositories: {listing}"


def repo_for(credentials: HubCredentials, name: str) -> Repo:
    """A repo handle from credentials alone (callbacks rebuilt in another process by Ray)."""
    return Hub(credentials=credentials, settings=Settings.from_env()).repo(name)
