"""The shipped ``cluster.yaml`` read as data, and its variant for Ray's fake multi-node provider.

A plain module, not test code (imported as ``tests.cluster_config``, as ``tests.chaos`` is): the unit test
checks the AWS file and that the variant keeps its node types, the autoscaling test launches the variant.
The variant is derived from the file, never written beside it, so a node type or resource changed in
``cluster.yaml`` is a node type or resource changed in the test: they cannot drift apart.

What the variant changes, and why: the provider (``fake_multinode``: each "instance" is a local raylet the
autoscaler starts in its own process), the head type's name (the fake provider tags its head
``ray.head.default``), CPU counts capped (logical CPUs: a 16-CPU fake node on a 2-core machine would
prestart 16 worker processes), max_workers capped, a small object store per node, an idle timeout of
seconds, and no setup/start commands (there is no instance to run them on). Node type names, resource
names, GPU counts, min_workers and which type is the head are kept.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"
FAKE_HEAD_TYPE = "ray.head.default"  # the type Ray's fake provider gives its head node (not configurable)
PLACEHOLDER = re.compile(r"<set: [^>]+>")
# the "values you must set" block: comment lines at the top of cluster.yaml, one placeholder each
SET_LINE = re.compile(r"^#\s+(<set: [^>]+>)\s+\S")


def load(path: Path = CLUSTER_YAML) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def worker_types(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    head = config["head_node_type"]
    return {name: t for name, t in config["available_node_types"].items() if name != head}


def fake_variant(
    config: dict[str, Any],
    *,
    gcs_address: str,
    max_cpus: int = 2,
    max_nodes_per_type: int = 1,
    idle_timeout_minutes: float = 0.2,
    object_store_bytes: int = 128 * 1024 * 1024,
) -> dict[str, Any]:
    """``config`` (cluster.yaml's shape) as a complete autoscaling config for ``provider: fake_multinode``.

    Complete: the monitor reads the file as it is (``ray up`` would have filled the defaults in), so every
    key Ray's own fake-provider example carries is set here.
    """
    head = config["available_node_types"][config["head_node_type"]]
    types: dict[str, Any] = {
        FAKE_HEAD_TYPE: {"resources": dict(head["resources"]), "node_config": {}, "min_workers": 0, "max_workers": 0}
    }
    for name, t in worker_types(config).items():
        resources = dict(t["resources"])
        resources["CPU"] = min(resources.get("CPU", 0), max_cpus)
        resources["object_store_memory"] = object_store_bytes
        types[name] = {
            "resources": resources,
            "node_config": {},
            "min_workers": t.get("min_workers", 0),
            "max_workers": min(t.get("max_workers", config["max_workers"]), max_nodes_per_type),
        }
    return {
        "cluster_name": f"{config['cluster_name']}-fake",
        "max_workers": min(config["max_workers"], max_nodes_per_type * len(types)),
        "upscaling_speed": config.get("upscaling_speed", 1.0),
        "idle_timeout_minutes": idle_timeout_minutes,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": gcs_address,
        },
        "available_node_types": types,
        "head_node_type": FAKE_HEAD_TYPE,
        "auth": {},
        "docker": {},
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
    }


def same_shape(config: dict[str, Any], variant: dict[str, Any]) -> list[str]:
    """How ``variant`` departs from ``config`` beyond what :func:`fake_variant` changes on purpose (empty: none)."""
    problems = []
    real, fake = worker_types(config), worker_types(variant)
    if set(real) != set(fake):
        problems.append(f"worker types {sorted(real)} vs {sorted(fake)}")
    for name in set(real) & set(fake):
        r, f = real[name]["resources"], copy.deepcopy(fake[name]["resources"])
        f.pop("object_store_memory", None)
        if set(r) != set(f):
            problems.append(f"{name}: resources {sorted(r)} vs {sorted(f)}")
        if r.get("GPU", 0) != f.get("GPU", 0):
            problems.append(f"{name}: GPU {r.get('GPU', 0)} vs {f.get('GPU', 0)}")
        if (r.get("CPU", 0) > 0) != (f.get("CPU", 0) > 0):
            problems.append(f"{name}: CPU {r.get('CPU')} vs {f.get('CPU')}")
        if real[name].get("min_workers", 0) != fake[name].get("min_workers", 0):
            problems.append(f"{name}: min_workers differ")
    head_real = config["available_node_types"][config["head_node_type"]]["resources"]
    head_fake = variant["available_node_types"][variant["head_node_type"]]["resources"]
    if head_real != head_fake:
        problems.append(f"head resources {head_real} vs {head_fake}")
    return problems
