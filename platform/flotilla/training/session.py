"""Where the training loop runs: a Ray Train worker, or the calling process itself.

:func:`~flotilla.training.loop.train_loop_per_worker` reaches its world only through a
:class:`Session`: its rank and the world size, its device, the checkpoint to resume from, the model's
preparation (DDP) and each epoch's report. :class:`RayTrainSession` is Ray Train's worker context;
:class:`~flotilla.training.inprocess.InProcessSession` trains a single-worker model in the process
that asked for it (a sweep's trial: no controller, no worker group, the same loop and the same
commits on the branch).
"""

from __future__ import annotations

from typing import Any, Protocol


class Session(Protocol):
    """What the loop needs from where it runs. ``Checkpoint.from_directory(d)`` makes what ``report`` takes."""

    rank: int
    world: int
    Checkpoint: Any

    def get_checkpoint(self) -> Any | None:
        """The checkpoint to resume from (``as_directory()`` opens it), or None for a fresh start."""
        ...

    def prepare_model(self, model: Any) -> Any: ...

    def device(self) -> Any: ...

    def report(self, metrics: dict[str, Any], checkpoint: Any | None = None) -> None: ...

    def placement_group(self) -> str:
        """The id of the placement group the workers hold ("" if none): a sweep frees it when Tune kills the trial."""
        ...

    def stop_requested(self) -> bool:
        """Whether whoever drives the run has stopped it (Tune ended the trial): the loop leaves at the next batch.

        Tune reuses a trial's process for the next trial only if the training thread ends within
        seconds of the stop; a loop that finished its epoch first would cost the process, and with it
        the warm imports the next trial would have had.
        """
        ...


class RayTrainSession:
    """A Ray Train worker's session: its context, checkpoint, reports and DDP preparation."""

    def __init__(self) -> None:
        import ray.train

        ctx = ray.train.get_context()
        self.rank: int = ctx.get_world_rank()
        self.world: int = ctx.get_world_size()
        self.Checkpoint = ray.train.Checkpoint

    def get_checkpoint(self) -> Any | None:
        import ray.train

        return ray.train.get_checkpoint()

    def prepare_model(self, model: Any) -> Any:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def device(self) -> Any:
        import ray.train.torch

        return ray.train.torch.get_device()

    def report(self, metrics: dict[str, Any], checkpoint: Any | None = None) -> None:
        import ray.train

        ray.train.report(metrics, checkpoint=checkpoint)

    def placement_group(self) -> str:
        import ray.util

        pg = ray.util.get_current_placement_group()
        return pg.id.hex() if pg is not None else ""

    def stop_requested(self) -> bool:
        return False  # Ray Train stops its workers itself
