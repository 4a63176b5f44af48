"""The ``dtune`` command, run as a user runs it."""

from __future__ import annotations

import os
import re
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
    # run again in the same folder: the study goes on, and the utilization is this
    # search's, not one spanning both (with the time between them idle)
    again = _dtune("demo", "--trials", "6", "--workers", "2", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "12 trials (12 complete)" in again.stdout
    line = next(x for x in again.stdout.splitlines() if x.startswith("worker utilization"))
    assert line.startswith("worker utilization, this search's 6 trials: "), line
    assert float(line.rsplit(" ", 1)[1]) > 0.2, line


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


_REPORTING_SEARCH = """
import time

import dtune

space = {"x": dtune.Real(0.0, 1.0)}


def objective(x):
    loss = 1.0
    for epoch in range(1, 10):
        time.sleep(0.02)
        loss = (x - 0.3) ** 2 + 0.5 / epoch
        dtune.report(loss, epoch)
    return loss
"""


@pytest.mark.slow
def test_run_with_a_pruner_stops_trials_early_and_show_counts_them(tmp_path):
    (tmp_path / "search.py").write_text(_REPORTING_SEARCH)
    run = _dtune(
        "run", "search.py", "--trials", "24", "--workers", "2", "--seed", "0",
        "--pruner", "asha:1:9:3:window=12", cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    show = _dtune("show", "dtune.db", cwd=tmp_path)
    assert show.returncode == 0, show.stderr
    assert "study 'study': 24 trials (" in show.stdout
    assert " pruned" in show.stdout  # e.g. "(9 complete, 15 pruned)"
    (start_up,) = re.findall(r"a run's start-up: ([0-9.]+) steps' worth", show.stdout)
    assert float(start_up) < 9, show.stdout  # no start-up in the objective but Dask's
    # Its reader gone before it writes (`dtune show dtune.db | head -0`): no traceback.
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "w") as gone:
        quiet = subprocess.run(
            [sys.executable, "-m", "dtune.cli", "show", "dtune.db"],
            cwd=tmp_path, stdout=gone, stderr=subprocess.PIPE, text=True, timeout=300,
        )  # fmt: skip
    assert quiet.stderr == "", quiet.stderr
    assert quiet.returncode == 1
    from dtune import load_study

    # continued without --pruner: the study keeps its pruner
    more = _dtune("run", "search.py", "--trials", "4", "--workers", "2", cwd=tmp_path)
    assert more.returncode == 0, more.stderr
    study = load_study(tmp_path / "dtune.db")
    assert len(study.trials) == 28
    assert study.pruner is not None
    assert study.pruner.to_json()["max_resource"] == 9
    assert study.pruner.to_json()["window"] == 12


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("asha:9:1", "min_resource"),
        ("sha:1:9", "unknown pruner 'sha'"),
        ("asha:1:x", "'x' in 'asha:1:x' is not a number"),
        ("median:1:2:3", "takes at most 2 numbers"),
        ("asha:1:9:3:window=0", "window=0"),
        ("asha:1:window=3:9", "the name=number options come last"),
        ("asha:1:9:window=3:window=4", "an option is given twice"),
        ("hyperband:1:9:3:windw=3", "unexpected keyword argument 'windw'"),
    ],
)
def test_run_names_a_bad_pruner(tmp_path, spec, message):
    (tmp_path / "search.py").write_text(_REPORTING_SEARCH)
    bad = _dtune("run", "search.py", "--trials", "2", "--pruner", spec, cwd=tmp_path)
    assert bad.returncode == 2
    assert message in bad.stderr
    assert not (tmp_path / "dtune.db").exists()  # nothing was started
