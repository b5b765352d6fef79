"""Ctrl-C belongs to the caller again once a Ray run returns.

Ray Tune installs a SIGINT handler for the length of ``tuner.fit()``: the first Ctrl-C stops the
sweep gracefully and checkpoints its state, which is what a sweep's user wants. It removes that
handler only when a SIGINT arrives, though, so after a sweep that ended normally, the next Ctrl-C
in the notebook, job driver or test process that called ``flotilla.sweep`` is swallowed, with a
warning about a Tune run that is long over.

It also tells whether the run *was* interrupted. A Ctrl-C (or SIGUSR1) makes ``tuner.fit()``
return normally, with the trials that were running cut short and marked finished, so the caller
cannot tell a stopped sweep from a finished one by its results; but Tune's handler puts the
handler it replaced back when it takes the signal, and that is visible afterwards.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from flotilla.errors import FlotillaError
from flotilla.settings import tune_handles_sigint


class SweepInterrupted(FlotillaError):
    """A Ctrl-C (or SIGUSR1) stopped the sweep: its state is saved, and ``resume`` finishes it."""


@dataclass
class Watch:
    interrupted: bool = False  # a Tune run in the block took a Ctrl-C / SIGUSR1 and stopped early


@contextmanager
def caller_keeps_ctrl_c() -> Iterator[Watch]:
    """Restore the SIGINT handler in place before the block (main thread only: only it has handlers).

    ``Watch.interrupted`` is set when the handler found after the block is the one from before it:
    Tune (which installs its own unless ``TUNE_DISABLE_SIGINT_HANDLER`` is set) restores that one
    only when a signal stopped the run.
    """
    watch = Watch()
    if threading.current_thread() is not threading.main_thread():
        yield watch
        return
    previous = signal.getsignal(signal.SIGINT)
    try:
        yield watch
    finally:
        tune_handles = tune_handles_sigint()
        watch.interrupted = tune_handles and signal.getsignal(signal.SIGINT) is previous
        signal.signal(signal.SIGINT, previous)
