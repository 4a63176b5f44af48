"""The driver benchmark runs (smoke mode; its figures live in docs/PERFORMANCE.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_driver_smoke_mode_reports_utilization():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_driver.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| dtune GP |" in out.stdout
    assert "utilization, GP / random points:" in out.stdout
