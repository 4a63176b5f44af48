"""What runs on a Dask worker: :func:`run_trial` calls the objective once and reports
its value, metrics, timings, worker, host and device, or the error it raised.

Nothing here raises for a failing objective: the failure travels back as data, so the
driver records it with its traceback and the search goes on.
"""

from __future__ import annotations

import math
import numbers
import os
import socket
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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


def run_trial(
    objective: Callable[..., Any], params: Mapping[str, Any], objective_key: str | None
) -> Outcome:
    """Call ``objective(**params)`` and report how it went. Runs on a Dask worker.

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
    error: str | None = None
    try:
        raw = objective(**params)
    except Exception:
        error = traceback.format_exc()
    else:
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
