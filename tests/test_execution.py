"""What an objective returns is checked on the worker; bad returns name the bad value."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from dtune.execution import parse_result, run_trial


@pytest.mark.parametrize(
    ("returned", "needle"),
    [
        (None, "None (NoneType)"),
        ("0.5", "'0.5' (str)"),
        (math.nan, "nan"),
        (math.inf, "inf"),
        (True, "True (bool)"),
        ([0.5], "[0.5] (list)"),
        ({"acc": 0.9}, "without the objective key 'val_loss'; its keys are ['acc']"),
        ({"val_loss": None}, "metric 'val_loss' is None"),
    ],
)
def test_bad_returns_fail_the_trial_with_a_message(returned, needle):
    outcome = run_trial(lambda x: returned, {"x": 1.0}, "val_loss")
    assert outcome.value is None
    assert needle in outcome.error


def test_a_dict_without_an_objective_key_asks_for_one():
    with pytest.raises(ValueError, match="objective_key"):
        parse_result({"a": 1.0}, None)


def test_numpy_values_and_metrics_become_plain():
    value, metrics = parse_result(
        {"val_loss": np.float32(0.5), "curve": np.arange(3), "n": np.int64(2)}, "val_loss"
    )
    assert value == 0.5
    assert type(value) is float
    assert metrics == {"val_loss": 0.5, "curve": [0, 1, 2], "n": 2}


def test_an_exception_is_caught_with_its_traceback_and_timings():
    def objective(x):
        raise RuntimeError(f"diverged at x={x}")

    outcome = run_trial(objective, {"x": 2.0}, None)
    assert outcome.value is None
    assert "Traceback" in outcome.error
    assert "RuntimeError: diverged at x=2.0" in outcome.error
    assert outcome.started <= outcome.finished


def test_running_a_trial_imports_nothing_heavy(tmp_path):
    """A fresh worker unpickles run_trial and calls it: no scikit-optimize, scikit-learn,
    scipy, numpy, pandas or bokeh, so its first trial starts at once."""
    import cloudpickle

    task = tmp_path / "task.pickle"
    task.write_bytes(cloudpickle.dumps((run_trial, (lambda x: x * 2), {"x": 2.0})))
    code = (
        "import pickle, sys\n"
        f"function, objective, params = pickle.load(open({str(task)!r}, 'rb'))\n"
        "assert function(objective, params, None).value == 4.0\n"
        "heavy = ['skopt', 'sklearn', 'scipy', 'numpy', 'pandas', 'bokeh', 'tensorflow']\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
