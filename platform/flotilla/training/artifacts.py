"""Models in the hub: where a run's model lives, reading it back, and its model card.

Layout on a run's branch (and on main once promoted)::

    runs/<run_id>/<model>/checkpoint_*/        Ray Train checkpoints (written through the S3 gateway)
    models/<run_id>/<model>/model.pt           the chosen weights: {"config", "state"}
    models/<run_id>/<model>/card.json          the model card (lineage, metrics, resolved config)
    models/<run_id>/<model>/metrics.json       per-epoch history
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flotilla.errors import NotFoundError, SpecError
from flotilla.names import branch_id
from flotilla.settings import shipped_code
from flotilla.version import __version__


@dataclass(frozen=True)
class ModelLocation:
    repo: str
    commit: str
    path: str  # .../model.pt

    @property
    def uri(self) -> str:
        return f"lakefs://{self.repo}/{self.commit}/{self.path}"


def model_dir(run_id: str, model: str) -> str:
    return f"models/{run_id}/{model}/"


def parse_lakefs_uri(uri: str) -> tuple[str, str, str]:
    if not uri.startswith("lakefs://"):
        raise SpecError(f"not a lakeFS URI: {uri!r}", hint="use lakefs://<repo>/<ref>/<path/to/model.pt> or a run id")
    parts = uri[len("lakefs://") :].split("/", 2)
    if len(parts) < 3 or not all(parts):
        raise SpecError(f"lakeFS URI {uri!r} needs a repository, a ref and a path")
    return parts[0], parts[1], parts[2]


def resolve_model(hub: Any, source: str, default_repo: str) -> ModelLocation:
    """A transfer source (lakeFS URI or run id) → an immutable location (commit id)."""
    if source.startswith("lakefs://"):
        repo, ref, path = parse_lakefs_uri(source)
        if path.endswith("/"):
            path += "model.pt"
        r = hub.repo(repo)
        commit = r.resolve(ref)
        r.stat(commit, path)
        return ModelLocation(repo, commit, path)
    r = hub.repo(default_repo)

    run, _, model = source.partition("/")  # "<run>" or "<run>/<model>" (a run of separate models has several)
    refs = ["main", branch_id(run, prefix="exp-")]
    if model:
        refs.append(branch_id(f"{run}-{model}", prefix="exp-"))
    else:  # an unpromoted run of separate models: each model on exp-<run>-<model>
        refs += sorted(b for b in r.branches() if b.startswith(branch_id(run, prefix="exp-") + "-"))
    prefix = f"models/{run}/{model}/" if model else f"models/{run}/"
    found: dict[str, ModelLocation] = {}
    for ref in refs:
        try:
            commit = r.resolve(ref)
        except NotFoundError:
            continue
        for o in r.list(commit, prefix):
            name = o.path[len(f"models/{run}/") :].split("/")[0]
            if o.path == f"models/{run}/{name}/model.pt" and name not in found:
                found[name] = ModelLocation(default_repo, commit, o.path)
    if len(found) == 1:
        return next(iter(found.values()))
    if len(found) > 1:
        raise SpecError(
            f"run {run!r} has {len(found)} models ({', '.join(sorted(found))}); a transfer needs one",
            hint=f"name it as '{run}/<model>', e.g. transfer.source: {run}/{sorted(found)[0]}",
        )
    raise NotFoundError(
        f"no model of run {source!r} in repository {default_repo!r} (looked on main and the run's branches)",
        hint="pass a lakeFS URI like lakefs://faces/main/models/<run>/family/model.pt",
    )


def read_model_bytes(repo: str, commit: str, path: str, credentials: Any) -> bytes:
    """Read through the S3 gateway, so it works on any node of a cluster."""
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(**credentials.s3_options())
    with fs.open_input_stream(f"{repo}/{commit}/{path}") as fh:
        return bytes(fh.read())


def code_version() -> dict[str, Any]:
    """Git sha and dirty flag of the flotilla checkout running this (or 'unknown' outside git)."""
    shipped = shipped_code()  # a job runs from a copy without .git: submission handed it the version
    if shipped:
        return {"flotilla_version": __version__, "git_sha": shipped[0], "dirty": shipped[1]}
    root = Path(__file__).resolve().parents[3]
    info: dict[str, Any] = {"flotilla_version": __version__, "git_sha": "unknown", "dirty": None}
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if sha.returncode == 0:
            info["git_sha"] = sha.stdout.strip()
            st = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=10
            )
            info["dirty"] = bool(st.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def model_card(
    *,
    run_id: str,
    model: str,
    tasks: list[dict[str, Any]],
    metrics: dict[str, float],
    history: list[dict[str, Any]],
    data_ref: Any,
    branch: str,
    spec: Any,
    parent: ModelLocation | None,
    code: dict[str, Any],
    best_epoch: int,
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "model": model,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "tasks": tasks,
        "metrics": metrics,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "data": asdict(data_ref),
        "branch": branch,
        "code": code,
        "config": spec.model_dump(mode="json"),
        "parent": None if parent is None else {**asdict(parent), "uri": parent.uri},
    }


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=float)
