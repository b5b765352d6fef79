import json

import pytest

from flotilla.errors import AuthError, ConfigError
from flotilla.hub.credentials import HubCredentials, resolve_credentials
from flotilla.settings import Settings

SECRET = "s3cr3t-" + "x" * 33


@pytest.fixture
def settings(tmp_path, monkeypatch):
    for k in ("LAKECTL_SERVER_ENDPOINT_URL", "LAKECTL_CREDENTIALS_ACCESS_KEY_ID", "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("LAKECTL_CONFIG_FILE", str(tmp_path / "lakectl.yaml"))
    return Settings(home=tmp_path / "home", cache=tmp_path / "cache", hub_port=18999)


def test_secret_never_in_repr_or_str():
    c = HubCredentials("http://h:1/api/v1/", "AKIAEXAMPLE", SECRET)
    assert SECRET not in repr(c) and SECRET not in str(c)
    assert c.endpoint == "http://h:1"


def test_arguments_win(settings, monkeypatch):
    monkeypatch.setenv("LAKECTL_SERVER_ENDPOINT_URL", "http://env:1")
    monkeypatch.setenv("LAKECTL_CREDENTIALS_ACCESS_KEY_ID", "AKENV")
    monkeypatch.setenv("LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY", SECRET)
    c = resolve_credentials(settings, "http://arg:2", "AKARG", SECRET)
    assert (c.endpoint, c.access_key_id, c.source) == ("http://arg:2", "AKARG", "arguments")
    assert resolve_credentials(settings).source == "environment"


def test_partial_arguments_are_an_error_naming_what_is_missing(settings):
    with pytest.raises(ConfigError, match="secret_access_key"):
        resolve_credentials(settings, "http://arg:2", "AKARG")


def test_local_hub_then_lakectl_file(settings, tmp_path):
    (tmp_path / "lakectl.yaml").write_text(
        f"credentials:\n  access_key_id: AKFILE\n  secret_access_key: {SECRET}\nserver:\n  endpoint_url: http://file:3/api/v1\n"
    )
    c = resolve_credentials(settings)
    assert (c.endpoint, c.access_key_id) == ("http://file:3", "AKFILE")
    settings.hub_dir.mkdir(parents=True)
    (settings.hub_dir / "credentials.json").write_text(json.dumps({"access_key_id": "AKLOCAL", "secret_access_key": SECRET}))
    c = resolve_credentials(settings)
    assert (c.endpoint, c.access_key_id, c.source) == ("http://127.0.0.1:18999", "AKLOCAL", "local hub")


def test_nothing_found_says_how_to_fix(settings):
    with pytest.raises(AuthError) as info:
        resolve_credentials(settings)
    assert "flotilla hub up" in str(info.value) and "LAKECTL_SERVER_ENDPOINT_URL" in str(info.value)


def test_half_a_remote_hub_in_the_environment_is_an_error_not_a_silent_fall_back(settings, monkeypatch):
    settings.hub_dir.mkdir(parents=True)  # a local hub exists: the silent fall-back would go there
    (settings.hub_dir / "credentials.json").write_text(json.dumps({"access_key_id": "AKLOCAL", "secret_access_key": SECRET}))
    monkeypatch.setenv("LAKECTL_SERVER_ENDPOINT_URL", "http://remote:8000")
    monkeypatch.setenv("LAKECTL_CREDENTIALS_ACCESS_KEY_ID", "AKREMOTE")
    with pytest.raises(ConfigError) as info:
        resolve_credentials(settings)
    assert "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY not" in info.value.message and "AKREMOTE" not in info.value.message


def test_a_damaged_local_key_file_is_named_and_never_echoed(settings):
    settings.hub_dir.mkdir(parents=True)
    (settings.hub_dir / "credentials.json").write_text('{"access_key_id": "AKLOCAL", "secret_access_key": "' + SECRET)
    with pytest.raises(ConfigError) as info:
        resolve_credentials(settings)
    assert "credentials.json" in info.value.message and "backup" in info.value.hint
    assert SECRET not in info.value.message + info.value.hint
