"""``dtune worker``: one ``dask worker`` process (with its Nanny) per GPU or group of
GPUs, each pinned to its own devices, until stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from dtune.cluster.gpus import (
    gpu_worker_env,
    gpu_worker_name,
    group_gpus,
    parse_gpu_ids,
    visible_gpus,
)

__all__ = ["gpu_worker_commands", "launch_gpu_workers"]


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
