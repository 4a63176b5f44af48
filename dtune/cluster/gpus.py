"""The device maths, as small pure functions with the environment passed in: which GPUs
exist, how they are grouped into workers, and the environment that pins a worker
process to its own (``CUDA_VISIBLE_DEVICES`` holds only that worker's ids, so CUDA,
TensorFlow and PyTorch in it see those GPUs and no others)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Mapping, Sequence

__all__ = [
    "gpu_worker_env",
    "gpu_worker_name",
    "group_gpus",
    "parse_gpu_ids",
    "visible_gpus",
]

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
