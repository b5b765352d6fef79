"""A job is scanned for secrets by value, not only by the names of its env vars (issue 22, item 7)."""

from __future__ import annotations

import pytest

from flotilla.errors import SpecError
from flotilla.hub.client import Hub
from flotilla.hub.credentials import HubCredentials
from flotilla.jobs.secretscan import find_secrets, refuse_secrets
from flotilla.jobs.submission import submit
from flotilla.settings import Settings

SECRET = "s3cr3t-Value-0123456789abcdefXYZ"


def test_a_known_secret_under_an_innocent_name_is_found_and_never_repeated():
    payload = {"runtime_env": {"env_vars": {"HUBCFG": f"x{SECRET}y"}}, "description": "fine"}
    assert find_secrets(payload, {"the hub's secret key": SECRET}) == ["runtime_env.env_vars.HUBCFG: the hub's secret key"]
    with pytest.raises(SpecError) as info:
        refuse_secrets(payload, {"the hub's secret key": SECRET})
    assert SECRET not in str(info.value) and "HUBCFG" in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "AKIAABCDEFGHIJKLMNOP",
        "ghp_" + "a" * 36,
        "xoxb-1234567890-abcdef",
        "hf_" + "B" * 34,
        "sk-" + "c" * 40,
        "-----BEGIN OPENSSH PRIVATE KEY-----",
    ],
)
def test_common_token_shapes_are_found_anywhere_even_in_a_list(text):
    assert find_secrets({"runtime_env": {"pip": ["ok", f"pkg --token {text}"]}}, {}) != []


def test_ordinary_specs_pass_and_short_known_values_are_not_searched():
    ordinary = {"name": "train faces", "family": {"data": {"ref": "a" * 64}, "optim": {"lr": 0.01}}, "note": "key: secret"}
    assert find_secrets(ordinary, {"short": "faces", "empty": ""}) == []


def test_submit_check_refuses_the_hubs_secret_in_an_env_var_before_anything_is_shown(tmp_path):
    hub = Hub(credentials=HubCredentials("http://127.0.0.1:1", "AKIAEXAMPLEKEYID0000", SECRET), settings=Settings.from_env())
    spec = {
        "kind": "ingest",
        "name": "leaky",
        "synthetic": {"n": 5},
        "runtime_env": {"env_vars": {"HUBCFG": SECRET}},
    }
    with pytest.raises(SpecError, match="would show secrets on the Ray dashboard") as info:
        submit(spec, hub=hub, dry_run=True)
    assert SECRET not in str(info.value) and "env_vars.HUBCFG" in str(info.value)
