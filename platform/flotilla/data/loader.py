"""Loading a dataset for training: pinned to a commit, read through the hub, cached per node.

``flotilla.data.pinning`` turns any ref into a :class:`DataRef` (repository, **commit id**,
dataset) once; everything downstream reads that commit, so every worker of a
run sees the same bytes even if ``main`` moves. :class:`HubDataset` is
picklable (it carries the ref and the hub credentials, never a local path), reads
objects straight from the object store through URLs lakeFS presigns where the hub's blockstore can
(:mod:`flotilla.hub.presign`, ``FLOTILLA_PRESIGN``), else through lakeFS's S3 gateway, so it works on
any node of a cluster, and keeps them in the node's :class:`~flotilla.data.cache.BlobCache` keyed by the
shard's SHA-256 from the manifest (length and hash verified on every read, hit or miss;
manifest and labels against the hash the cache recorded when it fetched them). Training batches
come from each shard's decoded images (:mod:`flotilla.data.decoded`: decoded once per node, memory-mapped,
shared by every process there), gathered a few batches ahead in a background thread
(:mod:`flotilla.data.prefetch`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flotilla.data import deltas, layout
from flotilla.data.cache import BlobCache
from flotilla.data.decoded import DecodedCache, DecodedShard, decode_image, decode_images
from flotilla.data.layout import Manifest, ShardInfo
from flotilla.data.pinning import DataRef
from flotilla.data.prefetch import prefetched
from flotilla.errors import HubError
from flotilla.hub.credentials import HubCredentials
from flotilla.hub.presign import PresignedReads
from flotilla.settings import Settings


def default_cache_dir() -> Path:
    return Settings.from_env().cache / "data"


class HubDataset:
    """One dataset at one commit; batches for one worker (rank) of a run.

    ``decoded=False`` reads images by decoding the shard's PNGs every epoch, as flotilla did before
    the decoded cache (the baseline ``bench/data_path.py`` measures); ``prefetch`` is how many batches
    the background thread may run ahead (0: none, batches made in the caller's thread).
    """

    def __init__(
        self,
        ref: DataRef,
        credentials: HubCredentials,
        *,
        cache_dir: str | Path | None = None,
        cache_max_bytes: int | None = None,
        image_size: int | None = None,
        decoded: bool = True,
        prefetch: int = 2,
    ) -> None:
        self.ref = ref
        self.credentials = credentials
        self.cache_dir = str(cache_dir) if cache_dir else None
        self.cache_max_bytes = cache_max_bytes
        self.image_size = image_size
        self.decoded = decoded
        self.prefetch = prefetch

    def __repr__(self) -> str:
        return f"HubDataset({self.ref.uri(layout.dataset_prefix(self.ref.dataset))})"

    # pickling: drop process-local handles (filesystem, cache, decoded tables)
    def __getstate__(self) -> dict[str, Any]:
        keep = ("ref", "credentials", "cache_dir", "cache_max_bytes", "image_size", "decoded", "prefetch")
        return {k: self.__dict__[k] for k in keep}

    @cached_property
    def _fs(self):
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(**self.credentials.s3_options(), connect_timeout=5, request_timeout=60)

    @cached_property
    def cache(self) -> BlobCache:
        root = Path(self.cache_dir) if self.cache_dir else default_cache_dir()
        return BlobCache(root, self.cache_max_bytes) if self.cache_max_bytes else BlobCache(root)

    @cached_property
    def decoded_cache(self) -> DecodedCache:
        return DecodedCache(self.cache)

    @cached_property
    def _presigned(self) -> PresignedReads:
        return PresignedReads(self.credentials)

    def _read(self, path: str) -> bytes:
        """``path``'s bytes at the pinned commit: presigned where the hub allows it, the gateway otherwise and for
        any object whose direct read fails (:mod:`flotilla.hub.presign`)."""
        return self._presigned.read(self.ref.repo, self.ref.commit, path, lambda: self._read_gateway(path))

    def _read_gateway(self, path: str) -> bytes:
        key = f"{self.ref.repo}/{self.ref.commit}/{path}"
        try:
            with self._fs.open_input_stream(key) as fh:
                return fh.read()
        except OSError as exc:
            raise HubError(
                f"cannot read {self.ref.uri(path)} through the hub's S3 gateway at {self.credentials.endpoint}: {exc}",
                hint="check the hub is up ('flotilla hub status') and reachable from this node",
            ) from None

    def _read_cached(self, path: str, key: str) -> bytes:
        return self.cache.get(key, lambda: self._read(path))

    # ---- metadata -------------------------------------------------------------------
    @cached_property
    def _folded(self) -> tuple[Manifest, pa.Table]:
        """Base manifest and labels with every delta folded in (:mod:`flotilla.data.deltas`), each object cached by commit."""
        name = self.ref.dataset

        def read(path: str) -> bytes:
            return self._read_cached(path, commit_key(self.ref, path))

        base = Manifest.from_json(read(layout.manifest_path(name)))
        labels = layout.decode_table(read(layout.labels_path(name)))
        return deltas.fold(base, labels, deltas.read_deltas(name, self._list, read))

    def _list(self, prefix: str) -> list[str]:
        import pyarrow.fs as pafs

        root = f"{self.ref.repo}/{self.ref.commit}/"
        try:
            infos = self._fs.get_file_info(pafs.FileSelector(root + prefix, allow_not_found=True))
        except OSError as exc:
            raise HubError(
                f"cannot list {self.ref.uri(prefix)} through the hub's S3 gateway: {exc}",
                hint="check the hub is up ('flotilla hub status') and reachable from this node",
            ) from None
        return [i.path[len(root) :] for i in infos if i.type == pafs.FileType.File]

    @property
    def manifest(self) -> Manifest:
        return self._folded[0]

    @property
    def labels(self) -> pa.Table:
        return self._folded[1]

    def read_shard(self, shard: ShardInfo) -> pa.Table:
        """One shard, checked against the length and sha256 its manifest recorded, on every read (cached or not)."""
        data = self.cache.get(
            shard.sha256,
            lambda: self._read(shard.path),
            sha256=shard.sha256,
            size=shard.bytes,
            what=f"{self.ref.uri(shard.path)} (as its manifest records it)",
        )
        return layout.decode_table(data)

    def split_size(self, split: str) -> int:
        return int(pc.sum(pc.equal(self.labels.column("split"), split)).as_py() or 0)

    def decoded_shard(self, index: int) -> DecodedShard:
        """Shard ``index``'s sample ids and decoded images at ``image_size``, memory-mapped from the node
        cache (decoded and written there by the first process on the node that needs them)."""
        memo = self.__dict__.setdefault("_decoded_memo", {})
        if index not in memo:
            shard = self.manifest.shards[index]
            memo[index] = self.decoded_cache.get(
                shard.sha256, self.image_size, lambda: self.read_shard(shard), what=self.ref.uri(shard.path)
            )
        return memo[index]

    def _decoded_for(self, index: int) -> bool:
        """Whether shard ``index`` is read from its decoded images: not once the node cache cannot be written
        (:attr:`BlobCache.unwritable`): held in memory they could exhaust it, so PNGs are decoded per epoch instead."""
        return self.decoded and (index in self.__dict__.get("_decoded_memo", ()) or self.cache.unwritable is None)

    def _label_rows(self, index: int) -> np.ndarray:
        """Per row of shard ``index``, its row in the labels table (-1: removed, in no split); read once."""
        memo = self.__dict__.setdefault("_label_rows_memo", {})
        if index not in memo:
            if self._decoded_for(index):
                ids: Sequence[str] = self.decoded_shard(index).sample_ids
            else:
                ids = self.read_shard(self.manifest.shards[index]).column("sample_id").to_pylist()
            index_of = self._label_index
            memo[index] = np.fromiter((index_of.get(sid, -1) for sid in ids), dtype=np.int64, count=len(ids))
        return memo[index]

    def _split_rows(self, split: str) -> list[np.ndarray]:
        """Per shard, the row numbers of ``split``'s samples (sample ids only are read, once)."""
        cache = self.__dict__.setdefault("_split_rows_cache", {})
        if split not in cache:
            code = self._split_codes
            want = layout.SPLITS.index(split)
            rows = []
            for i in range(len(self.manifest.shards)):
                lab = self._label_rows(i)
                known = lab >= 0
                rows.append(np.flatnonzero(known)[code[lab[known]] == want].astype(np.int64))
            cache[split] = rows
        return cache[split]

    @cached_property
    def _split_codes(self) -> np.ndarray:
        """Each label row's split as its index in ``layout.SPLITS`` (-1 for any other value)."""
        codes = {name: i for i, name in enumerate(layout.SPLITS)}
        return np.array([codes.get(s, -1) for s in self._splits], dtype=np.int64)

    @cached_property
    def _label_arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per declared label column, (values, known) over the label rows, as batches carry them."""
        out = {}
        for c in self.manifest.label_schema:
            dtype = np.float32 if c.kind == "regression" else np.int64
            values = self.labels.column(c.name).to_pylist()
            out[c.name] = (
                np.array([0 if v is None else v for v in values], dtype=dtype),
                np.array([v is not None for v in values], dtype=bool),
            )
        return out

    def _rows_in_split(self, table: pa.Table, split: str | None) -> np.ndarray:
        """Rows of ``split`` (any split: None); an image without a label row (a removed sample) is in none."""
        splits, index = self._splits, self._label_index
        return np.array(
            [
                j
                for j, sid in enumerate(table.column("sample_id").to_pylist())
                if (i := index.get(sid)) is not None and (split is None or splits[i] == split)
            ],
            dtype=np.int64,
        )

    @cached_property
    def _splits(self) -> list[str]:
        return self.labels.column("split").to_pylist()

    @cached_property
    def _label_index(self) -> dict[str, int]:
        return {sid: i for i, sid in enumerate(self.labels.column("sample_id").to_pylist())}

    # ---- batches ----------------------------------------------------------------------
    def iter_batches(
        self,
        split: str = "train",
        batch_size: int = 256,
        *,
        shuffle: bool = True,
        seed: int = 0,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        equal: bool = True,
        transform: Callable[[dict[str, np.ndarray]], Any] | None = None,
    ) -> Iterator[Any]:
        """Yield batches for ``rank`` of ``world_size``: every rank gets the same number of samples
        (so DDP never waits on a rank that ran out), shards in a seeded per-epoch order, rows shuffled
        within each shard. ``equal=False`` (evaluation, which has no per-step collective) gives every
        sample to exactly one rank instead, so metrics cover the whole split whatever the world size.
        Each batch: ``image`` uint8 [B,H,W,3]; each label column the manifest declares, float32 for
        regression and int64 codes otherwise (0 where unknown), with its ``mask_<column>`` bool.
        ``transform`` runs on each batch in the prefetch thread (training pins it there for the GPU)."""
        if split not in layout.SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {layout.SPLITS}")
        rng = np.random.default_rng([seed, epoch])
        shards = self.manifest.shards
        order = rng.permutation(len(shards)) if shuffle else np.arange(len(shards))
        split_rows = self._split_rows(split)
        plan: list[tuple[int, np.ndarray]] = []
        for i in order:
            rows = split_rows[i]
            if shuffle:
                rows = rng.permutation(rows)
            mine = rows[rank::world_size]
            if equal:
                mine = mine[: len(rows) // world_size]  # floor per shard: equal on every rank
            if len(mine):
                plan.append((int(i), mine))
        self._label_arrays  # noqa: B018 -- built here, not first in the prefetch thread
        batches = _rebatch(self._chunks(plan), batch_size, drop_last)
        yield from prefetched(batches if transform is None else map(transform, batches), self.prefetch)

    def _chunks(self, plan: list[tuple[int, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
        """Per planned shard, its chosen rows in order as one batch-shaped dict (images gathered once)."""
        for i, mine in plan:
            if self._decoded_for(i):
                images = self.decoded_shard(i).images[mine]  # fancy indexing: a copy of these rows only
            else:
                table = self.read_shard(self.manifest.shards[i]).take(pa.array(mine))
                images = decode_images(
                    table.column("image").to_pylist(), self.image_size, self.ref.uri(self.manifest.shards[i].path)
                )
            lab = self._label_rows(i)[mine]
            out = {"image": images}
            for col, (values, known) in self._label_arrays.items():
                out["mask_" + col] = known[lab]
                out[col] = values[lab]
            yield out

    def _collate(self, items: list[tuple[str, bytes]]) -> dict[str, np.ndarray]:
        idx = [self._label_index[sid] for sid, _ in items]
        out: dict[str, np.ndarray] = {"image": np.stack([self._decode(b) for _, b in items])}
        for c in self.manifest.label_schema:
            col, dtype = c.name, np.float32 if c.kind == "regression" else np.int64
            values = self.labels.column(col).take(pa.array(idx)).to_pylist()
            out["mask_" + col] = np.array([v is not None for v in values], dtype=bool)
            out[col] = np.array([0 if v is None else v for v in values], dtype=dtype)
        return out

    def _decode(self, data: bytes) -> np.ndarray:
        return decode_image(data, self.image_size)

    def shard_samples(self, index: int, split: str | None = None) -> tuple[list[str], list[np.ndarray]]:
        """Shard ``index``'s sample ids and decoded images (uint8 [H,W,3], resized to ``image_size`` when set),
        only ``split``'s samples unless ``split`` is None (removed samples never): what batch inference reads,
        one shard at a time."""
        table = self.read_shard(self.manifest.shards[index])
        table = table.take(pa.array(self._rows_in_split(table, split)))
        return table.column("sample_id").to_pylist(), [self._decode(b) for b in table.column("image").to_pylist()]

    # ---- Ray Data -----------------------------------------------------------------------
    def to_ray(self, split: str = "train"):
        """A Ray Data dataset of this split: one read task per shard, on whatever node runs it."""
        import ray

        ds = self
        n = len(self.manifest.shards)

        def rows(item: dict[str, Any]) -> list[dict[str, Any]]:
            table = ds.read_shard(ds.manifest.shards[item["shard"]])
            table = table.take(pa.array(ds._rows_in_split(table, split)))
            keep = list(zip(table.column("sample_id").to_pylist(), table.column("image").to_pylist(), strict=True))
            if not keep:
                return []
            batch = ds._collate(keep)
            return [{k: v[i] for k, v in batch.items()} | {"sample_id": keep[i][0]} for i in range(len(keep))]

        return ray.data.from_items([{"shard": i} for i in range(n)], override_num_blocks=max(1, n)).flat_map(rows)


def commit_key(ref: DataRef, path: str) -> str:
    """The cache key of the object at ``path`` in ``ref``'s commit: objects at a commit never change, so
    (repo, commit, path) is a valid content key. Public because it names where a commit-read object (the
    manifest, the labels) sits in the node-local cache, for tools and tests that inspect that cache."""
    return hashlib.sha256(f"{ref.repo}\0{ref.commit}\0{path}".encode()).hexdigest()


def _rebatch(chunks: Iterator[dict[str, np.ndarray]], batch_size: int, drop_last: bool) -> Iterator[dict[str, np.ndarray]]:
    """Consecutive ``batch_size`` rows across chunks, in order (views of a chunk where a batch lies within one)."""
    pending: list[dict[str, np.ndarray]] = []
    held = 0
    for chunk in chunks:
        n, start = len(chunk["image"]), 0
        if held:
            start = min(n, batch_size - held)
            pending.append({k: v[:start] for k, v in chunk.items()})
            held += start
            if held < batch_size:
                continue
            yield {k: np.concatenate([p[k] for p in pending]) for k in chunk}
            pending, held = [], 0
        while start + batch_size <= n:
            yield {k: v[start : start + batch_size] for k, v in chunk.items()}
            start += batch_size
        if start < n:
            pending, held = [{k: v[start:] for k, v in chunk.items()}], n - start
    if held and not drop_last:
        yield {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
