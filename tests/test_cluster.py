"""GPU-pinned workers on CPU: `dtune worker` and LocalGPUCluster on real processes.

No GPU is needed: pinning is the environment a worker process starts with, which these
tests read back from the workers and from every trial's record.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from distributed import Client

from dtune import Real, Study, TrialState
from dtune.cluster import (
    LocalGPUCluster,
    gpu_worker_env,
    group_gpus,
    parse_gpu_ids,
    visible_gpus,
)
from tests import objectives

UUID = "GPU-8f2a1c3e-0b1d-4c2e-9a7f-1e2d3c4b5a69"


# -- device maths --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "ids"),
    [
        ("0,1,2", ["0", "1", "2"]),
        (" 3 , 1", ["3", "1"]),
        (2, ["2"]),
        ([0, "1"], ["0", "1"]),
        (
            f"{UUID},MIG-4b0e5c1a-2f3d-5e6f-8a9b-0c1d2e3f4a5b",
            [UUID, "MIG-4b0e5c1a-2f3d-5e6f-8a9b-0c1d2e3f4a5b"],
        ),
    ],
)
def test_gpu_ids_are_parsed(spec, ids):
    assert parse_gpu_ids(spec) == ids


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("0,gpu1", "'gpu1'"),
        ("-1", "'-1'"),
        ("0,,1", "''"),
        ([1.5], "1.5"),
        ("1,1", "'1'"),
        ("", "''"),
    ],
)
def test_bad_gpu_ids_are_named(spec, named):
    with pytest.raises(ValueError, match=named):
        parse_gpu_ids(spec)


def test_gpus_are_grouped_per_worker():
    assert group_gpus(["0", "1", "2", "3"], 2) == ["0,1", "2,3"]
    assert group_gpus(["5"], 1) == ["5"]
    with pytest.raises(ValueError, match="3 GPUs"):
        group_gpus(["0", "1", "2"], 2)
    with pytest.raises(ValueError, match="gpus_per_worker=0"):
        group_gpus(["0"], 0)


def test_visible_gpus_come_from_the_environment_or_nvidia_smi(tmp_path):
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1,3"}) == ["1", "3"]
    with pytest.raises(ValueError, match="hides every GPU"):
        visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"})
    # a stand-in nvidia-smi that prints what the real one prints on a two-GPU machine
    smi = tmp_path / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\n"
        f"echo 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: {UUID})'\n"
        "echo 'GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-11111111-2222-3333-4444-555555555555)'\n"
        "echo '  MIG 1g.10gb     Device  0: (UUID: MIG-4b0e5c1a-2f3d-5e6f-8a9b-0c1d2e3f4a5b)'\n"
    )
    smi.chmod(0o755)
    assert visible_gpus({}, nvidia_smi=str(smi)) == ["0", "1"]
    with pytest.raises(ValueError, match="no GPUs found"):
        visible_gpus({}, nvidia_smi=str(tmp_path / "missing"))


def test_worker_env_pins_the_device_and_keeps_user_settings():
    env = gpu_worker_env("0,1", environ={"TF_FORCE_GPU_ALLOW_GROWTH": "false"})
    assert env == {
        "CUDA_VISIBLE_DEVICES": "0,1",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "TF_FORCE_GPU_ALLOW_GROWTH": "false",
    }


# -- real processes ------------------------------------------------------------------------


def _dtune_worker(scheduler: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "dtune.cli", "worker", scheduler, "--name-prefix", "test", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _devices(client: Client) -> dict[str, tuple[str, float]]:
    """Worker name → (CUDA_VISIBLE_DEVICES, GPU resource)."""
    env = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return {w["name"]: (env[a], w["resources"].get("GPU")) for a, w in workers.items()}


def _assert_one_trial_per_device_at_a_time(study: Study) -> None:
    trials = [t for t in study.trials if t.state is TrialState.COMPLETE]
    for t in trials:
        assert t.device == t.metrics["seen"]  # recorded, and what the objective saw
    for a in trials:
        for b in trials:
            if a.number < b.number and a.device == b.device:
                assert a.finished <= b.started or b.finished <= a.started, (a, b)


@pytest.mark.slow
def test_dtune_worker_pins_one_gpu_per_worker_and_survives_a_killed_worker(scheduler):
    process = _dtune_worker(scheduler, "--gpus", "0,1,2")
    try:
        with Client(scheduler, timeout=60) as client:
            client.wait_for_workers(3, timeout=120)
            assert _devices(client) == {
                "test-gpu0": ("0", 1),
                "test-gpu1": ("1", 1),
                "test-gpu2": ("2", 1),
            }
            victim = next(
                a for a, w in client.scheduler_info()["workers"].items() if w["name"] == "test-gpu1"
            )
            victim_pid = client.run(os.getpid, workers=[victim])[victim]

            killed: list[int] = []

            def kill_once(study, trial):
                # Once GPU 1 has finished a trial: which trials a worker gets first, and
                # whether it holds a queued one, is Dask's choice.
                if trial.worker == "test-gpu1" and not killed:
                    killed.append(trial.number)
                    os.kill(victim_pid, signal.SIGKILL)

            study = Study({"x": Real(0.0, 1.0)}, objective_key="loss", random_state=0)
            study.optimize(
                objectives.device_nap, 12, client=client, callbacks=[kill_once], progress=False
            )
            assert killed
            assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 12
            assert {t.device for t in study.trials} == {"0", "1", "2"}
            assert {t.worker for t in study.trials} == {"test-gpu0", "test-gpu1", "test-gpu2"}
            _assert_one_trial_per_device_at_a_time(study)
            # the Nanny restarted the killed worker process, still pinned to GPU 1
            client.wait_for_workers(3, timeout=60)
            assert _devices(client)["test-gpu1"] == ("1", 1)
            assert victim_pid not in client.run(os.getpid).values()

            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0
            deadline = time.monotonic() + 30
            while client.scheduler_info()["workers"] and time.monotonic() < deadline:
                time.sleep(0.2)
            assert client.scheduler_info()["workers"] == {}
    finally:
        process.kill()


@pytest.mark.slow
def test_dtune_worker_groups_gpus_for_multi_gpu_trials(scheduler):
    process = _dtune_worker(scheduler, "--gpus", "0,1,2,3", "--gpus-per-worker", "2")
    try:
        with Client(scheduler, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            assert _devices(client) == {"test-gpu0+1": ("0,1", 2), "test-gpu2+3": ("2,3", 2)}
            study = Study({"x": Real(0.0, 1.0)}, objective_key="loss", random_state=0)
            study.optimize(
                objectives.device_nap, 4, client=client, gpus_per_trial=2, progress=False
            )
            assert {t.device for t in study.trials} <= {"0,1", "2,3"}
            _assert_one_trial_per_device_at_a_time(study)
            with pytest.raises(ValueError, match="gpus_per_trial=4"):
                study.optimize(objectives.device_nap, 1, client=client, gpus_per_trial=4)
            assert len(study.trials) == 4
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def test_dtune_worker_refuses_bad_ids_before_starting_anything():
    result = subprocess.run(
        [sys.executable, "-m", "dtune.cli", "worker", "tcp://127.0.0.1:1", "--gpus", "0,one"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "GPU id 'one'" in result.stderr


def test_local_gpu_cluster_pins_one_gpu_per_worker():
    with (
        LocalGPUCluster(gpus=[0, 1, 2], dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(3, timeout=120)
        host = socket.gethostname()
        assert _devices(client) == {f"{host}-gpu{i}": (str(i), 1) for i in range(3)}
        assert set(client.run(lambda: os.environ["CUDA_DEVICE_ORDER"]).values()) == {"PCI_BUS_ID"}
        study = Study({"x": Real(0.0, 1.0)}, objective_key="loss", random_state=0)
        study.optimize(objectives.device_nap, 9, client=client, progress=False)
        assert {t.device for t in study.trials} == {"0", "1", "2"}
        _assert_one_trial_per_device_at_a_time(study)


def test_local_gpu_cluster_refuses_bad_ids():
    with pytest.raises(ValueError, match="GPU id 'x'"):
        LocalGPUCluster(gpus="0,x")
    with pytest.raises(ValueError, match="gpus_per_worker=2"):
        LocalGPUCluster(gpus=[0, 1, 2], gpus_per_worker=2)


@pytest.mark.slow
def test_the_plain_commands_in_scripts_give_the_same_layout(scheduler):
    # the script's `dask` is the one beside the Python running the tests, activated or not
    path = f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}"
    process = subprocess.Popen(
        ["bash", "scripts/gpu-workers.sh", scheduler, "0", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PATH": path},
    )
    try:
        with Client(scheduler, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            host = socket.gethostname()
            assert _devices(client) == {f"{host}-gpu0": ("0", 1), f"{host}-gpu1": ("1", 1)}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


@pytest.mark.slow
def test_dtune_worker_passes_tls_options_to_dask(tmp_path):
    from distributed import LocalCluster, Security

    security = Security.temporary()  # a CA and a certificate made for this test
    files = {}
    for name, pem in (
        ("ca", security.tls_ca_file),
        ("cert", security.tls_worker_cert),
        ("key", security.tls_worker_key),
    ):
        files[name] = tmp_path / f"{name}.pem"
        files[name].write_text(pem)
    with (
        LocalCluster(
            n_workers=0,
            host="127.0.0.1",
            dashboard_address=":0",
            security=security,
            protocol="tls://",
        ) as cluster,
        Client(cluster, security=security, set_as_default=False) as client,
    ):
        process = _dtune_worker(
            cluster.scheduler_address,
            "--gpus",
            "0",
            "--tls-ca-file",
            str(files["ca"]),
            "--tls-cert",
            str(files["cert"]),
            "--tls-key",
            str(files["key"]),
        )
        try:
            client.wait_for_workers(1, timeout=120)
            (address,) = client.scheduler_info()["workers"]
            assert address.startswith("tls://127.0.0.1")
            assert _devices(client) == {"test-gpu0": ("0", 1)}
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
