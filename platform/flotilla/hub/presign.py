"""Presigned reads: an object's bytes straight from the object store, not through the lakeFS server.

Through lakeFS's S3 gateway every byte of training data passes through the lakeFS server: one
server carries the whole cluster's reads. With an S3, GCS or Azure blockstore lakeFS can instead
sign a short-lived URL for the object's physical address (``stat_object(presign=True)``); the
reader then GETs the bytes from the bucket itself, and the server answers one small metadata call
per object. The local blockstore cannot presign, so there the gateway stays the only path.

:class:`PresignedReads` decides once per process and hub whether to use them
(:func:`~flotilla.settings.presign_mode` ``auto`` and the server's storage config says
``pre_sign_support``), and reads one object per call, falling back to the caller's gateway read
for any object whose direct read fails (an expired URL, a 403, a bucket this node cannot reach):
training never fails for it. The first fallback in a process warns once
(:class:`PresignedReadFailed`); after :data:`GIVE_UP_AFTER` failures in a row the process reads
only through the gateway.

A presigned URL carries a signature and the blockstore's key *id*, never a secret, but it is a
bearer token until it expires: flotilla never logs one whole, only its host and path
(:func:`redact`), and never the text of an HTTP library's exception (it may quote the URL).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import urllib3

from flotilla.errors import AuthError, HubError, NotFoundError
from flotilla.hub._translate import unavailable
from flotilla.hub.credentials import HubCredentials
from flotilla.hub.retry import mark_answered, sdk_retry
from flotilla.settings import FLOTILLA_PRESIGN, hub_retry_budget_s, presign_mode

log = logging.getLogger(__name__)

GIVE_UP_AFTER = 3
"""Direct reads that fail in a row before this process stops trying them (each failure costs a round trip)."""
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0


class PresignedReadFailed(UserWarning):
    """A direct read from the object store failed and the object was read through the hub's gateway instead."""


@dataclass
class PresignStats:
    """What this process's presigned reads of one hub did (tests and benchmarks read it)."""

    direct: int = 0  # objects read straight from the object store
    fallbacks: int = 0  # objects whose direct read failed and that the gateway served
    failed_in_a_row: int = 0
    warned: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def given_up(self) -> bool:
        return self.failed_in_a_row >= GIVE_UP_AFTER


_supported: dict[str, bool] = {}
_stats: dict[str, PresignStats] = {}
_state_lock = threading.Lock()
_pool: urllib3.PoolManager | None = None


def stats(endpoint: str) -> PresignStats:
    """This process's presigned-read record for the hub at ``endpoint``."""
    with _state_lock:
        return _stats.setdefault(endpoint, PresignStats())


def forget() -> None:
    """Drop what this process learnt about every hub (support, failures, the warning given): after a hub is
    restarted with another blockstore, and between tests."""
    with _state_lock:
        _supported.clear()
        _stats.clear()


def redact(url: str) -> str:
    """``url`` without its query (the signature, key id and expiry): scheme, host and path, safe to log."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


_SIGNED_QUERY = re.compile(r"\?[^\s\"']*(?:X-Amz-Signature|X-Goog-Signature|[?&]sig)=[^\s\"']*", re.IGNORECASE)


class _NoSignedQueries(logging.Filter):
    """Cuts the query off any presigned URL in urllib3's connection-pool log lines: that logger writes each
    request's whole URL at DEBUG (and each retry's at WARNING), signature included."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if _SIGNED_QUERY.search(text):
            record.msg, record.args = _SIGNED_QUERY.sub("?<signed query left out>", text), None
        return True


def _http() -> urllib3.PoolManager:
    global _pool
    with _state_lock:
        if _pool is None:
            logging.getLogger("urllib3.connectionpool").addFilter(_NoSignedQueries())
            # no re-sends here (urllib3 would log the whole URL of each): the gateway is the retry
            _pool = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S))
        return _pool


class _DirectReadFailed(Exception):
    """Why a direct read failed, in words safe to log (no URL, no library message)."""


class PresignedReads:
    """Reads objects of a hub's repositories through presigned URLs, with the gateway as the fallback."""

    def __init__(self, credentials: HubCredentials, *, mode: str | None = None) -> None:
        self.credentials = credentials
        self.mode = mode if mode is not None else presign_mode()

    @property
    def stats(self) -> PresignStats:
        return stats(self.credentials.endpoint)

    def supported(self) -> bool:
        """Whether the hub's blockstore presigns URLs (asked once per process and hub: a blockstore is fixed
        for the life of a lakeFS server)."""
        endpoint = self.credentials.endpoint
        with _state_lock:
            known = _supported.get(endpoint)
        if known is None:
            config = self._api("/config", "read the server's storage config")
            known = bool((config.get("storage_config") or {}).get("pre_sign_support"))
            with _state_lock:
                _supported[endpoint] = known
        return known

    def active(self) -> bool:
        """Whether reads go straight to the object store now: the setting allows it, the blockstore presigns, and
        this process has not given up on direct reads after failures."""
        return self.mode != "off" and not self.stats.given_up and self.supported()

    def read(
        self,
        repo: str,
        ref: str,
        path: str,
        gateway: Callable[[], bytes],
        *,
        byte_range: tuple[int, int] | None = None,
    ) -> bytes:
        """The bytes of ``path`` at ``ref`` (``byte_range``: [start, end) of them), straight from the object store
        when :meth:`active`, else (or when that fails) from ``gateway()``, the caller's read through the S3 gateway."""
        if not self.active():
            return gateway()
        url, size = self._presign(repo, ref, path)
        try:
            data = self._get(url, size, byte_range)
        except _DirectReadFailed as why:
            self._failed(url, str(why))
            return gateway()
        st = self.stats
        with st.lock:
            st.direct += 1
            st.failed_in_a_row = 0
        return data

    def _presign(self, repo: str, ref: str, path: str) -> tuple[str, int | None]:
        query = urlencode({"path": path, "presign": "true"})
        st = self._api(
            f"/repositories/{quote(repo)}/refs/{quote(ref)}/objects/stat?{query}", f"presign {path!r} at {ref!r} in {repo!r}"
        )
        return str(st.get("physical_address") or ""), st.get("size_bytes")

    def _api(self, route: str, action: str) -> dict[str, Any]:
        """A GET of lakeFS's API ``/api/v1<route>``, as JSON: over urllib3, not the lakeFS SDK, whose first import in a
        process costs seconds on the way to a trial's first batch (docs/training.md). The embedded hub is confirmed
        before the key is sent, outages are retried for the hub retry budget, as the SDK client's calls are."""
        creds = self.credentials
        creds.confirm_server()
        resend = creds.before_resend if creds.pidfile is not None else None
        try:
            resp = _http().request(
                "GET",
                f"{creds.endpoint}/api/v1{route}",
                headers=urllib3.make_headers(basic_auth=f"{creds.access_key_id}:{creds.secret_access_key}"),
                retries=sdk_retry(hub_retry_budget_s(), resend, creds.endpoint),
            )
        except urllib3.exceptions.HTTPError:
            raise unavailable(creds.endpoint) from None
        try:
            body: dict[str, Any] = json.loads(resp.data or b"{}")
        except ValueError:
            body = {}
        if resp.status == 200:
            mark_answered(creds.endpoint)
            return body
        msg = str(body.get("message") or resp.reason or "")
        if resp.status == 401:
            raise AuthError(
                f"cannot {action}: the hub rejected the credentials ({msg})",
                hint="check the access key pair (LAKECTL_CREDENTIALS_* or the local hub's credentials file)",
            )
        if resp.status == 404:
            raise NotFoundError(f"cannot {action}: {msg}")
        raise HubError(f"cannot {action}: {msg} (HTTP {resp.status})")

    def _get(self, url: str, size: int | None, byte_range: tuple[int, int] | None) -> bytes:
        headers = {}
        want = size
        if byte_range is not None:
            start, end = byte_range
            headers["Range"] = f"bytes={start}-{end - 1}"
            want = end - start
        if not url.startswith(("https://", "http://")):
            raise _DirectReadFailed(f"the hub presigned no HTTP URL (its address starts {url.split(':', 1)[0]!r})")
        try:
            resp = _http().request("GET", url, headers=headers, preload_content=True, redirect=False)
        except urllib3.exceptions.HTTPError as exc:  # its text may quote the URL: only its kind is told
            reason = getattr(exc, "reason", None)
            raise _DirectReadFailed(type(reason or exc).__name__) from None
        if resp.status not in ((206,) if byte_range is not None else (200,)):
            raise _DirectReadFailed(f"HTTP {resp.status}")
        data: bytes = resp.data
        if want is not None and len(data) != want:
            raise _DirectReadFailed(f"{len(data)} bytes where {want} were expected")
        return data

    def _failed(self, url: str, why: str) -> None:
        st = self.stats
        with st.lock:
            st.fallbacks += 1
            st.failed_in_a_row += 1
            first, st.warned = not st.warned, True
            given_up = st.given_up
        where = redact(url)
        log.debug("direct read of %s failed (%s); read through the hub's gateway", where, why)
        if given_up:
            log.debug("%d direct reads failed in a row: this process reads through the gateway from now on", GIVE_UP_AFTER)
        if first:
            warnings.warn(
                f"a presigned read straight from the object store failed ({why}; {where}): that object was read through "
                f"the hub's S3 gateway at {self.credentials.endpoint} instead, as is any other whose direct read fails, and "
                f"after {GIVE_UP_AFTER} failures in a row this process reads only through the gateway. Training goes on. "
                "To fix: let this node reach the bucket (network, the bucket's policy, lakeFS's "
                f"blockstore.*.pre_signed_endpoint), or set {FLOTILLA_PRESIGN}=off on it to read through the gateway "
                "without trying",
                PresignedReadFailed,
                stacklevel=3,
            )
