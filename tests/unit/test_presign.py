"""Presigned reads' pure logic: the setting, what may be logged of a URL, the S3 blockstore's config (issue 23).

The reads themselves run against a real lakeFS on a real S3 API server: tests/integration/test_presigned_reads.py.
"""

from __future__ import annotations

import logging
import stat

import pytest
import yaml

from flotilla.errors import ConfigError
from flotilla.hub.blockstore import S3Blockstore
from flotilla.hub.presign import _NoSignedQueries, redact
from flotilla.hub.server import LocalHub
from flotilla.settings import FLOTILLA_PRESIGN, presign_mode

URL = (
    "http://127.0.0.1:9000/bucket/repo/data/abc?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAEXAMPLE%2F20261207%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Expires=900&X-Amz-Signature=0123abcd"
)


@pytest.mark.parametrize(("value", "mode"), [(None, "auto"), ("", "auto"), ("auto", "auto"), ("OFF", "off"), (" off ", "off")])
def test_the_setting_defaults_to_auto(monkeypatch, value, mode):
    if value is None:
        monkeypatch.delenv(FLOTILLA_PRESIGN, raising=False)
    else:
        monkeypatch.setenv(FLOTILLA_PRESIGN, value)
    assert presign_mode() == mode


def test_a_bad_setting_is_named_with_its_fix(monkeypatch):
    monkeypatch.setenv(FLOTILLA_PRESIGN, "always")
    with pytest.raises(ConfigError, match="FLOTILLA_PRESIGN='always' is not one of auto, off") as info:
        presign_mode()
    assert "=off" in (info.value.hint or "")


def test_a_url_is_logged_as_host_and_path_only():
    assert redact(URL) == "http://127.0.0.1:9000/bucket/repo/data/abc"


@pytest.mark.parametrize(
    "url",
    [
        URL,
        "https://storage.googleapis.com/b/o?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Signature=abcdef",
        "https://acct.blob.core.windows.net/c/o?sv=2021-08-06&se=2026-12-07&sr=b&sp=r&sig=abc%2Bdef",
    ],
)
def test_urllib3s_log_lines_lose_their_signed_queries(url):
    # the form of urllib3.connectionpool's request line: scheme://host:port "GET <path?query> HTTP/1.1" status length
    path = url.split("/", 3)[3]
    record = logging.LogRecord(
        "urllib3.connectionpool", logging.DEBUG, __file__, 1, '%s://%s:%s "%s %s %s" %s %s',
        ("http", "127.0.0.1", 9000, "GET", "/" + path, "HTTP/1.1", 200, 10), None,
    )  # fmt: skip
    assert _NoSignedQueries().filter(record)
    text = record.getMessage()
    assert "Signature" not in text and "sig=" not in text and "?<signed query left out>" in text
    assert text.startswith('http://127.0.0.1:9000 "GET /') and text.endswith(' HTTP/1.1" 200 10')


def test_other_log_lines_are_left_alone():
    record = logging.LogRecord("urllib3.connectionpool", logging.DEBUG, __file__, 1, "GET %s", ("/api/v1/x?amount=1",), None)
    assert _NoSignedQueries().filter(record) and record.args == ("/api/v1/x?amount=1",)


def test_the_s3_blockstore_is_written_into_the_hubs_0600_config_and_never_shown(tmp_path):
    store = S3Blockstore("http://127.0.0.1:9000", "bkt", "AKIAEXAMPLEKEY", "s3cr3t-value", pre_signed_endpoint="http://x:1")
    assert "s3cr3t" not in repr(store) and "AKIAEXAMPLEKEY" not in repr(store)
    assert store.namespace("faces") == "s3://bkt/faces"
    hub = LocalHub(tmp_path / "hub", 8770, blockstore=store)
    hub.state_dir.mkdir()
    hub._write_config()
    config = yaml.safe_load(hub.config_path.read_text())
    assert config["blockstore"] == {
        "type": "s3",
        "s3": {
            "endpoint": "http://127.0.0.1:9000",
            "force_path_style": True,
            "region": "us-east-1",
            "credentials": {"access_key_id": "AKIAEXAMPLEKEY", "secret_access_key": "s3cr3t-value"},
            "pre_signed_endpoint": "http://x:1",
        },
    }
    assert config["listen_address"].startswith("127.0.0.1:")
    assert stat.S_IMODE(hub.config_path.stat().st_mode) == 0o600


def test_without_one_the_hub_keeps_its_local_blockstore(tmp_path):
    hub = LocalHub(tmp_path / "hub", 8770)
    hub.state_dir.mkdir()
    hub._write_config()
    assert yaml.safe_load(hub.config_path.read_text())["blockstore"]["type"] == "local"
