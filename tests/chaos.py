"""Fault injection for the training tests: a worker hook that kills one worker, once, mid-run.

It goes through flotilla's public extension point (:class:`flotilla.training.WorkerHook`), so the
library carries no test switch. Ray pickles the hook to every worker; this module registers itself
to be pickled by value, so a worker needs no access to the ``tests/`` folder to run it.
"""

from __future__ import annotations

import os
import sys
import time

import ray.cloudpickle

from flotilla.training import EpochStart, WorkerHook

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class KillWorker(WorkerHook):
    """Worker ``rank`` dies at the start of epoch ``after_epoch + 1`` of the run's first attempt.

    It waits ``delay_s`` first, so the controller has registered the last checkpoint: Ray Train must
    then restart the whole group from it. A restarted group (``resumed_from`` set) is left alone.
    """

    def __init__(self, rank: int = 1, after_epoch: int = 0, delay_s: float = 5.0) -> None:
        self.rank = rank
        self.after_epoch = after_epoch
        self.delay_s = delay_s

    def on_epoch_start(self, event: EpochStart) -> None:
        if event.resumed_from is None and event.rank == self.rank and event.epoch == self.after_epoch + 1:
            time.sleep(self.delay_s)
            os._exit(17)
