"""Simulated workers on a simulated clock: the search loop of :mod:`dtune.driver`, run
with no Dask and no waiting, for the loop's unit tests and the quality benchmarks.

Each trial calls the objective at once, in the driver's process, and "takes" the
seconds that ``duration(params)`` says on the simulated clock; :meth:`wait` jumps the
clock to the next trial to end. A search of thousands of trials on hundreds of workers
runs in the time its suggestions take to compute, and gives the same trials for the
same seed (the driver uses an in-process suggester with a simulated backend).
"""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any

from dtune.execution import IncomingReport, Outcome, TrialRun, run_trial
from dtune.trial import Trial

__all__ = ["SimulatedBackend", "SimulatedCluster"]


def _one_second(params: Mapping[str, Any]) -> float:
    return 1.0


class SimulatedCluster:
    """``n_workers`` simulated single-slot workers; pass it as ``optimize(client=...)``.

    Parameters
    ----------
    n_workers
        Trials that run at once.
    duration
        Simulated seconds a trial with these parameters takes (default 1).
    start
        The simulated clock's start (UNIX seconds).

    Examples
    --------
    >>> import dtune
    >>> study = dtune.Study({"x": dtune.Real(-1.0, 1.0)}, random_state=0)
    >>> study.optimize(lambda x: x * x, 12, client=SimulatedCluster(4), progress=False)
    >>> len(study.trials), study.best_value < 0.05
    (12, True)
    """

    simulated = True

    def __init__(
        self,
        n_workers: int,
        duration: Callable[[Mapping[str, Any]], float] = _one_second,
        *,
        start: float = 1e9,
    ) -> None:
        if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
            raise ValueError(f"n_workers={n_workers!r} must be a positive int")
        self.n_workers = n_workers
        self.duration = duration
        self.start = start

    @contextlib.contextmanager
    def open(self, run: TrialRun) -> Iterator[SimulatedBackend]:
        """A backend running ``run``'s trials on this simulated cluster."""
        yield SimulatedBackend(self.n_workers, run, self.duration, self.start)


class SimulatedBackend:
    """The driver's backend over simulated workers (see :class:`SimulatedCluster`)."""

    dashboard_link = None

    def __init__(
        self,
        n_workers: int,
        run: TrialRun,
        duration: Callable[[Mapping[str, Any]], float],
        start: float,
    ) -> None:
        self.run = run
        self.duration = duration
        self.clock = start
        self._free = [f"sim-{i}" for i in range(n_workers)]
        self._n_workers = n_workers
        # (end time, submission order, trial number, worker, outcome)
        self._running: list[tuple[float, int, int, str, Outcome]] = []
        self._order = 0

    def now(self) -> float:
        return self.clock

    def slots(self) -> int:
        return self._n_workers

    def submit(self, trial: Trial) -> None:
        worker = self._free.pop(0)
        outcome = run_trial(self.run.objective, trial.params, self.run.objective_key)
        seconds = float(self.duration(trial.params))
        timeout = self.run.timeout
        if timeout is not None and seconds > timeout:
            seconds = timeout
            outcome = Outcome(
                value=None,
                error=f"TrialTimeout: the trial ran past trial_timeout={timeout:g} s",
            )
        end = self.clock + seconds
        outcome = replace(outcome, started=self.clock, finished=end, worker=worker, host="sim")
        heapq.heappush(self._running, (end, self._order, trial.number, worker, outcome))
        self._order += 1

    def wait(self, timeout: float) -> list[tuple[int, Outcome | None]]:
        if not self._running:
            return []
        end, _, number, worker, outcome = heapq.heappop(self._running)
        self.clock = max(self.clock, end)
        self._free.append(worker)
        return [(number, outcome)]

    def placements(self) -> dict[int, str]:
        return {number: worker for _, _, number, worker, _ in self._running}

    def check(self) -> None:
        return None

    def take_reports(self) -> list[IncomingReport]:
        return []  # simulated trials run in one go: their reports are not sent

    def answer(self, report: IncomingReport, stop: bool) -> None:
        return None

    def share_cutoffs(self, table: dict[tuple[int, float], float], minimize: bool) -> None:
        return None

    def cancel(self) -> list[int]:
        numbers = [number for _, _, number, _, _ in self._running]
        self._free.extend(worker for _, _, _, worker, _ in self._running)
        self._running.clear()
        return numbers
