"""Feeding the loader's batches to the training device without making the host wait on it.

On CUDA each batch is pinned in the loader's prefetch thread (page-locked host memory, copied there
while the previous step runs) and copied to the device with ``non_blocking=True``: the copy is queued
behind the step's kernels instead of waiting for them, which a copy from ordinary (pageable) memory
does. Elsewhere batches pass through as the numpy arrays the loader yields.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch


def _pinned(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)).pin_memory() for k, v in batch.items()}


def device_batches(data: Any, device: Any, split: str, batch_size: int, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """``data.iter_batches(split, batch_size, **kwargs)`` as the step on ``device`` should receive them."""
    if torch.device(device).type != "cuda":
        yield from data.iter_batches(split, batch_size, **kwargs)
        return
    for batch in data.iter_batches(split, batch_size, transform=_pinned, **kwargs):
        yield {k: v.to(device, non_blocking=True) for k, v in batch.items()}
