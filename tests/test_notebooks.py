"""The notebooks run top to bottom under nbclient, as a reader would run them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests import TF_START_UP_LINES

ROOT = Path(__file__).parent.parent
spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "scripts/run_notebooks.py")
assert spec is not None
assert spec.loader is not None
run_notebooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_notebooks)


def test_there_are_the_three_notebooks():
    assert [p.name for p in run_notebooks.NOTEBOOKS] == [
        "01_quickstart.ipynb",
        "02_keras_digits.ipynb",
        "03_cluster_and_resume.ipynb",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("path", run_notebooks.NOTEBOOKS, ids=lambda p: p.stem)
def test_the_notebook_runs_without_error(path, tmp_path, monkeypatch):
    # ipykernel shows what the kernel's processes (the cluster's workers) write to their
    # file descriptors, as a reader sees it, except under pytest: not under pytest here
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    notebook = run_notebooks.execute(path, tmp_path)
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors
    # what each notebook promises its reader
    text = "\n".join(
        str(output.get("text", ""))
        + str(output.get("data", {}).get("text/plain", ""))
        + str(output.get("data", {}).get("text/html", ""))
        for cell in notebook.cells
        for output in cell.get("outputs", [])
    )
    # clean outputs: no Dask INFO lines, no TensorFlow start-up noise from the trials
    for noise in ("- INFO -", *TF_START_UP_LINES):
        assert noise not in text
    if path.stem.startswith("01"):
        assert "dtune dashboard: http://127.0.0.1:" in text  # a link, in a notebook
        assert "best val_accuracy:" in text
    elif path.stem.startswith("02"):
        assert "reloaded" in text
        assert "GPU-time saved by ASHA" in text
        assert "a run's start-up: " in text  # measured, and ASHA's rungs placed for it
        assert "PRUNED" in text
        assert "checkpoints left: []" in text  # resume=True: each went with its trial
    else:
        assert "INTERRUPTED" in text
        assert "'COMPLETE': 30" in text
