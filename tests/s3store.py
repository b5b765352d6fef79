"""A real S3 API server on loopback for presigned-read tests and ``bench/presigned_reads.py``: moto's server.

moto (the ``moto[server]`` dev dependency) is pure Python and needs no network: it serves the S3 REST API
lakeFS's S3 blockstore speaks (buckets, PUT/GET/HEAD, multipart, ranges) and presigned GETs. What it
does not do, checked on moto 5.2: verify a presigned URL's signature or expiry (it serves a tampered or
expired one), so the tests make direct reads fail by where the URL points, not by its signature.

A plain module, not test code (like ``tests/chaos.py``): the tests and the benchmark import it.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flotilla.hub.blockstore import S3Blockstore
from flotilla.hub.server import free_port


@dataclass(frozen=True)
class MotoServer:
    endpoint: str
    log: Path
    pid: int

    def blockstore(self, bucket: str, **over: str) -> S3Blockstore:
        """lakeFS settings for ``bucket`` on this server (any key pair: moto's server accepts every one)."""
        key_id = "AKIAMOTO" + secrets.token_hex(6).upper()
        return S3Blockstore(self.endpoint, bucket, key_id, secrets.token_urlsafe(30), **over)

    def create_bucket(self, bucket: str) -> None:
        req = urllib.request.Request(f"{self.endpoint}/{bucket}", method="PUT")
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200, resp.status

    def presigned_gets(self) -> int:
        """GETs with a query-string signature this server answered so far (its access log, one line each)."""
        lines = self.log.read_text(errors="replace").splitlines()
        return sum(1 for ln in lines if '"GET /' in ln and "X-Amz-Signature=" in ln)


def lakefs_counter(endpoint: str, name: str, **labels: str) -> float:
    """The sum of lakeFS's Prometheus series ``name`` (``/metrics``) over those whose labels include ``labels``."""
    with urllib.request.urlopen(f"{endpoint}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line[len(name) : len(name) + 1] not in ("{", " "):
            continue
        series, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total


@contextmanager
def moto_server(workdir: Path) -> Iterator[MotoServer]:
    """moto's S3 server on a free 127.0.0.1 port, its access log in ``workdir``; stopped on exit."""
    port = free_port()
    log = workdir / "moto.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{endpoint}/", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start: {log.read_text(errors='replace')[-2000:]}") from None
                time.sleep(0.2)
        yield MotoServer(endpoint, log, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
