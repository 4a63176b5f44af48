"""Figures about how a search used its workers, computed from trial records alone."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable

from dtune.trial import Trial

__all__ = ["refill_latencies", "utilization"]


def _timed(trials: Iterable[Trial]) -> list[Trial]:
    return [t for t in trials if t.started is not None and t.finished is not None]


def utilization(trials: Iterable[Trial], n_workers: int | None = None) -> float:
    """Sum of trial durations ÷ (workers × span from the first start to the last finish).

    ``n_workers`` defaults to the number of distinct workers seen in the trials.

    Examples
    --------
    >>> from dtune.trial import TrialState
    >>> ts = [Trial(0, TrialState.COMPLETE, {}, 1.0, worker="a", started=0, finished=2),
    ...       Trial(1, TrialState.COMPLETE, {}, 1.0, worker="b", started=0, finished=1)]
    >>> utilization(ts)
    0.75
    """
    timed = _timed(trials)
    if not timed:
        return 0.0
    workers = n_workers or len({t.worker for t in timed})
    span = max(t.finished for t in timed) - min(t.started for t in timed)  # type: ignore[type-var, operator]
    busy = sum(t.duration or 0.0 for t in timed)
    return busy / (workers * span) if span > 0 else 1.0


def refill_latencies(trials: Iterable[Trial]) -> list[float]:
    """For each worker, the gaps from one trial's finish to its next trial's start (s)."""
    by_worker: dict[str | None, list[Trial]] = defaultdict(list)
    for t in _timed(trials):
        by_worker[t.worker].append(t)
    gaps: list[float] = []
    for runs in by_worker.values():
        runs.sort(key=lambda t: t.started or 0.0)
        gaps.extend((b.started or 0.0) - (a.finished or 0.0) for a, b in itertools.pairwise(runs))
    return gaps
