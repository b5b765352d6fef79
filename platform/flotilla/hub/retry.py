"""Riding out a short hub outage: what hub calls retry, for how long, and what they never re-send.

A lakeFS restart (a crash and ``flotilla hub up``, a host reboot) takes seconds to a minute. Without
retries every hub call made meanwhile fails at once, and Ray Train restarts its worker group just
as fast, so ``failure.max_failures`` is spent before the hub is back. So every hub call keeps
trying for a **budget** of :func:`~flotilla.settings.hub_retry_budget_s` seconds (120 by default,
``FLOTILLA_HUB_RETRY_S``; 0 turns retries off), with exponential backoff capped at
:data:`BACKOFF_MAX_S`, and only where a second try cannot do a thing twice:

- a connection that was refused or timed out while connecting: the request never reached the
  server, so it is re-sent whatever it is (a commit, a merge, a branch creation too);
- a read timeout, a dropped connection or a 502/503/504 answer: only for reads (GET, HEAD,
  OPTIONS). A write (commit, merge, create or delete a branch, upload) may have been done by the
  server before its answer was lost; re-sending it could commit twice or report a branch it just
  created as a conflict, so it fails at once, as before, and the caller's own recovery applies
  (the one branch lifecycle, :meth:`~flotilla.hub.repo.Repo.transact`).

A write whose answer was lost is re-sent only where flotilla can make that safe
(:func:`resend_when_back`): writing a whole object to a path is idempotent (the same bytes land
again), and a commit, a branch creation or a branch deletion is first *checked* once the hub is back
(is the branch's head the commit just asked for, with its message and metadata; does the branch
exist at the source's commit; is it gone) and re-sent only if it did not land. A merge is not
re-sent: the sweep's and ``train``'s promotion already resume from a failed merge.

The embedded hub's admin key travels as HTTP Basic auth, so before any re-send its identity is
confirmed again (:mod:`flotilla.hub.identity`): while lakeFS is down its port is free, and a
listener that took it must not receive the key from a retry. Until the hub's own process listens
again nothing is sent; when the budget runs out the error says for how long the hub was down.

A hub this process has never heard from is not waited for: a command run before ``flotilla hub up``,
or pointed at a wrong endpoint, fails at once with the usual "does not answer" instead of after the
whole budget. Retries start once the endpoint has answered a call in this process
(:func:`mark_answered`, from :func:`~flotilla.hub._translate.translate`), i.e. for an outage.

The S3 gateway path (pyarrow's ``S3FileSystem``, shards and checkpoints) retries inside the AWS
SDK with :func:`s3_retry_strategy`: ``max_attempts`` chosen so that its backoff (25 ms doubling
per attempt) waits out the budget. That SDK re-sends S3 requests on any connection error or 5xx;
S3 GETs and PUTs of a whole object are idempotent, and a SigV4-signed request carries a signature,
never the secret, so a listener on the port during an outage learns no key from it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from urllib3.util.retry import Retry

from flotilla.errors import HubUnavailableError
from flotilla.settings import hub_retry_budget_s

if TYPE_CHECKING:
    import lakefs as sdk_types
    import pyarrow.fs as pafs

BACKOFF_FACTOR_S = 0.5
"""Waits between tries: 0, 1, 2, 4, 4, ... seconds (urllib3 doubles ``factor * 2**(n-1)`` up to the cap)."""
BACKOFF_MAX_S = 4.0
"""The longest wait between two tries, so a hub that is back is noticed within seconds."""
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods re-sent after the server may have received them (read timeouts, dropped connections, 5xx)."""
RETRIED_STATUSES = frozenset({502, 503, 504})
"""Answers of a hub (or a proxy in front of it) that is starting, overloaded or gone; 500 is a real error."""
S3_BACKOFF_SCALE_S = 0.025
"""The AWS SDK's default retry strategy waits ``2**n * 25 ms`` before retry ``n`` (n >= 1)."""


log = logging.getLogger(__name__)
T = TypeVar("T")

_answered: set[str] = set()


def mark_answered(endpoint: str) -> None:
    """Remember that ``endpoint`` answered a call in this process: from now on its outages are waited out."""
    _answered.add(endpoint)


def has_answered(endpoint: str) -> bool:
    return endpoint in _answered


class HubRetry(Retry):
    """urllib3's retry policy bounded by time, not by count, that can check the server before every re-send.

    urllib3 builds a fresh instance per try with :meth:`new`; the first failure of a request starts
    its clock, and ``before_resend(deadline)`` runs after each backoff (it may wait, up to the
    deadline, or raise).
    """

    budget_s: float = 0.0
    before_resend: Callable[[float], None] | None = None
    started: float | None = None
    endpoint: str = ""  # retries only once it has answered in this process (see the module docstring)

    def new(self, **kw: Any) -> HubRetry:
        nxt = super().new(**kw)
        nxt.budget_s, nxt.before_resend, nxt.endpoint = self.budget_s, self.before_resend, self.endpoint
        nxt.started = self.started if self.started is not None else time.monotonic()
        return nxt

    @property
    def deadline(self) -> float:
        return (self.started if self.started is not None else time.monotonic()) + self.budget_s

    def is_exhausted(self) -> bool:
        if self.started is not None and self.endpoint and not has_answered(self.endpoint):
            return True  # never heard from: not an outage to wait out, but a hub not started or a wrong address
        return super().is_exhausted() or (self.started is not None and time.monotonic() > self.deadline)

    def sleep(self, response: Any = None) -> None:
        super().sleep(response)
        if self.before_resend is not None:
            self.before_resend(self.deadline)


def sdk_retry(budget_s: float, before_resend: Callable[[float], None] | None = None, endpoint: str = "") -> Retry:
    """The lakeFS SDK's retry policy for a budget (see the module docstring for what it re-sends); with
    ``endpoint``, only once that endpoint has answered in this process."""
    if budget_s <= 0:
        return Retry(0, read=False, raise_on_status=False)
    retry = HubRetry(
        total=None,
        connect=None,  # connection refused or connect timeout: any method, until the deadline
        read=None,  # read timeout or dropped connection: IDEMPOTENT_METHODS only (urllib3's rule)
        status=None,
        other=0,  # TLS and other errors are not an outage
        allowed_methods=IDEMPOTENT_METHODS,
        status_forcelist=RETRIED_STATUSES,
        backoff_factor=BACKOFF_FACTOR_S,
        backoff_max=BACKOFF_MAX_S,
        raise_on_status=False,  # the last 5xx answer reaches the SDK, which raises its usual error
        respect_retry_after_header=False,
    )
    retry.budget_s, retry.before_resend, retry.endpoint = budget_s, before_resend, endpoint
    return retry


def install_sdk_retry(client: sdk_types.Client, retry: Retry) -> None:
    """Make every request of ``client`` use ``retry`` (the SDK's Configuration takes it only before the
    client exists, and ``lakefs.Client`` builds both at once; its pools are made on first request)."""
    pool_manager = client.sdk_client.auth_api.api_client.rest_client.pool_manager
    pool_manager.connection_pool_kw["retries"] = retry
    pool_manager.clear()


def s3_attempts(budget_s: float) -> int:
    """The fewest AWS SDK retries whose backoffs add up to ``budget_s`` (at least 1)."""
    n = 1
    while S3_BACKOFF_SCALE_S * (2**n - 2) < budget_s and n < 30:  # retry k waits 2**k * scale, k = 1..n-1
        n += 1
    return n


def s3_retry_strategy(budget_s: float | None = None) -> pafs.S3RetryStrategy:
    """pyarrow's S3 retry strategy for the budget (default: the configured one)."""
    import pyarrow.fs as pafs

    budget = hub_retry_budget_s() if budget_s is None else budget_s
    return pafs.AwsDefaultS3RetryStrategy(max_attempts=s3_attempts(budget) if budget > 0 else 0)


def resend_when_back(
    call: Callable[[], T],
    endpoint: str,
    action: str,
    *,
    landed: Callable[[], T | None] | None = None,
    budget_s: float | None = None,
) -> T:
    """Run a write ``call``; if the hub's answer was lost (it died mid-request), check and re-send it.

    Only for writes whose repetition is safe (an object written whole to a path) or can be checked
    first: ``landed`` runs once the hub answers again (it is a read, so it waits out the outage
    itself) and returns the write's result when the first try had in fact been done, else None, and
    the write is sent again. The whole thing stays within the retry budget; a hub this process never
    heard from, or a budget of 0, fails at once as before.
    """
    budget = hub_retry_budget_s() if budget_s is None else budget_s
    started = time.monotonic()
    while True:
        try:
            return call()
        except HubUnavailableError:
            if budget <= 0 or not has_answered(endpoint) or time.monotonic() - started > budget:
                raise
            log.info("the hub's answer to %s was lost (it stopped mid-request): sending it again once it is back", action)
            time.sleep(BACKOFF_FACTOR_S)
            if landed is not None:
                done = landed()
                if done is not None:
                    log.info("%s had been done before the hub stopped: not sent again", action)
                    return done
