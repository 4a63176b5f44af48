"""An embedded cluster for one multi-GPU machine: one GPU-pinned worker process per GPU."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from distributed import Nanny, Scheduler, SpecCluster

from dtune.cluster.gpus import (
    gpu_worker_env,
    gpu_worker_name,
    group_gpus,
    parse_gpu_ids,
    visible_gpus,
)

__all__ = ["LocalGPUCluster"]


class LocalGPUCluster(SpecCluster):
    """An embedded cluster for one multi-GPU machine: one Nanny-managed worker process per
    GPU (or per group of ``gpus_per_worker`` GPUs), each with one thread, resource
    ``GPU=gpus_per_worker`` and ``CUDA_VISIBLE_DEVICES`` set to its own id(s).

    The ids are set even where no GPU exists, so the layout can be tried on a CPU.

    Parameters
    ----------
    gpus
        The GPU ids to use (``[0, 1, 2]``, ``"0,1,2"`` or UUIDs); default: the visible ones.
    gpus_per_worker
        GPUs per worker, for trials that use several.
    host
        Interface for the scheduler and workers (127.0.0.1: nothing outside this machine
        can reach them).
    dashboard_address
        Where Dask's dashboard listens.
    **worker_options
        Passed to each :class:`distributed.Nanny` (``memory_limit``, ``security``, …).

    Examples
    --------
    >>> from distributed import Client
    >>> with LocalGPUCluster(gpus=[0, 1]) as cluster, Client(cluster) as client:  # doctest: +SKIP
    ...     client.run(lambda: os.environ["CUDA_VISIBLE_DEVICES"])
    {'tcp://127.0.0.1:40231': '0', 'tcp://127.0.0.1:38115': '1'}
    """

    def __init__(
        self,
        gpus: str | int | Sequence[str | int] | None = None,
        *,
        gpus_per_worker: int = 1,
        host: str = "127.0.0.1",
        dashboard_address: str = "127.0.0.1:8787",
        **worker_options: Any,
    ) -> None:
        ids = visible_gpus() if gpus is None else parse_gpu_ids(gpus)
        groups = group_gpus(ids, gpus_per_worker)
        security = worker_options.get("security")
        scheduler = {
            "cls": Scheduler,
            "options": {"host": host, "dashboard_address": dashboard_address, "security": security},
        }
        workers = {
            gpu_worker_name(devices): {
                "cls": Nanny,
                "options": {
                    "host": host,
                    "nthreads": 1,
                    # Quiet as LocalCluster is: no INFO lines per worker in notebooks.
                    "silence_logs": logging.WARN,
                    "resources": {"GPU": gpus_per_worker},
                    "env": gpu_worker_env(devices),
                    **worker_options,
                },
            }
            for devices in groups
        }
        super().__init__(
            workers=workers,
            scheduler=scheduler,
            security=security,
            name="LocalGPUCluster",
            silence_logs=logging.WARN,
        )
