"""Shared fixtures: a real Dask LocalCluster of worker processes for the driver tests, and
`dask scheduler` / `dask worker` subprocesses on 127.0.0.1 for the tests that kill them."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from distributed import Client, LocalCluster


@pytest.fixture(scope="session")
def client() -> Iterator[Client]:
    """Four single-threaded worker processes on 127.0.0.1."""
    with (
        LocalCluster(
            n_workers=4,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
        ) as cluster,
        Client(cluster, set_as_default=False) as c,
    ):
        yield c


def n_told(study: Any) -> int:
    """How many results the study's optimizer has been told (through its public view)."""
    try:
        return len(study.as_skopt_result().func_vals)
    except ValueError:  # none yet
        return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_dask_scheduler() -> tuple[str, subprocess.Popen[bytes]]:
    """A real `dask scheduler` subprocess on 127.0.0.1: its address and process."""
    address = f"tcp://127.0.0.1:{_free_port()}"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distributed.cli.dask_scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            address.rsplit(":", 1)[1],
            "--dashboard-address",
            "127.0.0.1:0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return address, process


@pytest.fixture
def scheduler() -> Iterator[str]:
    """The address of a `dask scheduler` subprocess on 127.0.0.1, stopped afterwards."""
    address, process = start_dask_scheduler()
    try:
        yield address
    finally:
        process.terminate()
        process.wait(timeout=30)


def start_dask_workers(scheduler: str, n: int) -> subprocess.Popen[bytes]:
    """`dask worker SCHEDULER --nworkers n --nthreads 1`: n Nanny-managed worker processes."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distributed.cli.dask_worker",
            scheduler,
            "--nworkers",
            str(n),
            "--nthreads",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def headless_chromium() -> Any:
    """Debian's chromium, headless, driven by selenium (used by the dashboard tests and by
    scripts/bench_dashboard.py)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--window-size=1400,1800",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
