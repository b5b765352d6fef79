"""Running an iterator a few items ahead of its consumer, in a background thread.

The loader gathers a batch (fancy-indexing memory-mapped images, or decoding PNGs, both mostly
outside the GIL) while the training step runs its kernels, so the step never waits on the loader
unless the loader is slower. Order is unchanged: one producer, one FIFO queue.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar, cast

T = TypeVar("T")
_END = object()


def prefetched(items: Iterable[T], depth: int) -> Iterator[T]:
    """``items`` in order, produced up to ``depth`` ahead in a daemon thread (``depth`` 0: inline).

    An exception in the producer is raised to the consumer at the point it happened in the sequence.
    A consumer that stops early (``next`` once, ``break``) stops the producer after the item it is
    making, and waits for it, so nothing of the producer's outlives the iteration.
    """
    if depth <= 0:
        yield from items
        return
    q: queue.Queue[tuple[bool, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[bool, object]) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((True, _END))
        except BaseException as exc:  # handed to the consumer, raised there
            put((False, exc))

    thread = threading.Thread(target=produce, name="flotilla-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                assert isinstance(item, BaseException)
                raise item
            if item is _END:
                return
            yield cast(T, item)
    finally:
        stop.set()
        thread.join()
