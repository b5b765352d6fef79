"""The /tmp stand-in for Ray's temp dir: its name is predictable, so a dir or symlink someone else put
there first must be refused before the cluster starts, not reused (no Ray is started here)."""

import os
import shutil
from pathlib import Path

import pytest

from flotilla.cluster import ClusterError, LocalCluster
from flotilla.hub.server import free_port
from flotilla.settings import Settings


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    home = tmp_path / ("long-home-" * 4)  # too long for Ray's socket paths: the /tmp stand-in is used
    monkeypatch.setenv("FLOTILLA_RAY_PORT", str(free_port()))
    monkeypatch.setenv("FLOTILLA_DASHBOARD_PORT", str(free_port()))
    c = LocalCluster(Settings(home=home, cache=tmp_path / "cache", hub_port=free_port()))
    assert c.tmpdir.parent == Path("/tmp")
    shutil.rmtree(c.tmpdir, ignore_errors=True)
    yield c
    if c.tmpdir.is_symlink() or c.tmpdir.is_file():
        c.tmpdir.unlink()
    shutil.rmtree(c.tmpdir, ignore_errors=True)


def _refused(cluster: LocalCluster, what: str) -> None:
    with pytest.raises(ClusterError) as info:
        cluster.up(timeout=5)
    assert str(cluster.tmpdir) in info.value.message and what in info.value.message, info.value.message
    assert "FLOTILLA_HOME" in info.value.hint
    assert cluster.state() is None  # nothing started, no state written


def test_a_symlink_in_place_of_the_stand_in_is_refused(cluster, tmp_path):
    elsewhere = tmp_path / "someone-elses"
    elsewhere.mkdir()
    elsewhere.chmod(0o777)
    cluster.tmpdir.symlink_to(elsewhere)
    _refused(cluster, "a symlink")
    assert not list(elsewhere.iterdir()) and elsewhere.stat().st_mode & 0o777 == 0o777  # not used, not chmod-ed


def test_a_dangling_symlink_is_refused(cluster, tmp_path):
    cluster.tmpdir.symlink_to(tmp_path / "not-yet")
    _refused(cluster, "a symlink")
    assert not (tmp_path / "not-yet").exists()


@pytest.mark.skipif(os.getuid() != 0, reason="giving a dir to another uid needs root")
def test_a_dir_another_user_owns_is_refused(cluster):
    cluster.tmpdir.mkdir()
    cluster.tmpdir.chmod(0o777)
    os.chown(cluster.tmpdir, 12345, 12345)
    _refused(cluster, "owned by uid 12345")
    assert cluster.tmpdir.stat().st_mode & 0o777 == 0o777


def test_a_file_in_its_place_is_refused(cluster):
    cluster.tmpdir.write_text("")
    _refused(cluster, "not a directory")


@pytest.mark.parametrize("var", ["FLOTILLA_RAY_PORT", "FLOTILLA_DASHBOARD_PORT"])
def test_a_port_in_rays_worker_port_range_is_refused_before_anything_starts(cluster, monkeypatch, var):
    monkeypatch.setenv(var, "16380")  # `ray start` would fail with a traceback in head.log only
    with pytest.raises(ClusterError) as info:
        cluster.up(timeout=5)
    assert "16380" in info.value.message and "10002-19999" in info.value.message
    assert var in info.value.hint
    assert cluster.state() is None and not cluster.tmpdir.exists()
