"""Every environment read lives in flotilla.settings; what is read per call follows the environment as it changes."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from flotilla import settings
from flotilla.errors import ConfigError

PACKAGE = Path(settings.__file__).parent
# reads outside settings.py that are known and why (file relative to the package -> how many)
ELSEWHERE = {
    # undoing its own writes: an auth variable the user has changed since is theirs, and stays
    "cluster/connect.py": 1,
    # owned by the sweeps' change; moves to settings.tune_handles_sigint() once both are merged
}
WRITES = {"setdefault", "update", "pop"}


def _environment_reads(tree: ast.AST) -> list[int]:
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os":
            if node.attr == "getenv":
                lines.append(node.lineno)
            elif node.attr == "environ":
                up = parents.get(node)
                written = (isinstance(up, ast.Attribute) and up.attr in WRITES) or (
                    isinstance(up, ast.Subscript) and isinstance(up.ctx, (ast.Store, ast.Del))
                )
                if not written:
                    lines.append(node.lineno)
    return lines


def test_environment_reads_live_in_settings():
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel != "settings.py" and (lines := _environment_reads(ast.parse(path.read_text(), rel))):
            found[rel] = lines
    unexpected = {rel: lines for rel, lines in found.items() if len(lines) > ELSEWHERE.get(rel, 0)}
    assert not unexpected, f"read the environment through flotilla.settings instead: {unexpected}"


def test_the_cluster_ports_are_read_when_asked(monkeypatch):
    monkeypatch.delenv(settings.FLOTILLA_RAY_PORT, raising=False)
    assert settings.local_ray_port() == settings.DEFAULT_RAY_PORT
    monkeypatch.setenv(settings.FLOTILLA_RAY_PORT, "16400")
    assert settings.local_ray_port() == 16400
    monkeypatch.setenv(settings.FLOTILLA_DASHBOARD_PORT, "eighty")
    with pytest.raises(ConfigError, match="FLOTILLA_DASHBOARD_PORT='eighty' is not an integer"):
        settings.local_dashboard_port()


def test_a_jobs_code_version_makes_the_round_trip(monkeypatch):
    for dirty in (True, False, None):
        for name, value in settings.code_vars("abc123", dirty).items():
            monkeypatch.setenv(name, value)
        assert settings.shipped_code() == settings.ShippedCode("abc123", dirty)
    for name, value in settings.code_vars("abc123", True, ".flotilla-job/s.diff", "f00d").items():
        monkeypatch.setenv(name, value)
    assert settings.shipped_code() == settings.ShippedCode("abc123", True, ".flotilla-job/s.diff", "f00d")
    monkeypatch.delenv(settings.FLOTILLA_CODE_SHA)
    assert settings.shipped_code() is None


def test_a_child_inherits_the_environment_less_what_is_dropped(monkeypatch):
    monkeypatch.setenv("LAKEFS_DATABASE_TYPE", "postgres")
    monkeypatch.setenv(settings.RAY_ADDRESS, "auto")
    env = settings.child_env(drop=(settings.RAY_ADDRESS,), drop_prefix=settings.LAKEFS_PREFIX)
    assert settings.RAY_ADDRESS not in env and "LAKEFS_DATABASE_TYPE" not in env and "PATH" in env


@pytest.mark.parametrize(
    ("value", "protect"), [("1", True), ("true", True), (" Yes ", True), ("0", False), ("", False), ("no", False)]
)
def test_new_repositories_are_protected_only_when_asked(monkeypatch, value, protect):
    monkeypatch.setenv(settings.FLOTILLA_PROTECT_MAIN, value)
    assert settings.protect_new_repos() is protect
    monkeypatch.delenv(settings.FLOTILLA_PROTECT_MAIN)
    assert settings.protect_new_repos() is False


def test_environment_sets_for_a_while_and_puts_back_what_was_there(monkeypatch):
    monkeypatch.setenv("FLOTILLA_T_SET", "before")
    monkeypatch.delenv("FLOTILLA_T_UNSET", raising=False)
    with settings.environment({"FLOTILLA_T_SET": "during", "FLOTILLA_T_UNSET": "during"}):
        assert os.environ["FLOTILLA_T_SET"] == os.environ["FLOTILLA_T_UNSET"] == "during"
    assert os.environ["FLOTILLA_T_SET"] == "before" and "FLOTILLA_T_UNSET" not in os.environ
    with pytest.raises(RuntimeError), settings.environment({"FLOTILLA_T_UNSET": "during"}):
        raise RuntimeError("a failed ray.init")
    assert "FLOTILLA_T_UNSET" not in os.environ
