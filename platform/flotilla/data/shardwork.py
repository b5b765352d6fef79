"""Building an ingest's image shards, one worker process per core.

A shard is built from one task: its samples (drawn by the worker from a synthetic recipe, or handed to
it by an importer), then PNG/Parquet-encoded, hashed, and inspected by the gate
(:func:`~flotilla.data.imagecheck.inspect_shard`) while its bytes are in hand. :func:`build_shards`
runs the tasks on a pool and yields the built shards **in shard order**, a few ahead of the writer, so
uploads overlap the work and memory stays bounded by a few shards.

Why a process pool, not Ray tasks: the work is CPU-bound pure Python/numpy (the renderer, Pillow's
encoder and decoder hold the GIL for much of it), so it needs processes; a local ``flotilla data
generate`` never needed a Ray cluster and should not start one to ingest; and an ingest job on a
cluster runs on one node, whose cores the pool uses. Workers are started with ``spawn``: forking a
process that holds a Ray or lakeFS client's threads (or pyarrow's pools) is not safe. The price: like any
spawned worker, they import the caller's main script, so a script that ingests keeps its top level under
``if __name__ == "__main__":``; and each pays ~1 s of imports, so one shard is built inline, without a pool.

Determinism: sample ``i`` of a synthetic dataset depends only on ``(seed, i, spec)``
(:mod:`flotilla.data.synthetic`) and shard ``k`` holds samples ``k * shard_rows ..``, so the bytes of
every shard are the same whatever the number of workers.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace

from flotilla.data import layout
from flotilla.data.imagecheck import ShardFacts, inspect_shard
from flotilla.data.layout import Sample
from flotilla.data.synthetic import DEFAULT_SPEC, FaceSpec, check_request, iter_batches
from flotilla.errors import ConfigError


def synthetic_samples(
    n: int, seed: int = 0, spec: FaceSpec | None = None, *, batch_size: int = 1024, labelled: bool = True, start: int = 0
) -> Iterator[Sample]:
    """Synthetic faces ``start .. start+n-1`` as PNG-encoded samples; ids ``syn-<seed>-<index>`` are stable per (seed, index).

    ``labelled=False``: the same faces with every label left out (null), as incoming data arrives.
    """
    from PIL import Image

    spec = spec or DEFAULT_SPEC
    for batch in iter_batches(n, seed=seed, spec=spec, batch_size=batch_size, start=start):
        for k in range(len(batch.index)):
            buf = io.BytesIO()
            Image.fromarray(batch.images[k]).save(buf, format="PNG", compress_level=1)
            yield Sample(
                sample_id=f"syn-{seed}-{int(batch.index[k]):07d}",
                image=buf.getvalue(),
                format="png",
                age=float(batch.age[k]) if labelled else None,
                gender=int(batch.gender[k]) if labelled else None,
                emotion=int(batch.emotion[k]) if labelled else None,
                source=f"synthetic seed={seed} index={int(batch.index[k])}",
            )


@dataclass(frozen=True)
class SyntheticPlan:
    """``n`` synthetic faces of ``(seed, spec)`` as a recipe: each worker draws its own shard's samples.

    Iterating it gives the samples in order, for a caller that wants them in one process.
    """

    n: int
    seed: int = 0
    spec: FaceSpec = DEFAULT_SPEC
    labelled: bool = True

    def __post_init__(self) -> None:
        check_request(self.n, self.seed)  # before any branch is cut: n=-3 ingested an empty dataset

    def __iter__(self) -> Iterator[Sample]:
        return synthetic_samples(self.n, self.seed, self.spec, labelled=self.labelled)


@dataclass(frozen=True)
class ShardTask:
    """Shard ``index``: its samples as given, or (``samples`` None) samples ``start .. start+rows-1`` of ``plan``."""

    index: int
    samples: list[Sample] | None = None
    plan: SyntheticPlan | None = None
    start: int = 0
    rows: int = 0

    def materialize(self) -> list[Sample]:
        if self.samples is not None:
            return self.samples
        assert self.plan is not None
        p = self.plan
        return list(synthetic_samples(self.rows, p.seed, p.spec, labelled=p.labelled, start=self.start))


@dataclass(frozen=True)
class BuiltShard:
    """A shard ready to upload: its Parquet bytes, their sha256, its samples' labels (images dropped), the gate's facts."""

    index: int
    data: bytes
    sha256: str
    rows: list[Sample]
    facts: ShardFacts


def shard_tasks(samples: Iterable[Sample] | SyntheticPlan, shard_rows: int = layout.SHARD_ROWS) -> Iterator[ShardTask]:
    """The tasks that build ``samples`` into shards of ``shard_rows``; a plan's are recipes, other samples are read here."""
    if isinstance(samples, SyntheticPlan):
        for index, start in enumerate(range(0, samples.n, shard_rows)):
            yield ShardTask(index, plan=samples, start=start, rows=min(shard_rows, samples.n - start))
        return
    for index, chunk in enumerate(layout.chunked(samples, shard_rows)):
        yield ShardTask(index, samples=chunk)


def build_shard(task: ShardTask) -> BuiltShard:
    """Encode, hash and inspect one shard (in a worker process, or inline)."""
    samples = task.materialize()
    data = layout.encode_shard(samples)
    facts = inspect_shard(task.index, data)
    rows = [replace(s, image=b"") for s in samples]  # labels only from here on
    return BuiltShard(task.index, data, hashlib.sha256(data).hexdigest(), rows, facts)


def default_workers() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def build_shards(tasks: Iterable[ShardTask], workers: int | None = None) -> Generator[BuiltShard, None, None]:
    """Build every task's shard, ``workers`` at a time (default: one per core), yielding them in shard order.

    One worker, or a single shard, builds inline: no pool to start for a small dataset. With more, a
    pool of ``spawn``-ed processes is started when the second task arrives; at most ``2 * workers``
    shards are in flight, so an importer reading samples here stays a little ahead and no further.
    """
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ConfigError(f"ingest workers must be at least 1, got {workers}", hint="pass workers=1 for a single process")
    it = iter(tasks)
    first = next(it, None)
    if first is None:
        return
    second = next(it, None) if workers > 1 else None
    if second is None:
        yield build_shard(first)
        for task in it:
            yield build_shard(task)
        return
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    pending: deque[Future[BuiltShard]] = deque(pool.submit(build_shard, t) for t in (first, second))
    try:
        for task in it:
            pending.append(pool.submit(build_shard, task))
            while len(pending) >= 2 * workers:
                yield _result(pending.popleft())
        while pending:
            yield _result(pending.popleft())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _result(future: Future[BuiltShard]) -> BuiltShard:
    try:
        return future.result()
    except BrokenProcessPool as exc:
        raise ConfigError(
            f"an ingest worker process died while building a shard ({exc})",
            hint="workers are spawned and import the main script: a script that ingests must keep its top level under "
            "'if __name__ == \"__main__\":'; otherwise it was most likely killed for memory: "
            "ingest with fewer workers (workers=1 builds in this process)",
        ) from None
