"""Dask clusters for a search: connecting to one (:mod:`.connect`), the device maths
(:mod:`.gpus`), the embedded multi-GPU cluster (:mod:`.local`) and ``dtune worker``
(:mod:`.launch`). ``LocalGPUCluster`` imports Dask's distributed on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dtune.cluster.connect import cluster_slots, connect
from dtune.cluster.gpus import (
    gpu_worker_env,
    gpu_worker_name,
    group_gpus,
    parse_gpu_ids,
    visible_gpus,
)
from dtune.cluster.launch import gpu_worker_commands, launch_gpu_workers

if TYPE_CHECKING:
    from dtune.cluster.local import LocalGPUCluster

__all__ = [
    "LocalGPUCluster",
    "cluster_slots",
    "connect",
    "gpu_worker_commands",
    "gpu_worker_env",
    "gpu_worker_name",
    "group_gpus",
    "launch_gpu_workers",
    "parse_gpu_ids",
    "visible_gpus",
]


def __getattr__(name: str) -> Any:
    if name == "LocalGPUCluster":
        from dtune.cluster.local import LocalGPUCluster

        return LocalGPUCluster
    raise AttributeError(f"module 'dtune.cluster' has no attribute {name!r}")
