"""Presigned reads (issue 23): training data straight from the object store, the gateway as the fallback.

A real lakeFS on a real S3 API server (moto's, on loopback: ``tests/s3store.py``), a dataset ingested
through flotilla, and flotilla's own loader. lakeFS's Prometheus counters say which path the bytes took:
``gateway_request_duration_seconds{operation="get_object"}`` counts the gateway's GETs (pyarrow reads a stream in
ranged GETs: several per shard), and moto's
access log counts the presigned GETs it answered. The failure cases point lakeFS's presigned URLs
elsewhere (``blockstore.s3.pre_signed_endpoint``): a port nobody listens on, and a server answering 403 as
S3 does to an expired URL (moto checks neither signature nor expiry, so neither can be made to fail there).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import pickle
import secrets
import subprocess
import sys
import threading
import uuid
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tests.integration.helpers import local_ray, tiny
from tests.s3store import MotoServer, lakefs_counter, moto_server

from flotilla.data.api import generate
from flotilla.data.loader import HubDataset
from flotilla.data.pinning import DataRef, resolve_data
from flotilla.data.validate import Thresholds
from flotilla.hub import Hub, LocalHub, presign
from flotilla.hub.server import free_port
from flotilla.settings import FLOTILLA_PRESIGN, Settings
from flotilla.training import train

pytestmark = pytest.mark.integration

N = 2500  # two shards (2048 rows each): manifest, labels and two shards are four objects read per fresh dataset
BUCKET = "flotilla-test"


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture(scope="module")
def s3_hub(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory, lakefs_binary: Path) -> Iterator[tuple[Hub, LocalHub]]:
    home = tmp_path_factory.mktemp("s3-home")
    settings = Settings(home=home, cache=Settings.from_env().cache, hub_port=free_port())
    server = LocalHub(settings.hub_dir, settings.hub_port, lakefs_binary, blockstore=moto.blockstore(BUCKET))
    server.up(timeout=90)
    try:
        yield Hub(credentials=server.credentials(), settings=settings), server
    finally:
        server.down()


@pytest.fixture(scope="module")
def s3_data(s3_hub: tuple[Hub, LocalHub], moto: MotoServer) -> DataRef:
    hub, server = s3_hub
    assert server.blockstore is not None
    hub.ensure_repo("presign", storage_namespace=server.blockstore.namespace("presign"))
    # a seed of its own: the node cache (keyed by the shards' SHA-256) must not already hold these shards
    generate(hub, "presign", "faces", N, seed=secrets.randbelow(2**32), thresholds=Thresholds(min_group_count=1))
    return resolve_data(hub, "presign", "main", "faces")


@pytest.fixture(autouse=True)
def _fresh_process_memory() -> Iterator[None]:
    presign.forget()  # each test learns about its hub afresh, as a new worker process would
    yield
    presign.forget()


def gateway_reads(endpoint: str) -> float:
    return lakefs_counter(endpoint, "gateway_request_duration_seconds_count", operation="get_object")


def read_everything(ds: HubDataset) -> dict[str, bytes]:
    """Every shard's bytes, as the loader reads them (the manifest and labels first), plus one epoch of batches."""
    shards = {s.path: ds._read(s.path) for s in ds.manifest.shards}
    for s in ds.manifest.shards:
        assert hashlib.sha256(shards[s.path]).hexdigest() == s.sha256
    assert sum(len(b["image"]) for b in ds.iter_batches("train", 256)) == ds.split_size("train") > 0
    return shards


def test_auto_reads_straight_from_the_object_store_the_same_bytes_the_gateway_gives(
    s3_data, s3_hub, moto, tmp_path, monkeypatch, caplog
):
    hub, _ = s3_hub
    monkeypatch.delenv(FLOTILLA_PRESIGN, raising=False)  # the default: auto
    gateway_before, direct_before = gateway_reads(hub.endpoint), moto.presigned_gets()
    ds = HubDataset(s3_data, hub.credentials, cache_dir=tmp_path / "cache")
    ds.manifest  # noqa: B018 -- its reads build the lakeFS SDK's client, which turns urllib3's logging down to WARNING
    caplog.set_level(logging.DEBUG, logger="urllib3")  # up again: urllib3 logs each request's URL at DEBUG
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback, no warning
        direct = read_everything(ds)
    objects = 2 + 2 * len(ds.manifest.shards)  # manifest + labels, each shard by _read and again into the cache
    assert presign.stats(hub.endpoint).direct == objects and presign.stats(hub.endpoint).fallbacks == 0
    assert moto.presigned_gets() - direct_before == objects  # the bucket served them, signed
    assert gateway_reads(hub.endpoint) == gateway_before  # and lakeFS's gateway read none of them
    logged = [r.getMessage() for r in caplog.records]
    assert any("GET /" + BUCKET in m for m in logged)  # urllib3 logged the direct GETs ...
    assert not [m for m in logged if "X-Amz-" in m]  # ... without their signed queries

    # the gateway's bytes for the same objects: identical (and the counter does count gateway reads)
    gateway = {path: ds._read_gateway(path) for path in direct}
    assert gateway == direct
    assert gateway_reads(hub.endpoint) >= gateway_before + len(direct)


def test_a_worker_process_reads_presigned_without_loading_the_lakefs_sdk(s3_data, s3_hub, tmp_path):
    """What a Ray worker gets: the pickled dataset. Its reads go to the bucket, and the lakeFS SDK (seconds to import)
    stays off the way to the first batch, as docs/training.md promises."""
    hub, _ = s3_hub
    pickled = tmp_path / "dataset.pkl"
    pickled.write_bytes(pickle.dumps(HubDataset(s3_data, hub.credentials, cache_dir=tmp_path / "cache")))
    pickled.chmod(0o600)  # it holds the hub's key, as Ray's object store would
    code = (
        "import pickle, sys; from flotilla.hub import presign\n"
        f"ds = pickle.loads(open({str(pickled)!r}, 'rb').read())\n"
        "ds.read_shard(ds.manifest.shards[0])\n"
        "print(presign.stats(ds.credentials.endpoint).direct, 'lakefs' in sys.modules, flush=True)\n"
        "import os; os._exit(0)\n"  # the reads are what is tested, not the interpreter's exit (pyarrow's S3 finaliser)
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.split() == ["3", "False"], out.stderr[-2000:]  # manifest, labels, shard: all direct; no SDK


def test_a_range_of_an_object_is_read_straight_from_the_store(s3_data, s3_hub):
    hub, _ = s3_hub
    ds = HubDataset(s3_data, hub.credentials)
    path = ds.manifest.shards[0].path
    whole = ds._read_gateway(path)
    reads = presign.PresignedReads(hub.credentials, mode="auto")
    part = reads.read(s3_data.repo, s3_data.commit, path, lambda: pytest.fail("fell back"), byte_range=(100, 1124))
    assert part == whole[100:1124]


def test_off_reads_through_the_gateway(s3_data, s3_hub, moto, tmp_path, monkeypatch):
    hub, _ = s3_hub
    monkeypatch.setenv(FLOTILLA_PRESIGN, "off")
    gateway_before, direct_before = gateway_reads(hub.endpoint), moto.presigned_gets()
    ds = HubDataset(s3_data, hub.credentials, cache_dir=tmp_path / "cache")
    read_everything(ds)
    assert moto.presigned_gets() == direct_before and presign.stats(hub.endpoint).direct == 0
    assert gateway_reads(hub.endpoint) >= gateway_before + 2 + 2 * len(ds.manifest.shards)


def test_the_local_blockstore_reads_through_the_gateway_without_a_warning(hub, tmp_path, monkeypatch):
    monkeypatch.delenv(FLOTILLA_PRESIGN, raising=False)
    name = f"t-{uuid.uuid4().hex[:10]}"
    generate(hub, name, "faces", 300, thresholds=Thresholds(min_group_count=1), create_repo=True)
    try:
        ref = resolve_data(hub, name, "main", "faces")
        gateway_before = gateway_reads(hub.endpoint)
        ds = HubDataset(ref, hub.credentials, cache_dir=tmp_path / "cache")
        with warnings.catch_warnings():
            warnings.simplefilter("error", presign.PresignedReadFailed)  # no fallback warning: it never tried
            read_everything(ds)
        assert not presign.PresignedReads(hub.credentials).supported()
        assert presign.stats(hub.endpoint).direct == presign.stats(hub.endpoint).fallbacks == 0
        assert gateway_reads(hub.endpoint) >= gateway_before + 2 + 2 * len(ds.manifest.shards)
    finally:
        hub.delete_repo(name)


class _Expired(BaseHTTPRequestHandler):
    """What S3 answers a presigned URL past its expiry: 403 AccessDenied."""

    def do_GET(self) -> None:
        body = b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
        self.send_response(403)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def refusing_endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Expired)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("failure", "told"), [("connection refused", "NewConnectionError"), ("expired", "HTTP 403")])
def test_a_failing_direct_read_falls_back_to_the_gateway_with_one_warning(
    failure, told, s3_data, s3_hub, moto, refusing_endpoint, tmp_path, monkeypatch, caplog
):
    hub, server = s3_hub
    monkeypatch.delenv(FLOTILLA_PRESIGN, raising=False)
    elsewhere = f"http://127.0.0.1:{free_port()}" if failure == "connection refused" else refusing_endpoint
    assert server.blockstore is not None
    moved = dataclasses.replace(server.blockstore, pre_signed_endpoint=elsewhere)  # same bucket and keys, URLs point elsewhere
    restarted = LocalHub(server.state_dir, server.port, server.binary, blockstore=moved)
    server.down()
    restarted.up(timeout=90)
    try:
        caplog.set_level(logging.DEBUG)  # every logger, urllib3's too: it logs each request's URL at DEBUG
        ds = HubDataset(s3_data, hub.credentials, cache_dir=tmp_path / "cache")
        with pytest.warns(presign.PresignedReadFailed) as caught:
            read_everything(ds)  # the sha256 of every shard checked: the gateway's bytes
        assert len([w for w in caught if issubclass(w.category, presign.PresignedReadFailed)]) == 1
        message = str(caught[0].message)
        assert told in message and elsewhere in message, message  # why, and where (host and path only)
        st = presign.stats(hub.endpoint)
        assert st.direct == 0 and st.fallbacks == presign.GIVE_UP_AFTER and st.given_up  # then no more tries
        # never a whole presigned URL in what this process logs or warns: no signature, no key id
        said = [message] + [r.getMessage() for r in caplog.records]
        assert not [s for s in said if "X-Amz-" in s or moved.access_key_id in s]
    finally:
        restarted.down()
        server.up(timeout=90)


def test_a_short_train_reads_its_data_presigned(s3_hub, moto, ray_keeper, monkeypatch):
    """A real run (two Ray Train workers, one epoch): the workers read the commit from the bucket, and its
    checkpoints and model go onto the run's branch through the gateway, into the same bucket.

    On a dataset of its own (a fresh seed: no node cache holds its shards) and a Ray of its own: the
    session's kept Ray has workers that earlier modules' reads already warmed, and they must not be
    handed this module's hub."""
    hub, _ = s3_hub
    monkeypatch.delenv(FLOTILLA_PRESIGN, raising=False)
    generate(hub, "presign", "train-faces", N, seed=secrets.randbelow(2**32), thresholds=Thresholds(min_group_count=1))
    data = resolve_data(hub, "presign", "main", "train-faces")
    ray_keeper.release()
    before = moto.presigned_gets()
    with local_ray(4), warnings.catch_warnings():
        warnings.simplefilter("error", presign.PresignedReadFailed)
        spec = tiny("psg", data={"repo": "presign", "dataset": "train-faces"}, epochs=1, tracking={"wandb": False})
        result = train(spec, hub=hub)
    shards = len(HubDataset(data, hub.credentials).manifest.shards)
    # the node's cache is shared by its workers: at least the manifest, the labels and every shard once each
    assert moto.presigned_gets() - before >= 2 + shards
    assert result.models and all(m.commit for m in result.models)
