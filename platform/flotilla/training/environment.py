"""What ran a model: the interpreter, library versions, device, worker count and backend, for its card.

The card already names the data commit, the code and the resolved config. That is not all that
shapes the weights: torch's kernels, Ray Train's worker gang, DeepSpeed's ZeRO, the device and the
number of ranks (each holds its own shard and BatchNorm statistics) all do. When a model does not
come out the same a second time, comparing two cards' ``environment`` blocks is where to start.

Rank 0 of a run captures it where it trains and the checkpoint carries it to the card: the driver
that publishes the model may be a CPU-only head node and would describe the wrong machine.
Versions come from the installed distributions' metadata (``importlib.metadata``), so nothing is
imported to learn them, and a library that is not installed reads None: a run that finished
training never fails for want of a version string.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

PACKAGES = ("torch", "ray", "deepspeed", "optuna", "lakefs", "lakefs-sdk")
"""The distributions whose versions a card records (``lakefs`` is the SDK flotilla calls, ``lakefs-sdk`` its API client)."""


@dataclass(frozen=True)
class Environment:
    """The environment block of a model card (:meth:`to_dict` is what ``card.json`` holds)."""

    python: str
    packages: Mapping[str, str | None]
    cuda: str | None  # the CUDA torch was built with; None for a CPU-only build
    cuda_available: bool
    device: str  # what the run trained on: "cpu" or e.g. "cuda:0 (NVIDIA H100 80GB HBM3)"
    gpus: tuple[str, ...] = field(default=())  # every GPU the capturing process sees
    platform: str = ""  # OS, release and architecture
    machine: str = ""
    workers: int = 1
    backend: str = "ddp"

    def to_dict(self) -> dict[str, Any]:
        return {
            "python": self.python,
            "packages": dict(self.packages),
            "cuda": self.cuda,
            "cuda_available": self.cuda_available,
            "device": self.device,
            "gpus": list(self.gpus),
            "platform": self.platform,
            "machine": self.machine,
            "workers": self.workers,
            "backend": self.backend,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Environment:
        return cls(
            python=d.get("python", ""),
            packages=dict(d.get("packages", {})),
            cuda=d.get("cuda"),
            cuda_available=bool(d.get("cuda_available", False)),
            device=d.get("device", ""),
            gpus=tuple(d.get("gpus", ())),
            platform=d.get("platform", ""),
            machine=d.get("machine", ""),
            workers=int(d.get("workers", 1)),
            backend=d.get("backend", ""),
        )


def package_version(name: str) -> str | None:
    """The installed version of distribution ``name``, None when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def capture_environment(workers: int, backend: str, device: Any = None) -> Environment:
    """This process's environment, for a run of ``workers`` ranks on ``backend`` (``"ddp"`` or ``"deepspeed"``).

    ``device`` is the torch device the run trains on (a ``torch.device`` or its name); None describes
    what this process would use: its first GPU when it sees one, else the CPU.
    """
    import torch

    available = torch.cuda.is_available()
    gpus = tuple(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) if available else ()
    return Environment(
        python=platform.python_version(),
        packages={name: package_version(name) for name in PACKAGES},
        cuda=torch.version.cuda,
        cuda_available=available,
        device=describe_device(device, available),
        gpus=gpus,
        platform=platform.platform(),
        machine=platform.machine(),
        workers=workers,
        backend=backend,
    )


def describe_device(device: Any, cuda_available: bool) -> str:
    """``"cpu"``, ``"cuda:<i> (<GPU name>)"`` or the device type (``"mps"``, ...) of a torch device (or its name)."""
    import torch

    if device is None:
        device = torch.device("cuda", 0) if cuda_available else torch.device("cpu")
    try:
        device = torch.device(device)
    except (TypeError, RuntimeError):  # not a device torch knows by that name: say what was given
        return str(device)
    if device.type == "cuda" and cuda_available:
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device.type)
