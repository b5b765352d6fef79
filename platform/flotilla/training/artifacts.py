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
from dataclasses import asdict
from pathlib import Path
from typing import Any

from flotilla.registry.address import ModelLocation
from flotilla.settings import shipped_code
from flotilla.version import __version__


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
