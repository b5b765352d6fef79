"""Batch inference on Ray Data: a published model over a dataset pinned to a commit, predictions committed.

::

    infer(hub, "face-family@production", repo="faces", data_ref="main", dataset="incoming")

1. **Plan** (on the driver, before anything is written): the model address resolves to an immutable
   :class:`~flotilla.registry.ModelLocation`, its card names the training commit, the input ref is
   pinned to a commit, the rows to predict are counted and the input's image size is checked
   against the training data's (:func:`plan_inference`). A bad address, an unknown ref, an empty
   dataset or split and a model that does not fit the images all fail here, with nothing written.
2. **Run** (Ray Data): one read task per image shard (:func:`~flotilla.loop.predictor.read_shards`,
   by commit through the hub and the node's cache, as training reads), then ``map_batches`` with the
   :class:`~flotilla.loop.predictor.Predictor` callable class on an actor pool of ``concurrency``
   actors, each loading the model once (``num_gpus=1`` per actor only with ``use_gpu``).
3. **Write** on an ``infer-*`` branch cut from the input commit, through ``repo.transact``:
   Parquet parts of up to :data:`PART_ROWS` rows, committed with an
   :class:`~flotilla.lineage.InferenceCommit` (model URI, the model's training commit, the input
   commit, dataset, split, rows), merged into ``merge_into`` when asked. Any failure before the
   commit deletes the branch: predictions are committed whole or not at all.

Layout (columns: :mod:`flotilla.loop.predictor`; the manifest: :mod:`flotilla.loop.predictions`)::

    predictions/<run>/<model>/<dataset>@<input commit[:12]>/<split|all>/part-00000.parquet
                                                                        /predictions.json

The input commit is the dataset's *content* commit (the newest that changed it,
:func:`~flotilla.loop.predictions.content_commit`): predicting ``main`` twice while only other
paths changed finds the same directory, and a monitor reuses the predictions.

The model's name (``<run>/<model>``) is in the path because a ``strategy: separate`` run has one
model per task. Rows arrive at the driver in no particular order and are written in that order.
"""

from __future__ import annotations

import io
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, cast

from flotilla.cluster.connect import ensure_ray
from flotilla.cluster.fit import check_fits
from flotilla.data.gate import require_clean
from flotilla.data.layout import SPLITS
from flotilla.data.loader import HubDataset
from flotilla.data.pinning import DataRef, resolve_data
from flotilla.errors import FlotillaError, MonitoringError, NotFoundError, SpecError
from flotilla.hub.client import Hub
from flotilla.hub.experiment import Retention
from flotilla.lineage import InferenceCommit, ModelCard
from flotilla.loop.predictions import MANIFEST, PredictionSet, content_commit, find_predictions, predictions_dir
from flotilla.loop.predictor import Predictor, read_shards
from flotilla.names import branch_id, check_branch_id
from flotilla.registry import ModelLocation, read_card, resolve

if TYPE_CHECKING:
    import pyarrow as pa

PART_ROWS = 50_000
Progress = Callable[[int, int], None]  # (rows done, rows in all)


@dataclass(frozen=True)
class InferencePlan:
    """What one inference reads, fixed before anything runs (:func:`plan_inference`)."""

    model: ModelLocation
    card: ModelCard
    data: DataRef
    split: str | None
    rows: int
    image_size: int

    @property
    def path(self) -> str:
        return predictions_dir(self.model, self.data, self.split)


@dataclass(frozen=True)
class InferenceResult:
    """Where the predictions were committed, what they came from, and how fast they were made."""

    model_uri: str
    model_data_commit: str
    repo: str
    dataset: str
    input_commit: str
    split: str | None
    branch: str
    commit: str
    merge_commit: str | None
    path: str
    files: tuple[str, ...]
    rows: int
    wall_s: float  # the Ray Data pipeline, from the first read to the last row at the driver
    samples_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def actor_options(*, use_gpu: bool, cpus_per_actor: float) -> dict[str, float]:
    """The resources each predictor actor asks Ray for: a GPU only when asked."""
    return {"num_cpus": cpus_per_actor, **({"num_gpus": 1.0} if use_gpu else {})}


READ_CPUS = 0.25

# A killed worker is retried, not fatal (tests/integration/test_inference_faults.py): a Predictor actor is
# recreated and the batches it held resubmitted, a read task run again. Ray Data's defaults today; pinned so an
# upgrade cannot turn a killed worker into a failed inference. No row can arrive twice: Ray returns each task's
# output once, and only the driver writes parts, numbered as the rows reach it.
PREDICTOR_RETRIES: dict[str, int] = {"max_restarts": -1, "max_task_retries": -1}
READ_RETRIES: dict[str, int] = {"max_retries": 3}


def read_cpus(cpus_per_actor: float) -> float:
    """What one shard read asks for: a quarter CPU, and never more than an actor.

    Decoding a shard is about a tenth of the work of predicting it (bench/inference.py: a whole CPU
    per read sat mostly idle and halved the rate); and on nodes of 1 CPU, two half-CPU actors left
    no node a whole CPU for a 1-CPU read, so the pipeline waited for ever.
    """
    return min(READ_CPUS, cpus_per_actor)


def pool_needs(*, concurrency: int, cpus_per_actor: float, use_gpu: bool) -> dict[str, float]:
    """The least a cluster must hold for the pipeline to move: the whole actor pool *and* one read beside it.

    Ray Data starts the pool first; a pool that takes every CPU leaves none for the reads that feed it,
    and nothing fails: it waits for ever. So that is refused up front, like any work bigger than the cluster.
    """
    need = {"CPU": concurrency * cpus_per_actor + read_cpus(cpus_per_actor)}
    return need | ({"GPU": float(concurrency)} if use_gpu else {})


def _native_size(ref: DataRef, credentials: Any) -> tuple[int, int]:
    """The stored size (width, height) of a dataset's first image: one shard read, one image decoded."""
    from PIL import Image

    data = HubDataset(ref, credentials)
    if not data.manifest.shards:
        raise SpecError(f"dataset {ref.dataset!r} at {ref.commit[:12]} has no image shards", hint="ingest it again")
    first = data.read_shard(data.manifest.shards[0]).column("image")[0].as_py()
    with Image.open(io.BytesIO(first)) as im:
        return im.size


def plan_inference(
    hub: Hub,
    model: str,
    *,
    repo: str,
    data_ref: str,
    dataset: str,
    split: str | None = None,
    allow_resize: bool = False,
) -> InferencePlan:
    """Resolve and check everything an inference reads; raise before anything is written.

    The model is fed what training fed it: images resized to its ``data.image_size``. An input whose
    stored images are another size than the model's training data is refused unless
    ``allow_resize``: resampling changes what the model sees (a 32-pixel face blown up to 64 is not
    a 64-pixel face), so its predictions would silently describe other data.
    """
    if split is not None and split not in SPLITS:
        raise SpecError(f"unknown split {split!r}", hint=f"use one of {', '.join(SPLITS)}, or none for every sample")
    location = resolve(hub, model, repo)
    card = read_card(hub.repo(location.repo), location)
    ref = content_commit(hub.repo(repo), resolve_data(hub, repo, data_ref, dataset))
    data = HubDataset(ref, hub.credentials)
    rows = data.labels.num_rows if split is None else data.split_size(split)
    if rows == 0:
        where = f"split {split!r} of dataset {dataset!r}" if split else f"dataset {dataset!r}"
        raise SpecError(
            f"{where} at {data_ref!r} ({ref.commit[:12]}) has no samples: nothing to infer",
            hint="pick another split (or none for every sample), or ingest data first",
        )
    image_size = int((card.config.get("data") or {}).get("image_size") or 0)
    trained = DataRef(card.data.repo, card.data.commit, card.data.dataset, card.data.ref)
    want, have = _native_size(trained, hub.credentials), _native_size(ref, hub.credentials)
    if have != want and not allow_resize:
        raise SpecError(
            f"model {location.name} was trained on {want[0]}x{want[1]} images ({trained.dataset!r}); dataset {dataset!r} "
            f"holds {have[0]}x{have[1]} images",
            hint="infer on data of the training size, or pass allow_resize (--allow-resize) to resize them "
            f"to the model's {image_size or want[0]} pixels anyway",
        )
    return InferencePlan(location, card, ref, split, rows, image_size or want[0])


def _progress_lines(what: str) -> Progress:
    """Default progress: one line on stderr at most every 2 s, and one at the end."""
    t0, last = time.monotonic(), [0.0]

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 2 or done >= total:
            last[0] = now
            rate = done / max(now - t0, 1e-9)
            print(f"[flotilla] infer {what}: {done}/{total} rows ({rate:.0f} samples/s)", file=sys.stderr, flush=True)

    return show


def _parquet(tables: list[pa.Table]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.concat_tables(tables), buf, compression="zstd")
    return buf.getvalue()


def infer(
    hub: Hub | None,
    model: str,
    *,
    repo: str,
    data_ref: str,
    dataset: str,
    split: str | None = None,
    batch_size: int = 256,
    concurrency: int = 1,
    cpus_per_actor: float = 1.0,
    use_gpu: bool = False,
    allow_resize: bool = False,
    merge_into: str | None = None,
    address: str | None = None,
    on_progress: Progress | None = None,
) -> InferenceResult:
    """Predict every sample of ``dataset`` at ``data_ref`` (one ``split``, or all) with ``model``; commit the predictions.

    ``model``: a run id, ``<family>@<alias>`` or a ``lakefs://`` URI (its repository defaults to
    ``repo``). ``concurrency`` actors of ``cpus_per_actor`` CPUs (and one GPU each with ``use_gpu``)
    take batches of ``batch_size`` images. ``merge_into``: a branch the predictions are merged into
    (the ``infer-*`` branch is kept either way). ``address``: the Ray cluster (default: the one
    this process is connected to, or a local Ray). ``on_progress(rows_done, rows)``: default, a line
    on stderr every few seconds.
    """
    if batch_size < 1 or concurrency < 1 or cpus_per_actor <= 0:
        raise SpecError("batch_size and concurrency must be at least 1 and cpus_per_actor above 0")
    hub = hub or Hub()
    plan = plan_inference(hub, model, repo=repo, data_ref=data_ref, dataset=dataset, split=split, allow_resize=allow_resize)
    r = hub.repo(repo)
    if merge_into:
        check_branch_id(merge_into)
        if not r.branch_exists(merge_into):
            raise NotFoundError(
                f"merge_into: no branch {merge_into!r} in repository {repo!r}", hint="create it first, or leave it out"
            )
        require_clean(r, merge_into, f"merge predictions into {merge_into!r}")
    fixed = ensure_ray(address)
    resources = actor_options(use_gpu=use_gpu, cpus_per_actor=cpus_per_actor)
    check_fits(
        pool_needs(concurrency=concurrency, cpus_per_actor=cpus_per_actor, use_gpu=use_gpu),
        local=fixed,
        what=f"an inference pool of {concurrency} actor(s) of {cpus_per_actor:g} CPU with a shard read beside it",
        hint="lower concurrency or cpus_per_actor (the reads need CPU beside the actors), or use a bigger cluster (--address)",
    )
    progress = on_progress or _progress_lines(f"{plan.model.name} on {dataset}@{plan.data.commit[:12]}")
    record = InferenceCommit(plan.model.uri, plan.card.data.commit, plan.data.commit, dataset, split or "", plan.rows)
    name = f"{plan.model.run_id}-{plan.model.model}-{dataset}-{plan.data.commit[:8]}-{secrets.token_hex(2)}"
    exp = r.transact(
        name,
        plan.data.commit,
        prefix="infer-",
        merge_into=merge_into,
        message=f"Predictions of {plan.model.name} on {dataset}@{plan.data.commit[:12]} ({split or 'all'}): {plan.rows} rows",
        metadata=record.to_metadata(),
        retention=Retention(on_success="keep", on_failure="delete"),
        branch=branch_id(name, prefix="infer-"),
    )
    with exp:
        files, rows, wall = _run(hub, plan, exp.put, batch_size, concurrency, use_gpu, cpus_per_actor, resources, progress)
        if rows != plan.rows:
            raise FlotillaError(
                f"inference wrote {rows} rows for {plan.rows} samples of {dataset!r}; nothing was committed",
                hint="a read or an actor lost rows: see the Ray Data logs above, then run it again",
            )
        manifest = PredictionSet(
            plan.model.uri, plan.card.data.commit, repo, dataset, plan.data.commit, split or "", rows, plan.path, tuple(files)
        )
        exp.put(plan.path + MANIFEST, manifest.to_json())
    return InferenceResult(
        plan.model.uri,
        plan.card.data.commit,
        repo,
        dataset,
        plan.data.commit,
        split,
        exp.branch,
        exp.commit_id or "",
        exp.merge_commit,
        plan.path,
        tuple(files),
        rows,
        wall,
        rows / max(wall, 1e-9),
    )


def _run(
    hub: Hub,
    plan: InferencePlan,
    put: Callable[[str, bytes], Any],
    batch_size: int,
    concurrency: int,
    use_gpu: bool,
    cpus_per_actor: float,
    resources: dict[str, float],
    progress: Progress,
) -> tuple[list[str], int, float]:
    """The Ray Data pipeline; Parquet parts put through ``put`` as rows arrive. (files, rows, seconds)."""
    import ray

    data = HubDataset(plan.data, hub.credentials, image_size=plan.image_size)
    shards = len(data.manifest.shards)
    ctx = ray.data.DataContext.get_current()
    bars, ctx.enable_progress_bars = ctx.enable_progress_bars, False  # flotilla's own lines instead
    try:
        ds: Any = ray.data.from_items([{"shard": i} for i in range(shards)], override_num_blocks=shards)
        ds = ds.map_batches(
            read_shards,
            batch_size=1,
            fn_kwargs={"data": data, "split": plan.split},
            num_cpus=read_cpus(cpus_per_actor),
            **READ_RETRIES,
        )
        ds = ds.map_batches(
            Predictor,
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=concurrency),
            fn_constructor_kwargs={
                "location": plan.model,
                "credentials": ray.put(hub.credentials),
                "use_gpu": use_gpu,
                "threads": max(1, round(cpus_per_actor)),
            },
            batch_format="numpy",
            num_cpus=resources["num_cpus"],
            num_gpus=resources.get("num_gpus"),  # None: no GPU asked for
            **PREDICTOR_RETRIES,
        )
        files: list[str] = []
        pending: list[pa.Table] = []
        rows = pending_rows = 0
        t0 = time.monotonic()
        progress(0, plan.rows)
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            table = cast("pa.Table", batch)
            pending.append(table)
            pending_rows += table.num_rows
            rows += table.num_rows
            if pending_rows >= PART_ROWS:
                files.append(_put_part(put, plan.path, len(files), pending))
                pending, pending_rows = [], 0
            progress(rows, plan.rows)
        wall = time.monotonic() - t0
        if pending:
            files.append(_put_part(put, plan.path, len(files), pending))
        return files, rows, wall
    finally:
        ctx.enable_progress_bars = bars


def _put_part(put: Callable[[str, bytes], Any], directory: str, index: int, tables: list[pa.Table]) -> str:
    path = f"{directory}part-{index:05d}.parquet"
    put(path, _parquet(tables))
    return path


def ensure_predictions(
    hub: Hub,
    location: ModelLocation,
    data: DataRef,
    split: str | None,
    *,
    first: tuple[str, ...] = (),
    run: dict[str, Any] | None = None,
    say: Callable[[str], None] | None = None,
    what: str = "data",
) -> PredictionSet:
    """The committed predictions of ``location`` over ``data`` (``split``): found, or made and committed by :func:`infer`.

    Looked for on ``first``, main and the ``infer-*`` branches; when missing, ``run`` (infer's
    options: concurrency, use_gpu, address...) makes them, and ``run=None`` refuses with the
    command to run. ``say`` gets one line per decision ("found on ...", "running inference").
    """
    say = say or (lambda _: None)
    repo = hub.repo(data.repo)
    where = f"{data.dataset}@{data.commit[:12]} ({split or 'all'})"
    found = find_predictions(repo, location, data, split, first=first)
    if found:
        say(f"{what}: {found.rows} predictions of {where} found on {found.ref!r}")
        return found
    if run is None:
        raise MonitoringError(
            f"no predictions of {location.name} on {where} on {', '.join((*first, 'main'))} or any infer-* branch",
            hint=f"run `flotilla infer {location.name} --data {data.repo}/{data.ref or data.commit}/{data.dataset}` first, "
            "or let monitor make them (leave out --no-infer)",
        )
    say(f"{what}: no predictions of {where} yet; running inference")
    result = infer(hub, location.uri, repo=data.repo, data_ref=data.commit, dataset=data.dataset, split=split, **run)
    made = find_predictions(repo, location, data, split, first=(result.branch,))
    if made is None:  # infer committed them a moment ago: anything else is a bug worth a loud error
        raise MonitoringError(f"inference committed {result.path} on {result.branch} but its manifest is not readable there")
    return made
