"""Check dtune on a machine with real NVIDIA GPUs: pinning, early stopping, resume.

    python scripts/gpu_check.py [--trials 24] [--epochs 27] [--out gpu_check.json]

Needs PyTorch with CUDA on the workers (the check's objective trains a small network
with it; dtune itself does not need PyTorch). It runs, on 127.0.0.1:

1. GPU discovery: what ``nvidia-smi -L`` lists and what ``visible_gpus()`` makes of it.
2. A ``dask scheduler`` and ``dtune worker`` subprocesses, as on a real cluster: one
   worker per GPU, each checked from inside a task (``CUDA_VISIBLE_DEVICES``, the
   ``GPU`` resource, the device PyTorch sees).
3. An ASHA search on them, each trial training a network on the digits on its GPU,
   reporting every epoch and saving a checkpoint in ``dtune.checkpoint_file``. One
   trial's worker process exits mid-trial (as a lost machine would); the Nanny starts a
   new one, Dask runs the trial again, and it goes on from its checkpoint.
4. ``LocalGPUCluster()`` (the notebook path) on the GPUs it finds by itself.

It prints what it found and writes it as JSON; it exits non-zero if a check fails.
"""

from __future__ import annotations

import argparse
import collections
import functools
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import dtune
from dtune.cluster.gpus import visible_gpus
from dtune.stats import utilization


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def what_the_worker_sees() -> dict[str, Any]:
    """Run inside a task: the worker's pinning as CUDA and PyTorch see it."""
    import torch

    return {
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "CUDA_DEVICE_ORDER": os.environ.get("CUDA_DEVICE_ORDER"),
        "cuda_available": torch.cuda.is_available(),
        "device_count": torch.cuda.device_count(),
        "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "pid": os.getpid(),
    }


def train(
    lr: float,
    width: int,
    dropout: float,
    *,
    epochs: int,
    checkpoints: str,
    dies: str,
    device: str = "cuda",
) -> float:
    """Train an MLP on the digits on this worker's GPU; report each epoch's validation
    loss; go on from the trial's checkpoint if there is one. The first trial to reach
    epoch 4 exits its worker process, once: ``dies`` is left behind with its number."""
    import torch
    from sklearn.datasets import load_digits

    trial = dtune.current_trial()
    assert trial is not None
    on = torch.device(device)
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32, device=on)
    y = torch.tensor(y, device=on)
    x_train, y_train, x_val, y_val = x[:1347], y[:1347], x[1347:], y[1347:]
    torch.manual_seed(trial.number)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, width),
        torch.nn.ReLU(),
        torch.nn.Dropout(dropout),
        torch.nn.Linear(width, 10),
    ).to(on)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    with dtune.checkpoint_file(checkpoints, ".pt") as path:  # gone when the trial ends
        done = 0
        if path.exists():
            saved = torch.load(path, map_location=on)
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            done = saved["epoch"]
            print(f"trial {trial.number}: resumed after epoch {done}", flush=True)
        loss = float("inf")
        for epoch in range(done + 1, epochs + 1):
            if epoch == 4 and _first_to(dies, trial.number):
                time.sleep(1.0)  # the reports of epochs 1-3 leave first
                os._exit(1)
            model.train()
            for batch in torch.randperm(len(x_train), device=on).split(64):
                optimizer.zero_grad()
                logits = model(x_train[batch])
                torch.nn.functional.cross_entropy(logits, y_train[batch]).backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                loss = float(torch.nn.functional.cross_entropy(model(x_val), y_val))
            memory = torch.cuda.max_memory_allocated() if on.type == "cuda" else 0
            dtune.report(loss, epoch, memory_mb=memory / 2**20)
            temporary = path.parent / f"{path.name}.tmp"
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
            torch.save({**state, "epoch": epoch}, temporary)
            os.replace(temporary, path)
        return loss


def _first_to(marker: str, number: int) -> bool:
    """Leave ``marker`` holding ``number``, unless some trial already has."""
    try:
        descriptor = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(descriptor, str(number).encode())
    os.close(descriptor)
    return True


def _start(module_and_args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """``python -m MODULE ARGS...``, its output to ``log``."""
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", *module_and_args],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def check_cluster(args: argparse.Namespace, work: Path, found: dict[str, Any]) -> list[str]:
    from distributed import Client

    failures: list[str] = []
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = _start(
        ["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
         "--dashboard-address", ":0"],
        work / "scheduler.log",
    )  # fmt: skip
    started = time.time()
    workers = _start(["dtune.cli", "worker", address], work / "workers.log")
    n_gpus = len(found["visible_gpus"])
    try:
        client = Client(address, timeout=60)
        client.wait_for_workers(n_gpus, timeout=120)
        found["workers_up_s"] = round(time.time() - started, 2)
        info = client.scheduler_info()["workers"]
        found["workers"] = {w["name"]: {"resources": w["resources"]} for w in info.values()}
        for address_, seen in client.run(what_the_worker_sees).items():
            name = info[address_]["name"]
            found["workers"][name].update(seen)
        pinned = sorted(w["CUDA_VISIBLE_DEVICES"] for w in found["workers"].values())
        if pinned != sorted(found["visible_gpus"]):
            failures.append(f"workers pinned to {pinned}, GPUs {found['visible_gpus']}")
        for name, seen in found["workers"].items():
            wrong_count = args.device == "cuda" and seen["device_count"] != 1
            if wrong_count or seen["resources"].get("GPU") != 1:
                failures.append(f"{name} sees {seen['device_count']} GPUs, {seen['resources']}")

        checkpoints = work / "checkpoints"
        checkpoints.mkdir()
        study = dtune.Study(
            {
                "lr": dtune.Real(1e-4, 1e-1, prior="log-uniform"),
                "width": dtune.Integer(16, 512),
                "dropout": dtune.Real(0.0, 0.5),
            },
            name="gpu-check", storage=str(work / "gpu.db"), random_state=0,
            pruner=dtune.ASHA(min_resource=1, max_resource=args.epochs, reduction_factor=3),
        )  # fmt: skip
        objective = functools.partial(
            train,
            epochs=args.epochs,
            checkpoints=str(checkpoints),
            dies=str(work / "died"),
            device=args.device,
        )
        called = time.time()
        study.optimize(objective, n_trials=args.trials, client=client, progress=False)
        wall = time.time() - called
        trials = study.trials
        states = collections.Counter(t.state.value for t in trials)
        worker_s = sum(t.duration or 0.0 for t in trials)
        found["search"] = {
            "trials": len(trials),
            "states": dict(states),
            "wall_s_from_the_call": round(wall, 2),
            "worker_s": round(worker_s, 2),
            "utilization": round(utilization(trials), 3),
            "utilization_from_the_call": round(worker_s / (wall * n_gpus), 3),
            "best_value": study.best_trial.value,
            "devices": sorted({str(t.device) for t in trials}),
            "max_memory_mb": max(
                (r.metrics.get("memory_mb", 0.0) for t in trials for r in t.reports),
                default=0.0,
            ),
        }
        if states["PRUNED"] == 0:
            failures.append("ASHA pruned no trial")
        marker = work / "died"
        if not marker.exists():
            failures.append("no trial reached epoch 4, so no worker was killed")
        else:
            died = next(t for t in trials if t.number == int(marker.read_text()))
            steps = [r.step for r in died.reports]
            found["killed_trial"] = {
                "number": died.number,
                "state": died.state.value,
                "steps": steps,
            }
            if steps != list(range(1, len(steps) + 1)):
                failures.append(f"trial {died.number} reported steps {steps}")
            resumed = f"trial {died.number}: resumed after epoch 3"
            if resumed not in (work / "workers.log").read_text():
                failures.append(f"trial {died.number} did not resume from its checkpoint")
        left = sorted(p.name for p in checkpoints.iterdir())
        if left:
            failures.append(f"checkpoints left behind: {left}")
        client.close()
    finally:
        workers.terminate()
        try:
            workers.wait(timeout=60)
        except subprocess.TimeoutExpired:
            workers.kill()
        scheduler.terminate()
        scheduler.wait(timeout=30)
    return failures


def check_local_gpu_cluster(found: dict[str, Any]) -> list[str]:
    from distributed import Client

    started = time.time()
    with dtune.LocalGPUCluster() as cluster, Client(cluster) as client:
        seen = client.run(what_the_worker_sees)
        found["local_gpu_cluster"] = {
            "up_s": round(time.time() - started, 2),
            "workers": sorted((s["CUDA_VISIBLE_DEVICES"], s["device_name"]) for s in seen.values()),
        }
    pinned = sorted(s["CUDA_VISIBLE_DEVICES"] for s in seen.values())
    if pinned != sorted(found["visible_gpus"]):
        return [f"LocalGPUCluster pinned {pinned}, GPUs {found['visible_gpus']}"]
    return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=27)
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default="cuda",
        help="cpu: a dry run with no GPU (set CUDA_VISIBLE_DEVICES to the ids to pretend)",
    )
    args = parser.parse_args()
    if importlib.util.find_spec("torch") is None:
        parser.error("the check's trials train with PyTorch: install torch (with CUDA) first")

    found: dict[str, Any] = {}
    nvidia_smi = shutil.which("nvidia-smi")
    found["nvidia_smi_L"] = (
        subprocess.run([nvidia_smi, "-L"], capture_output=True, text=True).stdout.strip()
        if nvidia_smi
        else None
    )
    found["visible_gpus"] = visible_gpus()
    work = Path(tempfile.mkdtemp(prefix="dtune-gpu-check-"))
    failures: list[str] = []
    for check in (lambda: check_cluster(args, work, found), lambda: check_local_gpu_cluster(found)):
        try:
            failures += check()
        except Exception:  # what was found so far is still written out
            traceback.print_exc()
            failures.append(traceback.format_exc(limit=1).strip().splitlines()[-1])
    found["failures"] = failures
    found["logs"] = str(work)
    Path(args.out).write_text(json.dumps(found, indent=2, default=str))
    print(json.dumps(found, indent=2, default=str))
    print("FAILED: " + "; ".join(failures) if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
