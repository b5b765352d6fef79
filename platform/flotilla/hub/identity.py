"""Credentials go only to the hub flotilla started: the embedded hub's identity, checked before they are sent.

The embedded hub listens on a fixed loopback port (8770 by default) and its admin key travels as
HTTP Basic auth on every API call. When the hub is stopped, any local user can bind that port
first and collect the key from the next ``flotilla data show``. So before a client built from the
embedded hub's credentials sends anything, it confirms that the port is held by the lakeFS
process whose pid the hub's own pid file records: that process must be alive, be lakeFS, be ours
(another user's process is not visible to us) and be the one listening on the endpoint's port.
Any other answer is an error that says so, and nothing is sent.

The check reads ``/proc`` through psutil (about a millisecond) and is remembered for
:data:`RECHECK_S` per process, so a busy client does not pay it per request while a hub that died
and was replaced by a listener is noticed within seconds.

A hub being restarted (a crash, then ``flotilla hub up``) fails this check for a while: its pid
file names a dead process, or the new one is not listening yet. Where this process has already
confirmed the hub, the check waits for it (reading ``/proc`` only, sending nothing) for the hub
retry budget (:mod:`flotilla.hub.retry`), then says for how long the hub was down. Where it has
not (a hub that was never started: a forgotten ``hub up``, the common case), it fails at once, as a
hub that is simply not there should; ``LocalHub.down`` in this process forgets the hub too, so a
hub stopped on purpose fails fast as well. Credentials of a remote hub
(environment, lakectl config, arguments) carry no pid file and are not checked here: there TLS
and the server's certificate are what prove the server's identity.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from flotilla.errors import HubUnavailableError
from flotilla.hostio import service_process
from flotilla.settings import FLOTILLA_HUB_RETRY_S, hub_retry_budget_s

PID_FILE = "lakefs.pid"
"""The embedded hub's pid file, in its state folder (written by :class:`~flotilla.hub.server.LocalHub`)."""

RECHECK_S = 2.0
"""How long a confirmed identity is trusted in this process before it is checked again."""

POLL_S = 0.5
"""How often a hub seen alive before is looked for again while it is down."""

_confirmed: dict[tuple[str, str], tuple[int, float]] = {}
_seen: set[tuple[str, str]] = set()  # hubs confirmed at least once in this process: worth waiting for
_lock = threading.Lock()


def confirm_local_hub(pidfile: str | Path, endpoint: str, *, fresh: bool = False, deadline: float | None = None) -> int:
    """The pid of the embedded hub serving ``endpoint``; raises before anything is sent when it is not ours.

    ``fresh`` skips the remembered answer (a retry after a failure: something changed); a hub seen
    alive before in this process is waited for until ``deadline`` (``time.monotonic()``; default:
    now plus the retry budget).
    """
    key = (str(pidfile), endpoint)
    now = time.monotonic()
    with _lock:
        known = _confirmed.get(key)
        if not fresh and known is not None and now - known[1] < RECHECK_S:
            return known[0]
        seen = key in _seen
    try:
        pid = _check(Path(pidfile), endpoint)
    except HubUnavailableError as exc:
        if not seen:
            raise
        pid = _wait(Path(pidfile), endpoint, deadline if deadline is not None else now + hub_retry_budget_s(), exc)
    with _lock:
        _confirmed[key] = (pid, time.monotonic())
        _seen.add(key)
    return pid


def _wait(pidfile: Path, endpoint: str, deadline: float, first: HubUnavailableError) -> int:
    """Look for the hub every :data:`POLL_S` until ``deadline``; nothing is sent meanwhile."""
    since = time.monotonic()
    last = first
    while time.monotonic() < deadline:
        time.sleep(max(0.0, min(POLL_S, deadline - time.monotonic())))
        try:
            return _check(pidfile, endpoint)
        except HubUnavailableError as exc:
            last = exc
    raise HubUnavailableError(
        f"the local lakeFS hub was down for {time.monotonic() - since:.0f} s, longer than flotilla waits for it "
        f"({FLOTILLA_HUB_RETRY_S}={hub_retry_budget_s():.0f} s): {last.message}",
        hint=last.hint,
    )


def vouch(pidfile: str | Path, endpoint: str) -> None:
    """Treat the hub as seen alive in this process: its outages are waited out from the first call.

    For a process that another one, which did confirm the hub, started to work on it (a sweep's
    trial): a restart that falls on its first call is the outage of a hub that was running, not a
    hub never started. The identity itself is still checked before anything is sent.
    """
    with _lock:
        _seen.add((str(pidfile), endpoint))


def forget() -> None:
    """Drop every remembered identity (a hub was stopped or restarted in this process)."""
    with _lock:
        _confirmed.clear()
        _seen.clear()


def _check(pidfile: Path, endpoint: str) -> int:
    port = urlsplit(endpoint).port
    where = f"{urlsplit(endpoint).hostname}:{port}"
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        pid = None
    proc = service_process(pid, "lakefs") if pid is not None else None
    if pid is None or proc is None:
        raise HubUnavailableError(
            f"the local lakeFS hub is not running (no live lakeFS process in {pidfile}); "
            f"nothing was sent to {where}, whatever may be listening there",
            hint="start it with 'flotilla hub up' (see 'flotilla hub status' and 'flotilla hub logs')",
        )
    if not _listens_on(proc, port):
        raise HubUnavailableError(
            f"{where} is not served by the local lakeFS hub (process {pid}, from {pidfile}, does not listen there); "
            "the hub's credentials were not sent to it",
            hint="another program holds the hub's port: stop it, or give the hub another port (FLOTILLA_HUB_PORT) "
            "and run 'flotilla hub up'; 'flotilla hub status' shows the hub's state",
        )
    return pid


def _listens_on(proc: psutil.Process, port: int | None) -> bool:
    try:
        conns = proc.net_connections(kind="tcp")
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in conns)
