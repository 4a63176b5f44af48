"""Connecting a search to a Dask cluster: a client, a scheduler address, the client in
use, or an embedded local cluster; and how many trials the cluster runs at once."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["cluster_slots", "connect"]

logger = logging.getLogger("dtune")


@contextmanager
def connect(
    client: Client | str | None = None, *, n_workers: int | None = None, announce: bool = True
) -> Iterator[Client]:
    """Yield a Dask client for a search; close whatever this call started.

    Parameters
    ----------
    client
        A ``distributed.Client``; a scheduler address such as ``"tcp://10.0.0.5:8786"``;
        or None: the client already in use in this process if there is one, otherwise a
        new ``LocalCluster`` of ``n_workers`` single-threaded worker processes on
        127.0.0.1.
    n_workers
        Workers of the embedded cluster (default: one per CPU core).
    announce
        Print where the embedded cluster's Dask dashboard is.

    Examples
    --------
    >>> with connect(n_workers=1, announce=False) as c:  # doctest: +SKIP
    ...     c.submit(sum, [1, 2]).result()
    3
    """
    from distributed import Client, LocalCluster, default_client

    if isinstance(client, str):
        with Client(client) as remote:
            yield remote
        return
    if client is not None:
        yield client
        return
    try:
        yield default_client()
        return
    except ValueError:
        pass  # no client in use: start an embedded cluster
    if n_workers is not None and (isinstance(n_workers, bool) or n_workers < 1):
        raise ValueError(f"n_workers={n_workers!r} must be a positive int")
    with (
        LocalCluster(
            n_workers=n_workers or os.cpu_count() or 1,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:8787",
        ) as cluster,
        Client(cluster) as local,
    ):
        message = f"dtune: started a local Dask cluster; its dashboard: {local.dashboard_link}"
        if announce:
            print(message, flush=True)
        logger.info(message)
        yield local


def cluster_slots(client: Client, gpus_per_trial: int) -> tuple[int, bool]:
    """How many trials the cluster can run at once, and whether they need GPUs.

    When any worker advertises a ``GPU`` resource, slots are the GPUs divided by
    ``gpus_per_trial`` (and trials are submitted with ``resources={"GPU": …}``);
    otherwise they are the workers' threads.
    """
    workers: dict[str, Any] = client.scheduler_info(n_workers=-1)["workers"]
    gpus = [w.get("resources", {}).get("GPU", 0) for w in workers.values()]
    if any(gpus):
        slots = sum(int(g // gpus_per_trial) for g in gpus)
        if slots == 0:
            raise ValueError(
                f"gpus_per_trial={gpus_per_trial} but no worker has that many GPUs (the "
                f"most any has is {max(gpus):g}); start workers with --gpus-per-worker "
                f"{gpus_per_trial}"
            )
        return slots, True
    return sum(int(w.get("nthreads", 1)) for w in workers.values()), False
