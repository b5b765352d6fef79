"""What a Ray cluster reports: its status record, and the dashboard's JSON endpoints that say it.

Used by :mod:`flotilla.cluster.local` for flotilla's own cluster and by ``status(address=...)`` and the
job client for any other, so it depends on neither.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ClusterStatus:
    """What ``flotilla cluster status`` reports."""

    running: bool
    healthy: bool
    address: str  # the Jobs API / dashboard URL
    gcs_address: str = ""
    nodes: int = 0
    pids: list[int] = field(default_factory=list)
    local: bool = True
    note: str = ""
    client_address: str = ""  # ray://127.0.0.1:<port>, for a driver outside the cluster (flotilla sweep --address)
    refused: bool = False  # something answered but refused our token: running, yet not ours to use

    @property
    def exit_code(self) -> int:
        """``flotilla cluster status``'s exit: 0 answering, 3 not there, 4 running but silent, 5 token refused."""
        if self.refused:
            return 5
        if not self.running:
            return 3
        return 0 if self.healthy else 4

    def describe(self) -> str:
        where = "local Ray cluster" if self.local else "Ray cluster"
        if self.running and self.healthy:
            pids = f", pids {' '.join(map(str, self.pids))}" if self.pids else ""
            client = f", Ray client {self.client_address}" if self.client_address else ""
            return (
                f"{where} running: {self.nodes} node(s), dashboard {self.address}, GCS {self.gcs_address or '?'}{client}"
                f"{pids}. {self.note}"
            ).strip()
        if self.refused:
            return f"{where} at {self.address} answers but refused the auth token. {self.note}".strip()
        if self.running:
            return f"{where} processes are running but {self.address} does not answer. {self.note}".strip()
        return f"{where} is not running ({self.address}). {self.note}".strip()


def http_get(url: str, headers: dict[str, str], timeout: float = 2.0) -> Any | None:
    """GET a dashboard JSON endpoint; None when it does not answer (or refuses us)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")
    except (urllib.error.URLError, OSError, ValueError):
        return None


def alive_nodes(address: str, headers: dict[str, str]) -> int | None:
    data = http_get(f"{address}/api/v0/nodes?limit=1000&detail=false", headers)
    if not isinstance(data, dict):
        return None
    try:
        return sum(1 for n in data["data"]["result"]["result"] if n.get("state") == "ALIVE")
    except (TypeError, KeyError):
        return None


def normalise_address(address: str) -> str:
    address = address.strip().rstrip("/")
    return address if "://" in address else f"http://{address}"
