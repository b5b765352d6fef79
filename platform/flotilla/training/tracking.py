"""Experiment tracking with W&B, on rank 0 only.

Offline unless ``WANDB_API_KEY`` is set (offline runs land in ``$WANDB_DIR`` and
can be synced later with ``wandb sync``). The run config carries the data commit
and branch so a W&B run always points back to the exact data; it is built from
the validated spec, which never holds credentials.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Literal

from flotilla.settings import wandb_api_key_set, wandb_dir

if TYPE_CHECKING:
    from flotilla.training.config import WorkerConfig

log = logging.getLogger(__name__)


class Tracker:
    def __init__(self, run: Any) -> None:
        self.run = run

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.run.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)

    def finish(self) -> None:
        self.run.finish()


def start_tracking(config: WorkerConfig) -> Tracker | None:
    """Rank 0's W&B run; None when W&B is missing or will not start (tracking never stops training).

    Its config is built from named fields of ``config``, never from the whole object: the worker
    config holds the object-store reference to the credentials, and W&B keeps whatever it is given.
    """
    try:
        import wandb
    except ImportError:  # pragma: no cover - wandb is a dependency
        return None
    mode: Literal["online", "offline"] = "online" if wandb_api_key_set() else "offline"
    try:
        run = wandb.init(
            project=config.spec.tracking.project,
            name=config.model_name and f"{config.run_id}/{config.model_name}",
            group=config.run_id,
            mode=mode,
            dir=wandb_dir(),
            config={
                "spec": config.spec.model_dump(mode="json"),
                "tasks": [t.name for t in config.tasks],
                "data": asdict(config.data),
                "branch": config.branch,
                "run_id": config.run_id,
            },
            reinit="finish_previous",
        )
    except Exception as exc:  # tracking must never take training down
        log.warning("W&B tracking disabled: %s", type(exc).__name__)
        return None
    return Tracker(run)
