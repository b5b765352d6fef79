"""Ctrl-C belongs to the caller again once a Ray run returns.

Ray Tune installs a SIGINT handler for the length of ``tuner.fit()``: the first Ctrl-C stops the
sweep gracefully and checkpoints its state, which is what a sweep's user wants. It removes that
handler only when a SIGINT arrives, though, so after a sweep that ended normally, the next Ctrl-C
in the notebook, job driver or test process that called ``flotilla.sweep`` is swallowed, with a
warning about a Tune run that is long over.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def caller_keeps_ctrl_c() -> Iterator[None]:
    """Restore the SIGINT handler in place before the block (main thread only: only it has handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
