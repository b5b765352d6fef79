"""A single-worker model trained in the calling process: no Ray Train controller, no worker group.

A sweep's trial used to build a ``TorchTrainer`` for every trial: a controller and a worker group,
two more Python processes importing torch, about 20 s of start-up and Ray Train's polling beyond
the epochs of a small trial (``bench/trial_overhead.py``). A trial that trains on one worker with
DDP/plain torch (``scaling.workers == 1``, not DeepSpeed) runs the very same loop
(:func:`~flotilla.training.loop.train_loop_per_worker`) here, through :class:`InProcessSession`:

- checkpoints go to the same place on the run's branch (``runs/<run>/<model>/checkpoint_*/``) and
  each is committed with the same message and metadata as Ray Train's callback writes
  (:func:`~flotilla.training.callbacks.checkpoint_commit`); a failure too, and the loop restarts
  from the last checkpoint while ``failure.max_failures`` allows, as Ray Train would;
- a checkpoint is uploaded and committed on a background thread while the next epoch trains; each
  report waits for the previous one, and the fit for the last, so nothing is published or reported
  before its checkpoint is on the branch;
- a trial started again (its driver was killed) resumes from the newest checkpoint on its branch,
  whichever way it was written;
- nothing on the way to the first batch waits for the lakeFS SDK, whose first use in a process
  costs seconds: the branch is created on the background thread (the first checkpoint's upload
  waits for it), and the checkpoints a restarted trial left are found through the S3 gateway, with
  pyarrow, which the data loader has loaded already.

:class:`LocalFit` is what :func:`~flotilla.training.publish.publish_model` reads from such a fit:
the part of Ray Train's ``Result`` it uses.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import json
import logging
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flotilla.errors import HubUnavailableError
from flotilla.training.branchlock import branch_lock
from flotilla.training.callbacks import checkpoint_commit, failure_commit
from flotilla.training.loop import CKPT_META, train_loop_per_worker

if TYPE_CHECKING:
    from flotilla.hub.repo import Repo
    from flotilla.specs import FamilySpec
    from flotilla.training.config import WorkerConfig

log = logging.getLogger(__name__)

Report = Callable[[dict[str, Any]], None]
"""Where an in-process run's epochs go once their checkpoint is on the branch (a sweep: Tune)."""


def runs_in_process(spec: FamilySpec) -> bool:
    """Whether a model of ``spec`` can train in the calling process: one worker, DDP/plain torch.

    Several workers need a process group, and DeepSpeed its launcher: those keep Ray Train.
    """
    return spec.scaling.workers == 1 and spec.backend != "deepspeed"


def release_memory() -> bool:
    """Give the heap a finished trial freed back to the OS: a full garbage collection, then glibc's
    ``malloc_trim(0)``; whether it trimmed (False off glibc).

    A sweep's trial process takes the next trial (Tune's ``reuse_actors``), and a trial trains in it
    (see the module's docstring). Nothing of a trial stays reachable (its dataset, model and
    decoded-image maps are collected: the process's Python objects, threads and mappings are the same
    after each trial), yet the process grew with every trial it took: glibc keeps the pages a trial
    freed in its arenas, fragmented by the next trial's allocations, and the next trial's peak stacks
    on top. A plain Tune function trainable grows the same way (each trial runs on a new thread, and glibc
    may serve a new thread from another arena); a plain loop training in one thread does not.
    ``bench/trial_memory.py``, 2-epoch trials of 600 synthetic faces, one reused process, RSS at each
    trial's end: a plain Tune trainable, ten trials, 929 -> 1060 MiB (max 1077), trimmed at each trial's
    end 875 -> 903 MiB (max 913), with ``MALLOC_ARENA_MAX=2`` instead 903 -> 948 MiB (max 978);
    flotilla's trial, seven trials, 938 -> 1062 MiB (each trial's peak 976 -> 1069) before, 896 ->
    932 MiB (peak 951 -> 989, at most 989) trimmed here. It costs one full collection, about 0.2 s of
    CPU in a trial's process, once per trial.
    """
    gc.collect()
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim with
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True


class LocalDir:
    """A checkpoint folder as the loop hands it to :meth:`InProcessSession.report` (``Checkpoint.from_directory``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def from_directory(cls, path: str | Path) -> LocalDir:
        return cls(path)


@dataclass(frozen=True)
class HubCheckpoint:
    """A checkpoint folder on a branch, downloaded into a temporary folder when opened."""

    repo: Repo
    ref: str
    prefix: str  # ends with "/"

    @contextlib.contextmanager
    def as_directory(self) -> Iterator[str]:
        with tempfile.TemporaryDirectory(prefix="flotilla-ckpt-") as d:
            for obj in self.repo.list(self.ref, self.prefix):
                dest = Path(d) / obj.path[len(self.prefix) :]
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(self.repo.get(self.ref, obj.path))
            yield d


@dataclass(frozen=True)
class LocalFit:
    """An in-process fit as publishing reads it: every checkpoint with its epoch's metrics, in epoch order.

    The attributes are those of Ray Train's ``Result`` that :func:`~flotilla.training.publish.best_checkpoint`
    and :func:`~flotilla.training.publish.final_history` use, so either kind of fit publishes the same way.
    """

    best_checkpoints: list[tuple[HubCheckpoint, dict[str, Any]]]
    history: list[dict[str, Any]] = field(default_factory=list)  # every epoch's metrics, across restarts

    @property
    def checkpoint(self) -> HubCheckpoint | None:
        return self.best_checkpoints[-1][0] if self.best_checkpoints else None

    def get_best_checkpoint(self, metric: str, mode: str) -> HubCheckpoint | None:
        """The checkpoint whose ``metric`` is best (ties: the earlier epoch); the last when none has it."""
        scored = [
            (float(m[metric]), i, c) for i, (c, m) in enumerate(self.best_checkpoints) if isinstance(m.get(metric), (int, float))
        ]
        if not scored:
            return self.checkpoint
        sign = 1.0 if mode == "max" else -1.0
        return max(scored, key=lambda x: (sign * x[0], -x[1]))[2]


class InProcessSession:
    """The loop's session when it runs in this process (rank 0 of a world of 1); see the module's docstring."""

    rank = 0
    world = 1
    Checkpoint = LocalDir

    def __init__(
        self,
        repo: Repo,
        branch: str,
        run_id: str,
        model: str,
        report_to: Report,
        *,
        use_gpu: bool,
        start: Callable[[], object] | None = None,
        fs: Any = None,
    ) -> None:
        """``start`` (creating the branch) runs first on the background thread; ``fs`` is a pyarrow S3
        filesystem over the hub's gateway to find earlier checkpoints with (None: the SDK finds them)."""
        self.repo = repo
        self.branch = branch
        self.model = model
        self.prefix = f"runs/{run_id}/{model}/"
        self.report_to = report_to
        self.use_gpu = use_gpu
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flotilla-checkpoint")
        self._pending: Future[Any] | None = self._pool.submit(start) if start is not None else None
        self.history: list[dict[str, Any]] = []  # the newest checkpoint's: every epoch, those before a restart too
        self.reported = False
        self.checkpoints: list[tuple[int, HubCheckpoint, dict[str, Any]]] = self._on_branch(fs)

    def _metas(self, fs: Any) -> list[tuple[str, bytes]]:
        """Every checkpoint folder (its path on the branch) under the model's, with its ``meta.json`` (none
        before the branch exists)."""
        if fs is not None:
            import pyarrow.fs as pafs

            ref = f"{self.repo.name}/{self.branch}/"
            try:
                infos = fs.get_file_info(pafs.FileSelector(ref + self.prefix, recursive=True, allow_not_found=True))
                metas = [i.path for i in infos if i.path.endswith("/" + CKPT_META)]
                return [(p[len(ref) : -len(CKPT_META)], fs.open_input_stream(p).readall()) for p in metas]
            except OSError as exc:
                # a branch that does not exist yet (a fresh trial's) is a 400 from lakeFS's gateway; anything
                # else (the hub unreachable, a timeout) is asked of the hub itself, once the branch is made
                if "HTTP status 400" in str(exc) or "HTTP status 404" in str(exc):
                    return []
                log.debug("listing %s through the S3 gateway: %s", ref + self.prefix, exc)
        self.wait()  # the branch exists once start has run
        listed = self.repo.list(self.branch, self.prefix)
        metas = [o.path for o in listed if o.path.endswith("/" + CKPT_META)]
        return [(p[: -len(CKPT_META)], self.repo.get(self.branch, p)) for p in metas]

    def _on_branch(self, fs: Any) -> list[tuple[int, HubCheckpoint, dict[str, Any]]]:
        """Every whole checkpoint already on the branch (a restarted trial's), by epoch; Ray Train's too."""
        found: dict[int, tuple[int, HubCheckpoint, dict[str, Any]]] = {}
        histories: dict[int, list[dict[str, Any]]] = {}
        for folder, blob in self._metas(fs):
            meta = json.loads(blob)
            epoch, history = int(meta["epoch"]), meta.get("history") or []
            metrics = history[epoch] if len(history) > epoch else {"epoch": epoch}
            found[epoch] = (epoch, HubCheckpoint(self.repo, self.branch, folder), metrics)
            histories[epoch] = history
        if histories:
            self.history = histories[max(histories)]
        return [found[e] for e in sorted(found)]

    def get_checkpoint(self) -> HubCheckpoint | None:
        self.wait()
        return self.checkpoints[-1][1] if self.checkpoints else None

    def prepare_model(self, model: Any) -> Any:
        return model.to(self.device())

    def device(self) -> Any:
        import torch

        return torch.device("cuda:0" if self.use_gpu and torch.cuda.is_available() else "cpu")

    def placement_group(self) -> str:
        return ""  # the trial's own: Tune frees it

    def report(self, metrics: dict[str, Any], checkpoint: LocalDir | None = None) -> None:
        """Hand the epoch to the background thread: upload and commit its checkpoint, then report it."""
        self.wait()
        files = {p.name: p.read_bytes() for p in checkpoint.path.iterdir()} if checkpoint is not None else None
        self._pending = self._pool.submit(self._persist, dict(metrics), files)

    def _persist(self, metrics: dict[str, Any], files: dict[str, bytes] | None) -> None:
        if files is not None:
            epoch = int(metrics["epoch"])
            prefix = f"{self.prefix}checkpoint_epoch{epoch:06d}/"
            message, meta = checkpoint_commit(self.model, metrics)
            with branch_lock(self.repo.name, self.branch):  # the branch's other models commit only their own files
                for name in sorted(files, key=lambda n: n == CKPT_META):  # meta.json last: it marks the checkpoint whole
                    self.repo.put(self.branch, prefix + name, files[name])
                try:
                    self.repo.commit(self.branch, message, meta)
                except Exception as exc:  # never fail training because a commit failed; the files stay on the branch
                    log.warning("could not commit checkpoint to %s: %s", self.branch, exc)
            self.checkpoints = [c for c in self.checkpoints if c[0] < epoch]
            self.checkpoints.append((epoch, HubCheckpoint(self.repo, self.branch, prefix), metrics))
            self.history = json.loads(files[CKPT_META]).get("history") or self.history
        self.report_to(metrics)
        self.reported = True

    def stop_requested(self) -> bool:
        """Tune's stop reaches the report the background thread is blocked in: it ends that thread with
        ``SystemExit``, which :meth:`wait` raises here, on the training thread, so the trial ends as Tune asked."""
        pending = self._pending
        return pending is not None and pending.done() and isinstance(pending.exception(), SystemExit)

    def wait(self) -> None:
        """Until the last report is on the branch and reported (its error, if it failed, raised here)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.wait()
        self._pool.shutdown(wait=True)

    def fit(self) -> LocalFit:
        """The fit to publish, once everything is on the branch.

        A trial cut short after its last checkpoint was committed but before Tune heard of that epoch
        resumes with nothing left to train: its last epoch is reported again, or Tune would end it on
        the epoch it heard of last, as one stopped early.
        """
        self.wait()
        if not self.reported and self.checkpoints:
            self.report_to(self.checkpoints[-1][2])
            self.reported = True
        return LocalFit([(c, m) for _, c, m in self.checkpoints], self.history)


def fit_in_process(
    repo: Repo, config: WorkerConfig, report_to: Report, *, start: Callable[[], object] | None = None, fs: Any = None
) -> LocalFit:
    """Train ``config``'s model here, restarting from its last checkpoint after a failure while
    ``failure.max_failures`` allows; each failure is an empty commit on the branch, as under Ray Train.

    ``start`` creates the branch (on the background thread, see the module's docstring); ``fs``, a
    pyarrow S3 filesystem over the hub's gateway, finds the checkpoints a restarted trial left.
    """
    spec = config.spec
    failures = 0
    while True:
        session = InProcessSession(
            repo,
            config.branch,
            config.run_id,
            config.model_name,
            report_to,
            use_gpu=spec.scaling.use_gpu,
            start=start if failures == 0 else None,
            fs=fs,
        )
        try:
            train_loop_per_worker(config, session)
            return session.fit()
        except Exception as exc:
            if not isinstance(exc, HubUnavailableError):  # the hub just outlasted its retry budget: no second wait
                message, meta = failure_commit(config.model_name, {0: exc})
                try:
                    with branch_lock(repo.name, config.branch):
                        repo.commit(config.branch, message, meta, allow_empty=True)
                except Exception as err:
                    log.warning("could not record the failure on %s: %s", config.branch, err)
            failures += 1
            if failures > spec.failure.max_failures:
                raise
            log.warning(
                "training %s failed (%s: %s); restarting from its last checkpoint", config.model_name, type(exc).__name__, exc
            )
        finally:
            session.close()
