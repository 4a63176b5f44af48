"""The ``dtune`` command, run as a user runs it."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _dtune(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "dtune.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_demo_runs_a_real_search_on_an_embedded_cluster_and_show_reads_it(tmp_path):
    demo = _dtune("demo", "--trials", "6", "--workers", "2", cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    assert "started a local Dask cluster; its dashboard: http://127.0.0.1:" in demo.stdout
    assert "6 trials (6 complete)" in demo.stdout
    assert "best parameters: {'hidden_units':" in demo.stdout
    assert str(tmp_path / "dtune-demo.db") in demo.stdout
    show = _dtune("show", "dtune-demo.db", "--top", "3", cwd=tmp_path)
    assert show.returncode == 0, show.stderr
    assert "study 'digits': 6 trials" in show.stdout
    assert "top 3:" in show.stdout


def test_help_and_bad_arguments():
    helped = _dtune("--help", cwd=".")
    assert helped.returncode == 0
    assert "demo" in helped.stdout
    assert "show" in helped.stdout
    bad = _dtune("demo", "--trials", "0", cwd=".")
    assert bad.returncode == 2
    assert "'0' must be at least 1" in bad.stderr
    missing = _dtune("show", "nowhere.db", cwd=".")
    assert missing.returncode == 2
    assert "no store at 'nowhere.db'" in missing.stderr
