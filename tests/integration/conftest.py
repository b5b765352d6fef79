"""Fixtures several integration modules share: a local Ray to train on, one for sweeps, a two-node flotilla cluster,
a Label Studio.

One process holds one Ray, and the modules need different ones (4 CPUs to train, 2 with the dashboard for Tune, a
cluster's own, test_sweep's per test), and test_cluster_jobs stops its cluster on purpose. The training one is
kept from module to module (its modules run first, one after another); every other module gets its own.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tests.integration import helpers

from flotilla.cluster.local import LocalCluster
from flotilla.hub.server import free_port
from flotilla.settings import Settings


@pytest.fixture(scope="session")
def ray_keeper():
    keeper = helpers.RayKeeper()
    yield keeper
    keeper.release()


def uses_shared_ray(item: pytest.Item) -> bool:
    """Whether a test trains on the session's kept Ray: it asks for ``local_ray`` and its module has no Ray of its own."""
    return "local_ray" in getattr(item, "fixturenames", ()) and not hasattr(getattr(item, "module", None), "local_ray")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """The modules that train on the kept Ray run one after another, first among the integration modules, so that
    one Ray start serves them all; every other test keeps its place and each module keeps its own order."""
    here = Path(__file__).parent
    ours = [i for i in items if here in Path(str(i.path)).parents]
    if not ours:
        return
    shared = [i for i in ours if uses_shared_ray(i)]
    shared_modules = {i.path for i in shared}
    first = items.index(ours[0])
    rest = [i for i in items[first:] if i.path not in shared_modules]
    items[first:] = [i for i in items[first:] if i.path in shared_modules] + rest


@pytest.fixture(scope="module", autouse=True)
def _one_ray_at_a_time(request: pytest.FixtureRequest, ray_keeper) -> None:
    """A module that does not train on the kept Ray gets none: it starts its own (a sweep's, a cluster's) or needs none."""
    if not any(uses_shared_ray(i) for i in request.session.items if i.path == request.path):
        ray_keeper.release()


@pytest.fixture(scope="module")
def local_ray(ray_keeper):
    """4 CPUs for two-worker families, no dashboard; DeepSpeed's CPU op, compiled once (~25 s), kept in flotilla's cache.

    Kept for the next module that asks for it (see :class:`helpers.RayKeeper`)."""
    cache = Settings.from_env().cache
    env = {"TORCH_EXTENSIONS_DIR": str(cache / "torch_extensions"), "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
    ray_keeper.use("train", lambda: helpers.local_ray(4, **env))


@pytest.fixture(scope="module")
def sweep_ray():
    """What a sweep needs: 2 CPUs and the dashboard (Tune's placement-group cleanup calls its state API)."""
    with helpers.local_ray(2, dashboard=True):
        yield


@pytest.fixture(scope="module")
def jobs_env(hub_settings: Settings, local_server):
    """FLOTILLA_HOME = the session hub's home, so jobs find its 0600 credentials file."""
    mp = pytest.MonkeyPatch()
    mp.setenv("FLOTILLA_HOME", str(hub_settings.home))
    mp.setenv("FLOTILLA_HUB_PORT", str(hub_settings.hub_port))
    mp.delenv("FLOTILLA_RAY_ADDRESS", raising=False)
    yield Settings.from_env()
    mp.undo()


@pytest.fixture(scope="module")
def cluster(jobs_env: Settings):
    """flotilla's own local cluster, two nodes of 1 CPU each (head + one worker), where jobs run."""
    c = LocalCluster(jobs_env)
    t0 = time.monotonic()
    st = c.up(num_cpus=1, workers=1, worker_cpus=1, ray_port=free_port(), dashboard_port=free_port(), object_store_mb=128)
    print(f"\ncluster up (2 nodes): {time.monotonic() - t0:.1f}s")
    assert st.running and st.healthy and st.nodes == 2, st.describe()
    yield c
    helpers.stop_cluster(c)


@pytest.fixture(scope="session")
def label_client(tmp_path_factory: pytest.TempPathFactory):
    """A client of one real local Label Studio for the session (its start costs ~30 s; its projects are per test)."""
    from flotilla.labelstudio import LABEL_STUDIO_VERSION, LabelStudioServer, ensure_installed, local_client

    settings = Settings(home=tmp_path_factory.mktemp("label-home"), cache=Settings.from_env().cache, label_port=free_port())
    srv = LabelStudioServer(settings.label_dir, settings.label_port, ensure_installed(settings), LABEL_STUDIO_VERSION)
    srv.up(timeout=240)
    yield local_client(settings)
    srv.down()
