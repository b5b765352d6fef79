"""A model's code version on a real git checkout (a temporary repository, the real git binary): the sha,
the dirty flag and, for a dirty tree, the diff that restores it, also through a submitted job's staged copy."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from flotilla.jobs.specs import parse_job_spec
from flotilla.jobs.submission import PINNED_DIR, stage_job
from flotilla.settings import FLOTILLA_CODE_SHA, Settings, code_vars
from flotilla.training.artifacts import CODE_DIFF, code_version
from flotilla.version import __version__


def git(root: Path, *args: str) -> str:
    cmd = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    return subprocess.run([*cmd, *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A project checkout with one commit; no job's code version in the environment."""
    monkeypatch.delenv(FLOTILLA_CODE_SHA, raising=False)
    root = tmp_path / "proj"
    (root / "platform/flotilla").mkdir(parents=True)
    (root / "platform/flotilla/__init__.py").write_text("VERSION = 1\n")
    (root / "logo.bin").write_bytes(bytes(range(256)))
    git(root.parent, "init", "-q", str(root))
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "first")
    return root


def test_a_clean_checkout_has_a_sha_and_no_diff(checkout):
    code = code_version(checkout)
    assert code.git_sha == git(checkout, "rev-parse", "HEAD") and code.dirty is False
    assert code.diff is None and code.diff_sha256 is None
    assert code.card_block(diff_stored=False) == {
        "flotilla_version": __version__,
        "git_sha": code.git_sha,
        "dirty": False,
        "diff_sha256": None,
        "diff": None,
    }


def test_a_dirty_checkout_carries_the_diff_that_restores_it(checkout, tmp_path):
    (checkout / "platform/flotilla/__init__.py").write_text("VERSION = 2\n")
    (checkout / "logo.bin").write_bytes(bytes(reversed(range(256))))
    (checkout / "scratch.txt").write_text("untracked, never in the diff")
    code = code_version(checkout)
    assert code.dirty is True and code.diff is not None
    assert code.diff_sha256 == hashlib.sha256(code.diff).hexdigest()
    assert b"untracked" not in code.diff
    assert code.card_block(diff_stored=True)["diff"] == CODE_DIFF
    assert code.card_block(diff_stored=True)["diff_sha256"] == code.diff_sha256
    # the diff applied on a fresh clone of the card's sha gives back the tree that trained
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(checkout), str(clone))
    git(clone, "checkout", "-q", code.git_sha)
    (tmp_path / "code.diff").write_bytes(code.diff)
    git(clone, "apply", str(tmp_path / "code.diff"))
    assert (clone / "platform/flotilla/__init__.py").read_text() == "VERSION = 2\n"
    assert (clone / "logo.bin").read_bytes() == bytes(reversed(range(256)))


def test_a_diff_holding_the_hubs_secret_is_not_stored(checkout):
    (checkout / "platform/flotilla/__init__.py").write_text("KEY = 'sEcReT-123'\n")
    code = code_version(checkout)
    assert code.storable_diff("sEcReT-123") is None and code.diff_sha256  # the hash stays on the card
    assert code.storable_diff("another-key") == code.diff


def test_only_a_checkout_whose_top_level_is_the_root_counts(checkout, tmp_path):
    """A flotilla installed in a virtualenv inside someone's project must not report that project."""
    inner = checkout / "venv/lib"
    inner.mkdir(parents=True)
    (checkout / "platform/flotilla/__init__.py").write_text("VERSION = 3\n")
    assert code_version(inner).git_sha == "unknown" and code_version(inner).diff is None
    outside = tmp_path / "not-git"
    outside.mkdir()
    assert code_version(outside).git_sha == "unknown" and code_version(outside).dirty is None


def test_a_submitted_job_gets_the_diff_through_its_staged_copy(checkout, tmp_path, monkeypatch):
    (checkout / "platform/flotilla/__init__.py").write_text("VERSION = 4\n")
    here = code_version(checkout)
    job = parse_job_spec({"kind": "ingest", "name": "x", "synthetic": {"n": 5}})
    stage = stage_job(checkout, Settings(home=tmp_path / "home", cache=tmp_path / "cache"), "sid-3", job, code_diff=here.diff)
    shipped = stage / "src"
    assert not (shipped / ".git").exists()
    for name, value in code_vars(here.git_sha, here.dirty, f"{PINNED_DIR}/sid-3.diff", here.diff_sha256).items():
        monkeypatch.setenv(name, value)
    there = code_version(shipped)
    assert there == here and there.diff == here.diff
    (shipped / PINNED_DIR / "sid-3.diff").write_bytes(b"not the diff that was hashed")
    tampered = code_version(shipped)
    assert tampered.diff is None and tampered.diff_sha256 == here.diff_sha256 and tampered.dirty is True
