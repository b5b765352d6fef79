"""Builders the integration tests share: a tiny family spec, a model folder on main, a local Ray, a cluster's teardown,
a scan of files for a secret.

A plain module, not test code: the tests import it as ``tests.integration.helpers`` (as they import
``tests.chaos``), since no test module may import another. Fixtures built on these live in ``conftest.py``.
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from flotilla import registry
from flotilla.lineage import DataLineage, ModelCard, ParentModel
from flotilla.specs import DataSpec, FamilySpec, parse_spec

if TYPE_CHECKING:
    from flotilla.cluster.local import LocalCluster
    from flotilla.hub import Repo

TRAIN_REPO = "train-tests"


def tiny(name: str, **over) -> FamilySpec:
    """The smallest family that still learns (2 workers, width 8, 2 epochs); ``over`` merges into its dicts.

    test_reproduce's tolerances (docs/models.md) were measured on it: a change here means measuring them again."""
    base = {
        "name": name,
        "data": {"repo": TRAIN_REPO, "dataset": "faces"},
        "model": {"width": 8},
        "epochs": 2,
        "batch_size": 64,
        "scaling": {"workers": 2, "cpus_per_worker": 1},
        "optim": {"lr": 0.003},
    }
    for k, v in over.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return parse_spec(FamilySpec, base)


def put_model(
    repo: Repo,
    run_id: str,
    *,
    data_commit: str = "d" * 64,
    dataset: str = "faces",
    family: str = "fam",
    strategy: str = "shared",
    parent: str | tuple[str, str] | None = None,
) -> str:
    """A model of tasks age and gender on main: a real card (its config a real FamilySpec), untrained weights.

    Returns main's commit. ``parent`` is an address the registry resolves (that model must exist), or
    ``(commit, run_id)``: that run's family model at that commit, whether or not it is there. A
    ``separate`` family's model is gender's alone. Each card is created a second after the one before,
    so the catalog's newest-first order is the order of the calls; each run has its own git sha.
    """
    tasks = ["age", "gender"]
    config = FamilySpec(name=family, tasks=tasks, strategy=strategy, data=DataSpec(repo=repo.name, dataset=dataset))
    model, own = ("gender", tasks[1:]) if strategy == "separate" else ("family", tasks)
    if isinstance(parent, str):
        loc = registry.resolve(repo.hub, parent, repo.name)
        parent_model = ParentModel(loc.repo, loc.commit, loc.path)
    elif parent is not None:
        parent_model = ParentModel(repo.name, parent[0], registry.model_dir(parent[1], "family") + "model.pt")
    card = ModelCard(
        run_id=run_id, model=model, created=f"2026-12-01T00:00:{len(repo.list('main', 'models/')):02d}Z",
        tasks=tuple({"name": t, "kind": "regression" if t == "age" else "classification"} for t in own),
        metrics={"age/mae": 5.0, "gender/accuracy": 0.9}, best_epoch=0, epochs_run=1,
        data=DataLineage(repo.name, data_commit, dataset, "main"), branch=f"exp-{run_id}",
        code={"git_sha": f"{run_id}sha".ljust(40, "0")}, config=config.model_dump(mode="json"),
        parent=parent_model if parent else None,
    )  # fmt: skip
    base = registry.model_dir(run_id, model)
    repo.put("main", base + "model.pt", b"weights")
    repo.put("main", base + "card.json", json.dumps(card.to_dict()))
    return repo.commit("main", f"model {run_id}").id


@contextmanager
def local_ray(num_cpus: int, *, dashboard: bool = False, **env: str) -> Iterator[str]:
    """A local Ray in a short temp dir (Ray's socket paths have a length limit), with ``env`` set while it runs.

    ``dashboard``: the state API that Tune's placement-group cleanup needs runs in it."""
    import ray

    tmp = tempfile.mkdtemp(prefix="fl-ray-", dir="/tmp")
    mp = pytest.MonkeyPatch()
    for k, v in {"RAY_TMPDIR": tmp, **env}.items():
        mp.setenv(k, v)
    extra = {"dashboard_host": "127.0.0.1"} if dashboard else {}
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard, _temp_dir=f"{tmp}/ray", **extra)
    try:
        yield tmp
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
        mp.undo()


class RayKeeper:
    """One local Ray at a time for the session, kept from one module to the next while they ask for the same one.

    A Ray start and stop costs 5-30 s on a 2-core machine, and seven modules train on the same 4-CPU Ray. Ray Train
    and Ray Data remove their actors when a run ends, so the next module meets only idle workers (checked in runs
    of them one after another); a module that left an actor holding CPUs would make the next one's training wait, the
    first thing to look at if a test here hangs. A module that needs another Ray (a sweep's, a cluster's, its own)
    has the kept one released first."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.stack = ExitStack()

    def use(self, key: str, start: Callable[[], AbstractContextManager[object]]) -> None:
        if self.key != key:
            self.release()
            self.stack.enter_context(start())
            self.key = key

    def release(self) -> None:
        self.stack.close()
        self.stack = ExitStack()
        self.key = None


def stop_cluster(cluster: LocalCluster) -> None:
    """Down, and its short Ray temp dir removed (only flotilla's own: a user's is never touched)."""
    cluster.down()
    if str(cluster.tmpdir).startswith("/tmp/flotilla-ray-"):
        shutil.rmtree(cluster.tmpdir, ignore_errors=True)


def secret_forms(secret: str, key_id: str | None = None) -> dict[str, bytes]:
    """How a secret shows in a file: as written, URL-encoded, and (with its key id) inside HTTP Basic auth."""
    forms = {"as written": secret.encode(), "URL-encoded": urllib.parse.quote(secret, safe="").encode()}
    if key_id:
        forms["HTTP Basic auth"] = base64.b64encode(f"{key_id}:{secret}".encode())
    return forms


def files_holding(roots: Iterable[Path], forms: dict[str, bytes]) -> tuple[dict[Path, list[str]], int]:
    """Every regular file under ``roots`` that holds one of ``forms``, with which; and how many files were read.

    Each file is read whole (a secret split across two reads would be missed); sockets, pipes and links are skipped."""
    found: dict[Path, list[str]] = {}
    scanned = 0
    for root in roots:
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_symlink() or not path.is_file():
                continue
            try:
                data = path.read_bytes()
            except OSError:  # removed while we walked (a Ray log rotated, a temp file)
                continue
            scanned += 1
            hits = [name for name, form in forms.items() if form in data]
            if hits:
                found[path] = hits
    return found, scanned
