"""Obtaining the lakeFS binary: a download that breaks off is 'no download here', never a traceback.

A real HTTP server on 127.0.0.1 stands in for the release site (only its URL is changed).
"""

from __future__ import annotations

import http.server
import io
import tarfile
import threading
import time

import pytest

from flotilla.errors import BinaryNotFoundError
from flotilla.hub import binary
from flotilla.settings import Settings


def _archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"#!/bin/sh\n" + bytes(range(256)) * 400  # incompressible enough to span several gzip blocks
        info = tarfile.TarInfo("lakeFS/lakefs")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


BODIES = {
    # the connection drops after 100 bytes of a promised megabyte: http.client.IncompleteRead
    "broken-off": (b"\x1f\x8b" + b"x" * 98, 1 << 20),
    # the whole (short) body arrives, but it is only the first half of a gzip'd tar
    "truncated-archive": (_archive()[: len(_archive()) // 2], None),
    "not-gzip": (b"<html>rate limited</html>", None),
    # 100 bytes of a megabyte, then silence with the connection open: the read times out
    "stalls": (b"\x1f\x8b" + b"x" * 98, 1 << 20),
    "complete": (_archive(), None),
}


@pytest.fixture
def release_site(monkeypatch):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body, length = BODIES[self.path.strip("/").split("/")[0]]
            self.send_response(200)
            self.send_header("Content-Length", str(length or len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            if self.path.startswith("/stalls/"):
                time.sleep(3)  # well past the test's read timeout, with the socket still open
            self.close_connection = True

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield lambda case: monkeypatch.setattr(
        binary, "RELEASE_URL", f"http://127.0.0.1:{server.server_port}/{case}/{{v}}_{{os}}_{{arch}}"
    )
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("case", sorted(set(BODIES) - {"complete"}))
def test_a_broken_download_falls_through_to_the_build_and_then_a_clear_error(case, release_site, tmp_path, monkeypatch):
    release_site(case)
    monkeypatch.setattr(binary, "DOWNLOAD_TIMEOUT_S", 0.5)
    monkeypatch.setenv("PATH", str(tmp_path))  # no lakefs and no go: the build is unavailable too
    monkeypatch.delenv("FLOTILLA_LAKEFS_BIN", raising=False)
    settings = Settings(home=tmp_path / "h", cache=tmp_path / "c")
    with pytest.raises(BinaryNotFoundError) as info:
        binary.ensure_binary(settings)
    msg = str(info.value)
    assert "download:" in msg and "build from the Go module: no 'go' on PATH" in msg, msg
    assert ("broke off after 100 of" in msg) == (case == "broken-off")
    assert ("broke off (TimeoutError" in msg) == (case == "stalls"), msg
    assert not binary.cached_binary(settings).exists()  # nothing half-downloaded was installed
    assert list(binary.cached_binary(settings).parent.iterdir()) == [binary.cached_binary(settings).parent / ".lock"]


def test_archive_fixture_is_a_real_gzip_tar():
    with tarfile.open(fileobj=io.BytesIO(_archive())) as tar:  # sanity: the truncated case is truncated, not bogus
        assert tar.getnames() == ["lakeFS/lakefs"]


def test_a_complete_download_is_installed_executable_and_reused(release_site, tmp_path, monkeypatch):
    release_site("complete")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("FLOTILLA_LAKEFS_BIN", raising=False)
    settings = Settings(home=tmp_path / "h", cache=tmp_path / "c")
    got = binary.ensure_binary(settings)
    assert got == binary.cached_binary(settings) and got.stat().st_mode & 0o777 == 0o755
    with tarfile.open(fileobj=io.BytesIO(_archive())) as tar:
        assert got.read_bytes() == tar.extractfile("lakeFS/lakefs").read()
    record = binary.build_record(settings)  # lakeFS's release binaries embed the web UI
    assert record is not None and record.ui and record.how == "release archive"
    release_site("not-gzip")  # a second call must not download again: the cache answers
    assert binary.ensure_binary(settings) == got and got.read_bytes().startswith(b"#!/bin/sh\n")
