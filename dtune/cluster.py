"""Dask clusters for a search: connecting to one, the embedded local ones, and the
GPU-pinned workers (one worker process per GPU, or per group of GPUs).

The device maths are small pure functions: :func:`parse_gpu_ids`, :func:`group_gpus`,
:func:`visible_gpus` and :func:`gpu_worker_env`. Pinning happens when a worker process is
spawned, through its environment: ``CUDA_VISIBLE_DEVICES`` holds only that worker's
ids, so CUDA, TensorFlow and PyTorch in it see those GPUs and no others.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from distributed import Nanny, Scheduler, SpecCluster

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "LocalGPUCluster",
    "cluster_slots",
    "connect",
    "gpu_worker_env",
    "group_gpus",
    "launch_gpu_workers",
    "parse_gpu_ids",
    "visible_gpus",
]

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


# An integer index, or a GPU / MIG UUID as ``nvidia-smi -L`` prints it.
_GPU_ID = re.compile(r"\d+|GPU-[0-9a-fA-F][0-9a-fA-F-]*|MIG-[0-9A-Za-z][0-9A-Za-z/-]*")
_SMI_GPU = re.compile(r"^GPU (\d+):")


def parse_gpu_ids(gpus: str | int | Sequence[str | int]) -> list[str]:
    """GPU ids from ``"0,1,2"``, ``[0, 1, 2]`` or UUIDs, checked and without repeats.

    Raises
    ------
    ValueError
        Naming an id that is neither a non-negative integer nor a ``GPU-…``/``MIG-…``
        UUID, a repeated id, or an empty list.

    Examples
    --------
    >>> parse_gpu_ids("0, 1,2")
    ['0', '1', '2']
    >>> parse_gpu_ids([3, "GPU-8f2a1c3e-0b1d-4c2e-9a7f-1e2d3c4b5a69"])
    ['3', 'GPU-8f2a1c3e-0b1d-4c2e-9a7f-1e2d3c4b5a69']
    """
    if isinstance(gpus, bool):
        raise ValueError(f"gpus={gpus!r} is not a GPU id")
    if isinstance(gpus, int):
        items: list[str | int] = [gpus]
    elif isinstance(gpus, str):
        items = [part.strip() for part in gpus.split(",")]
    else:
        items = list(gpus)
    ids = []
    for item in items:
        text = str(item).strip()
        if isinstance(item, bool) or not _GPU_ID.fullmatch(text):
            raise ValueError(
                f"GPU id {item!r} in {gpus!r} is not valid; expected a non-negative integer "
                "index or a GPU-/MIG- UUID as `nvidia-smi -L` prints it"
            )
        if text in ids:
            raise ValueError(f"GPU id {text!r} appears twice in {gpus!r}")
        ids.append(text)
    if not ids:
        raise ValueError(f"gpus={gpus!r} names no GPU")
    return ids


def group_gpus(ids: Sequence[str], per_worker: int = 1) -> list[str]:
    """Split GPU ids into one ``CUDA_VISIBLE_DEVICES`` value per worker.

    Examples
    --------
    >>> group_gpus(["0", "1", "2", "3"], 2)
    ['0,1', '2,3']
    """
    if isinstance(per_worker, bool) or not isinstance(per_worker, int) or per_worker < 1:
        raise ValueError(f"gpus_per_worker={per_worker!r} must be a positive int")
    if len(ids) % per_worker:
        raise ValueError(
            f"{len(ids)} GPUs ({','.join(ids)}) cannot be split into groups of "
            f"gpus_per_worker={per_worker}"
        )
    return [",".join(ids[i : i + per_worker]) for i in range(0, len(ids), per_worker)]


def visible_gpus(
    environ: Mapping[str, str] | None = None, nvidia_smi: str | None = "nvidia-smi"
) -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else those
    ``nvidia-smi -L`` lists.

    Raises
    ------
    ValueError
        When there are none, saying where dtune looked.

    Examples
    --------
    >>> visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"})
    ['2', '3']
    """
    environ = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in environ:
        value = environ["CUDA_VISIBLE_DEVICES"].strip()
        if value in ("", "-1", "NoDevFiles"):
            raise ValueError(
                f"CUDA_VISIBLE_DEVICES={value!r} hides every GPU; unset it or pass --gpus"
            )
        return parse_gpu_ids(value)
    listed: list[str] = []
    if nvidia_smi is not None:
        try:
            out = subprocess.run(
                [nvidia_smi, "-L"], capture_output=True, text=True, timeout=30, check=False
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        listed = [m.group(1) for m in map(_SMI_GPU.match, out.splitlines()) if m]
    if not listed:
        raise ValueError(
            "no GPUs found: CUDA_VISIBLE_DEVICES is not set and `nvidia-smi -L` lists none; "
            "pass the ids to use, e.g. --gpus 0,1"
        )
    return listed


def gpu_worker_env(devices: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment that pins a worker process to ``devices``.

    ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` makes CUDA number GPUs as ``nvidia-smi`` does (its
    default puts the fastest first). ``TF_FORCE_GPU_ALLOW_GROWTH=true`` stops TensorFlow
    from reserving all of the GPU's memory for the life of the worker process at its
    first trial. Both are left as the user set them, if they did.

    Examples
    --------
    >>> gpu_worker_env("1", environ={})["CUDA_VISIBLE_DEVICES"]
    '1'
    """
    environ = os.environ if environ is None else environ
    env = {"CUDA_VISIBLE_DEVICES": devices}
    for name, value in (("CUDA_DEVICE_ORDER", "PCI_BUS_ID"), ("TF_FORCE_GPU_ALLOW_GROWTH", "true")):
        env[name] = environ.get(name, value)
    return env


def gpu_worker_name(devices: str, prefix: str | None = None) -> str:
    """A worker name that says the host and the device, e.g. ``node7-gpu0`` or ``node7-gpu0+1``."""
    return f"{prefix or socket.gethostname()}-gpu{devices.replace(',', '+')}"


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
                    "resources": {"GPU": gpus_per_worker},
                    "env": gpu_worker_env(devices),
                    **worker_options,
                },
            }
            for devices in groups
        }
        super().__init__(
            workers=workers, scheduler=scheduler, security=security, name="LocalGPUCluster"
        )


# Options `dtune worker` sets itself for each worker it starts.
_OWN_WORKER_OPTIONS = (
    "--nthreads",
    "--nworkers",
    "--nprocs",
    "--resources",
    "--name",
    "--no-nanny",
)


def gpu_worker_commands(
    scheduler: str,
    groups: Sequence[str],
    dask_options: Sequence[str] = (),
    name_prefix: str | None = None,
) -> list[tuple[list[str], dict[str, str]]]:
    """The ``dask worker`` command line and environment for each group of GPUs."""
    for option in dask_options:
        if option.split("=")[0] in _OWN_WORKER_OPTIONS:
            raise ValueError(
                f"{option!r}: dtune worker sets {', '.join(_OWN_WORKER_OPTIONS)} itself "
                "(one thread, one worker process under a Nanny, GPU resources, a name "
                "with the device)"
            )
    commands = []
    for devices in groups:
        n_gpus = devices.count(",") + 1
        command = [
            sys.executable,
            "-m",
            "distributed.cli.dask_worker",
            scheduler,
            "--nworkers",
            "1",
            "--nthreads",
            "1",
            "--resources",
            f"GPU={n_gpus}",
            "--name",
            gpu_worker_name(devices, name_prefix),
            *dask_options,
        ]
        commands.append((command, gpu_worker_env(devices)))
    return commands


def launch_gpu_workers(
    scheduler: str,
    gpus: str | Sequence[str | int] | None = None,
    *,
    gpus_per_worker: int = 1,
    name_prefix: str | None = None,
    dask_options: Sequence[str] = (),
) -> int:
    """Run one ``dask worker`` (with its Nanny) per GPU group until stopped; the body of
    ``dtune worker``.

    Each worker has one thread, resource ``GPU=gpus_per_worker`` and its own
    ``CUDA_VISIBLE_DEVICES``; its Nanny restarts the worker process if it dies. SIGINT or
    SIGTERM stops them all, each leaving the scheduler cleanly.

    Returns
    -------
    0 when stopped by a signal, otherwise the first non-zero exit status of a worker.
    """
    ids = visible_gpus() if gpus is None else parse_gpu_ids(gpus)
    commands = gpu_worker_commands(
        scheduler, group_gpus(ids, gpus_per_worker), dask_options, name_prefix
    )
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)

    processes: list[subprocess.Popen[bytes]] = []
    # Our own handlers, also for SIGINT: a shell starts background jobs with it ignored.
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for command, env in commands:
            print(
                f"dtune worker: starting a worker with CUDA_VISIBLE_DEVICES="
                f"{env['CUDA_VISIBLE_DEVICES']} for {scheduler}",
                flush=True,
            )
            processes.append(subprocess.Popen(command, env={**os.environ, **env}))
        while any(p.poll() is None for p in processes):
            time.sleep(0.2)
    finally:
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    codes = [p.returncode for p in processes]
    return 0 if stopping else next((c for c in codes if c), 0)
