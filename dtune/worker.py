"""What runs on a Dask worker: :func:`run_trial` calls the objective once and reports
its value, metrics, timings, worker, host and device, or the error it raised.

Nothing here raises for a failing objective: the failure travels back as data, so the
driver records it with its traceback and the search goes on.

With ``isolate=True`` or a ``timeout`` the objective runs in a fresh child process of
the worker (``python -m dtune.worker``), not in the worker's thread: a thread cannot be
stopped, but a process (and anything it started) can be killed when it runs past its
time, and everything it held, GPU memory included, is freed when it exits. The worker
itself stays up, so its slot is free for the next trial at once.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dtune import _isolated

__all__ = ["Outcome", "parse_result", "run_trial"]


@dataclass(frozen=True)
class Outcome:
    """What one call of the objective produced, as the worker saw it."""

    value: float | None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    started: float | None = None
    finished: float | None = None
    worker: str | None = None
    host: str | None = None
    device: str | None = None


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars and small arrays to Python, anything else to its repr."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.size <= 1000:
        return value.tolist()
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return repr(value)


def _as_objective_value(value: Any, what: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} is {value!r} ({type(value).__name__}); expected a finite float")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} is {number!r}; expected a finite float")
    return number


def parse_result(result: Any, objective_key: str | None) -> tuple[float, dict[str, Any]]:
    """Split what an objective returned into the value to optimize and all its metrics.

    Parameters
    ----------
    result
        A number, or a mapping of metric names to values holding ``objective_key``.
    objective_key
        Which metric is the objective when ``result`` is a mapping.

    Returns
    -------
    (value, metrics)

    Raises
    ------
    TypeError, ValueError
        Naming the bad value: None, a string, NaN or inf, a mapping without the key.

    Examples
    --------
    >>> parse_result({"val_loss": 0.25, "acc": np.float32(0.5)}, "val_loss")
    (0.25, {'val_loss': 0.25, 'acc': 0.5})
    >>> parse_result(1.5, None)
    (1.5, {})
    """
    if isinstance(result, Mapping):
        metrics = {str(k): _plain(v) for k, v in result.items()}
        if objective_key is None:
            raise ValueError(
                f"the objective returned a dict with keys {sorted(metrics)}; tell the Study "
                "which one to optimize with objective_key=..."
            )
        if objective_key not in result:
            raise KeyError(
                f"the objective returned a dict without the objective key {objective_key!r}; "
                f"its keys are {sorted(metrics)}"
            )
        value = _as_objective_value(result[objective_key], f"metric {objective_key!r}")
        metrics[objective_key] = value
        return value, metrics
    value = _as_objective_value(result, "the objective's return value")
    return value, ({objective_key: value} if objective_key else {})


def _worker_name() -> str | None:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except ValueError:  # not inside a Dask worker: manual or sequential evaluation
        return None


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _call_in_child(
    objective: Callable[..., Any], params: Mapping[str, Any], timeout: float | None
) -> tuple[Any, str | None]:
    """:func:`_isolated.call` in a fresh Python process, killed (with any process it
    started) after ``timeout`` seconds."""
    import cloudpickle

    with tempfile.TemporaryDirectory(prefix="dtune-trial-") as folder:
        result_path = os.path.join(folder, "result.pickle")
        # The child imports what the objective refers to from the worker's own path.
        payload = pickle.dumps(sys.path) + cloudpickle.dumps((objective, dict(params)))
        child = subprocess.Popen(
            [sys.executable, _isolated.__file__, result_path],
            stdin=subprocess.PIPE,
            start_new_session=True,  # its own process group: a timeout kills all of it
        )
        assert child.stdin is not None
        with child.stdin:
            child.stdin.write(payload)
        try:
            code = child.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            return None, (
                f"TrialTimeout: the trial ran past trial_timeout={timeout:g} s; its process "
                "was killed"
            )
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)  # anything it left running
        if code != 0 or not os.path.exists(result_path):
            return None, f"the trial's process {_describe_exit(code)} before returning a result"
        with open(result_path, "rb") as file:
            result: tuple[Any, str | None] = pickle.load(file)
        return result


def run_trial(
    objective: Callable[..., Any],
    params: Mapping[str, Any],
    objective_key: str | None,
    *,
    isolate: bool = False,
    timeout: float | None = None,
) -> Outcome:
    """Call ``objective(**params)`` and report how it went. Runs on a Dask worker.

    Parameters
    ----------
    objective, params, objective_key
        What to call, with what, and which metric is the objective.
    isolate
        Call it in a fresh child process, which exits afterwards (freeing its memory).
    timeout
        Kill that child process after this many seconds (implies ``isolate``); the trial
        then fails with a ``TrialTimeout`` error.

    Examples
    --------
    >>> out = run_trial(lambda x: x**2, {"x": 3.0}, None)
    >>> out.value, out.error
    (9.0, None)
    >>> run_trial(lambda x: None, {"x": 3.0}, None).error
    "TypeError: the objective's return value is None (NoneType); expected a finite float"
    """
    started = time.time()
    value: float | None = None
    metrics: dict[str, Any] = {}
    if isolate or timeout is not None:
        raw, error = _call_in_child(objective, params, timeout)
    else:
        raw, error = _isolated.call(objective, params)
    if error is None:
        try:
            value, metrics = parse_result(raw, objective_key)
        except (TypeError, ValueError, KeyError) as exc:
            error = f"{type(exc).__name__}: {exc.args[0]}"
            metrics = _plain(raw) if isinstance(raw, Mapping) else {}
    finished = time.time()
    return Outcome(
        value=value,
        metrics=metrics,
        error=error,
        started=started,
        finished=finished,
        worker=_worker_name(),
        host=socket.gethostname(),
        device=os.environ.get("CUDA_VISIBLE_DEVICES"),
    )
