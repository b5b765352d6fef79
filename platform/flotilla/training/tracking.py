"""Experiment tracking with W&B, on rank 0 only, the way W&B users expect it.

**Online or offline** is decided as W&B itself would: ``WANDB_MODE`` when a person set it; else
online when W&B finds credentials by any of its own means (``wandb login``'s ``~/.netrc``,
``WANDB_API_KEY``, its settings file: asked through ``wandb.login(prompt=False, verify=False)``,
which reads them without a prompt or a call to the server); else offline, with a one-line note
saying how to go online. An offline run is synced later with ``wandb sync <dir>``.

**Where**: under the run's own folder (``$FLOTILLA_HOME/runs/<run_id>``, a sweep's
``$FLOTILLA_HOME/sweeps/<sweep_id>``), not Ray's temp dir; ``WANDB_DIR`` wins when set.

**Names**: the run's id is the model's branch (a Ray Train restart resumes the same W&B run), its
group the train run (a sweep's trials: the sweep), and rank 0 records the id, mode and folder in
the checkpoint, from which the model card takes them. The run config is built from named fields of
the validated spec, which never holds credentials.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flotilla.settings import Settings, wandb_api_key_set, wandb_dir, wandb_mode
from flotilla.training.config import TrackingPlan

if TYPE_CHECKING:
    from flotilla.training.config import ModelRun, WorkerConfig

log = logging.getLogger(__name__)
_NOTED: set[str] = set()  # notes already given in this process: one line per process, not per model


LOGIN_CHECK_S = 60.0
"""The longest the login check may take (W&B reads its settings; seconds on a loaded machine): past it, offline."""


def logged_in() -> bool:
    """Whether W&B finds credentials here by its own means (``~/.netrc``, ``WANDB_API_KEY``, its settings).

    ``WANDB_API_KEY`` is read directly (it needs no W&B start-up); the rest is W&B's own lookup, in a
    daemon thread so that a W&B that hangs (a settings file on a dead mount) costs at most
    :data:`LOGIN_CHECK_S` and never the run.
    """
    if wandb_api_key_set():
        return True
    found: list[bool] = []

    def check() -> None:
        try:
            import wandb
        except ImportError:  # pragma: no cover - wandb is a dependency
            return
        quiet = io.StringIO()  # W&B announces the key it found; the mode note says it once, in flotilla's words
        with contextlib.redirect_stderr(quiet), contextlib.redirect_stdout(quiet):
            try:
                found.append(bool(wandb.login(prompt=False, verify=False)))
            except Exception:  # a broken settings file, say: tracking is never a reason to stop
                found.append(False)

    thread = threading.Thread(target=check, name="wandb-login-check", daemon=True)
    thread.start()
    thread.join(LOGIN_CHECK_S)
    return bool(found and found[0])


def choose_mode() -> tuple[str, str]:
    """W&B's mode here and why: ``WANDB_MODE`` when set, else online when logged in, else offline."""
    explicit = wandb_mode()
    if explicit:
        return explicit, f"W&B mode {explicit} (WANDB_MODE)"
    if logged_in():
        return "online", "W&B is logged in: runs log online"
    return "offline", (
        "W&B is not logged in: runs log offline ('wandb login' or WANDB_API_KEY to log online; 'wandb sync' uploads them later)"
    )


def plan_tracking(run: ModelRun, branch: str, settings: Settings) -> TrackingPlan:
    """Where rank 0's W&B run goes for ``run`` trained on ``branch``; notes the mode once per process."""
    mode, why = choose_mode()
    folder = str(run.folder) if run.folder else wandb_dir() or str(settings.home / "runs" / run.run_id)
    if why not in _NOTED:
        _NOTED.add(why)
        log.warning("%s (under %s)", why, folder)
    return TrackingPlan(
        project=run.spec.tracking.project,
        # a separate family's sweep trial trains all its models on one branch: each its own W&B run
        id=branch if run.branch is None or run.name == "family" else f"{branch}-{run.name}",
        group=run.wandb_group or run.run_id,
        name=run.wandb_name or f"{run.run_id}/{run.name}",
        mode=mode,
        dir=folder,
    )


class Tracker:
    def __init__(self, run: Any, plan: TrackingPlan) -> None:
        self.run = run
        self.plan = plan

    @property
    def record(self) -> dict[str, Any]:
        """What the model card keeps of this run (``ModelCard.tracking``): ids and places, no credentials."""
        url = getattr(self.run, "url", None) if self.plan.mode == "online" else None
        return {"wandb": {**asdict(self.plan), "url": url}}

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.run.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)

    def finish(self) -> None:
        self.run.finish()


def start_tracking(config: WorkerConfig) -> Tracker | None:
    """Rank 0's W&B run; None when there is no plan or W&B will not start (tracking never stops training).

    Its config is built from named fields of ``config``, never from the whole object: the worker
    config holds the object-store reference to the credentials, and W&B keeps whatever it is given.
    """
    plan = config.tracking
    if plan is None:
        return None
    try:
        import wandb
    except ImportError:  # pragma: no cover - wandb is a dependency
        return None
    try:
        Path(plan.dir).mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            project=plan.project,
            id=plan.id,
            name=plan.name,
            group=plan.group,
            mode=plan.mode,  # type: ignore[arg-type]  # one of W&B's own modes (WANDB_MODE's values)
            dir=plan.dir,
            resume="allow",  # a Ray Train restart logs on into the same run
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
    return Tracker(run, plan)
