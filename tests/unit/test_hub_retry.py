"""What hub calls re-send during an outage, against real sockets: everything the server never received,
reads after anything, writes never after the server may have done them; all within a time budget. Above
the HTTP layer, :func:`resend_when_back` re-sends a write whose answer was lost only when it is safe or
checked to have not landed (``tests/integration/test_hub_outage.py`` does it against lakeFS)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
import urllib3

from flotilla.errors import HubUnavailableError
from flotilla.hub.retry import BACKOFF_MAX_S, S3_BACKOFF_SCALE_S, mark_answered, resend_when_back, s3_attempts, sdk_retry


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Flaky(BaseHTTPRequestHandler):
    """Hangs up without answering (``mode='drop'``) or answers 503, ``failures`` times; then 200."""

    mode: ClassVar[str] = "drop"
    failures: ClassVar[int] = 2
    seen: ClassVar[list[str]] = []

    def _any(self) -> None:
        n = len(type(self).seen)
        type(self).seen.append(self.command)
        if self.headers.get("Content-Length"):
            self.rfile.read(int(self.headers["Content-Length"]))
        if n < type(self).failures and type(self).mode == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)  # received, then lost: what a killed server does
            return
        status = 503 if n < type(self).failures else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = do_DELETE = do_PUT = _any

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def flaky() -> Iterator[str]:
    Flaky.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def pool(budget: float, before=None) -> urllib3.PoolManager:
    return urllib3.PoolManager(retries=sdk_retry(budget, before))


def test_a_refused_connection_is_retried_for_any_method_until_the_budget_and_checked_before_each_resend():
    checks: list[float] = []
    start = time.monotonic()
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        pool(2.5, checks.append).request("POST", f"http://127.0.0.1:{closed_port()}/api/v1/repositories/r/branches")
    took = time.monotonic() - start
    assert 2.5 <= took < 2.5 + BACKOFF_MAX_S + 1, took  # the budget, not a count, ends it
    assert len(checks) >= 2 and all(d == pytest.approx(checks[0]) for d in checks)  # one deadline per request


def test_a_check_that_fails_before_a_resend_ends_the_request_and_nothing_is_sent():
    def hub_gone(deadline: float) -> None:
        raise HubUnavailableError("the local lakeFS hub is not running")

    with pytest.raises(HubUnavailableError):
        pool(30, hub_gone).request("GET", f"http://127.0.0.1:{closed_port()}/api/v1/healthcheck")


@pytest.mark.parametrize("mode", ["drop", "503"])
def test_reads_are_resent_after_a_lost_answer_or_a_503(flaky, mode):
    Flaky.mode = mode
    r = pool(10).request("GET", flaky + "/api/v1/repositories")
    assert r.status == 200 and Flaky.seen == ["GET"] * 3


def test_a_write_whose_answer_was_lost_is_never_sent_twice(flaky):
    Flaky.mode = "drop"
    with pytest.raises(urllib3.exceptions.ProtocolError):
        pool(10).request("POST", flaky + "/api/v1/repositories/r/branches/main/commits", body=b"{}")
    assert Flaky.seen == ["POST"]


def test_a_write_answered_503_is_not_resent_and_its_answer_reaches_the_caller(flaky):
    Flaky.mode = "503"
    assert pool(10).request("POST", flaky + "/api/v1/repositories/r/refs/a/merge/main").status == 503
    assert Flaky.seen == ["POST"]


def test_a_zero_budget_sends_once():
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        pool(0).request("GET", f"http://127.0.0.1:{closed_port()}/")


@pytest.mark.parametrize("budget", [0.5, 30, 120, 600])
def test_the_s3_attempts_are_the_fewest_whose_backoff_covers_the_budget(budget):
    def waited(retries: int) -> float:  # the AWS SDK waits 2**k * 25 ms before retry k >= 1
        return sum(2**k * S3_BACKOFF_SCALE_S for k in range(1, retries))

    n = s3_attempts(budget)
    assert waited(n) >= budget > waited(n - 1)


def _lost_then(result: str, losses: int = 1):
    """A write whose first ``losses`` answers are lost (the hub died after doing it), then answered."""
    calls = []

    def call() -> str:
        calls.append(1)
        if len(calls) <= losses:
            raise HubUnavailableError("the lakeFS hub at x does not answer")
        return result

    return call, calls


def test_a_lost_answer_is_checked_first_and_not_sent_again_when_the_write_landed():
    mark_answered("http://hub-a")
    call, calls = _lost_then("sent again")
    assert resend_when_back(call, "http://hub-a", "commit", landed=lambda: "landed", budget_s=10) == "landed"
    assert len(calls) == 1


def test_a_lost_answer_is_sent_again_when_the_check_finds_it_did_not_land():
    mark_answered("http://hub-a")
    call, calls = _lost_then("sent again")
    assert resend_when_back(call, "http://hub-a", "write", landed=lambda: None, budget_s=10) == "sent again"
    assert len(calls) == 2


def test_a_hub_never_heard_from_or_a_zero_budget_is_not_waited_for():
    call, calls = _lost_then("sent again")
    with pytest.raises(HubUnavailableError):
        resend_when_back(call, "http://never-answered", "write", budget_s=10)
    mark_answered("http://hub-a")
    call2, calls2 = _lost_then("sent again")
    with pytest.raises(HubUnavailableError):
        resend_when_back(call2, "http://hub-a", "write", budget_s=0)
    assert len(calls) == len(calls2) == 1
