"""Simulated workers on a simulated clock: the search loop of :mod:`dtune.driver`, run
with no Dask and no waiting, for the loop's unit tests and the quality benchmarks.

Each trial calls the objective at once, in the driver's process, and "takes" the
seconds that ``duration(params)`` says on the simulated clock; :meth:`wait` jumps the
clock to the next event. A search of thousands of trials on hundreds of workers runs in
the time its suggestions take to compute, and gives the same trials for the same seed
(the driver uses an in-process suggester with a simulated backend).

A trial's :func:`dtune.report` calls are recorded while it runs, and then delivered to
the driver one by one on the simulated clock, spread evenly over the trial's seconds
(the last at its end), so that a search with a pruner judges each report against the
reports of other trials made before it, as on a real cluster. A report that could stop
the trial (:meth:`~dtune.pruners.Pruner.stops_at`) waits for the driver's verdict, which
costs no simulated time; a trial told to stop ends there, pruned, with the value it
reported, and its worker is free at once.

A trial that runs again with reports recorded (a paused trial that a promotion-type
ASHA promoted) goes on as if from a checkpoint: the objective runs in full again, but
only its reports after the last recorded step are delivered, and its run takes only
their share of ``duration(params)``.

With ``startup`` seconds, each run of a trial (a promoted one's too) first spends that
long before its first report, as a real run builds its model and loads its data:
what :func:`dtune.pruners.estimate_overhead` reads and ``ASHA(..., overhead=…)`` allows
for.
"""

from __future__ import annotations

import contextlib
import heapq
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any

from dtune.execution import IncomingReport, Outcome, TrialRun, run_trial
from dtune.reporting import Channel, ReportTo
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
    startup
        Simulated seconds each run of a trial spends before its first report, on top
        of ``duration`` (default 0).

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
        startup: float = 0.0,
    ) -> None:
        if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
            raise ValueError(f"n_workers={n_workers!r} must be a positive int")
        if (
            isinstance(startup, bool)
            or not isinstance(startup, (int, float))
            or not 0 <= startup < math.inf
        ):
            raise ValueError(f"startup={startup!r} must be a finite number of seconds >= 0")
        self.n_workers = n_workers
        self.duration = duration
        self.start = start
        self.startup = float(startup)

    @contextlib.contextmanager
    def open(self, run: TrialRun) -> Iterator[SimulatedBackend]:
        """A backend running ``run``'s trials on this simulated cluster."""
        yield SimulatedBackend(self.n_workers, run, self.duration, self.start, self.startup)


class _Recorder(Channel):
    """A simulated trial's reports as its objective makes them; never stops it (the
    backend replays them on the simulated clock)."""

    def __init__(self, number: int, study: str | None) -> None:
        super().__init__(number, study)
        self.reports: list[tuple[int, float, dict[str, Any]]] = []

    def send(self, value: float, step: int, metrics: dict[str, Any]) -> bool:
        self.reports.append((step, value, metrics))
        return False


class _Running:
    """A simulated trial on its worker: its outcome, and its reports to deliver."""

    def __init__(
        self, worker: str, outcome: Outcome, reports: list[IncomingReport], serial: int
    ) -> None:
        self.serial = serial  # which run of the trial (a promoted one runs again)
        self.worker = worker
        self.outcome = outcome
        self.reports = reports


class SimulatedBackend:
    """The driver's backend over simulated workers (see :class:`SimulatedCluster`)."""

    dashboard_link = None

    def __init__(
        self,
        n_workers: int,
        run: TrialRun,
        duration: Callable[[Mapping[str, Any]], float],
        start: float,
        startup: float = 0.0,
    ) -> None:
        self.run = run
        self.duration = duration
        self.startup = startup
        self.clock = start
        self._free = [f"sim-{i}" for i in range(n_workers)]
        self._n_workers = n_workers
        self._running: dict[int, _Running] = {}
        # (time, order, trial number, its run's serial, index of its report; -1: its end)
        self._events: list[tuple[float, int, int, int, int]] = []
        self._order = 0
        self._delivered: list[IncomingReport] = []
        self._pauses = run.pruner is not None and run.pruner.promotes  # stops are pauses

    def now(self) -> float:
        return self.clock

    def slots(self) -> int:
        return self._n_workers

    def submit(self, trial: Trial) -> None:
        worker = self._free.pop(0)
        recorder = _Recorder(trial.number, self.run.study)
        with recorder.active():
            outcome = run_trial(self.run.objective, trial.params, self.run.objective_key)
        made, share = recorder.reports, 1.0
        done = trial.last_step
        if done is not None and made:  # goes on from its checkpoint: the later steps run
            later = [r for r in made if r[0] > done]
            made, share = later, len(later) / len(made)
        full = float(self.duration(trial.params)) * share
        seconds = self.startup + full
        timeout = self.run.timeout
        if timeout is not None and seconds > timeout:
            seconds = timeout
            outcome = Outcome(
                value=None,
                error=f"TrialTimeout: the trial ran past trial_timeout={timeout:g} s",
            )
        end = self.clock + seconds
        outcome = replace(outcome, started=self.clock, finished=end, worker=worker, host="sim")
        pruner = self.run.pruner
        stops_at = pruner.stops_for(trial) if pruner is not None else None
        to = ReportTo(
            "sim",
            trial.number,
            wait=pruner is not None,
            wait_at=None if stops_at is None else tuple(stops_at),
            pause=self._pauses,
        )
        reports, before = [], -math.inf if done is None else done
        for seq, (step, value, metrics) in enumerate(made, 1):
            wait = to.waits(before, step)  # as a worker would, report after report
            reports.append(IncomingReport(trial.number, step, value, metrics, worker, seq, wait))
            before = step
        running = self._running[trial.number] = _Running(worker, outcome, reports, self._order)
        for index in range(len(made)):
            share_done = 1.0 if index + 1 == len(made) else (index + 1) / len(made)
            after = self.startup + full * share_done
            if after <= seconds:  # a timed-out trial's later reports never came
                self._push(self.clock + after, running, trial.number, index)
        self._push(end, running, trial.number, -1)

    def _push(self, at: float, running: _Running, number: int, index: int) -> None:
        heapq.heappush(self._events, (at, self._order, number, running.serial, index))
        self._order += 1

    def wait(self, timeout: float) -> list[tuple[int, Outcome | None]]:
        while self._events:
            at, _, number, serial, index = heapq.heappop(self._events)
            trial = self._running.get(number)
            if trial is None or trial.serial != serial or (index >= 0 and trial.outcome.pruned):
                continue  # a run pruned or cancelled before this event
            self.clock = max(self.clock, at)
            if index >= 0:
                self._delivered.append(trial.reports[index])
                return []
            del self._running[number]
            self._free.append(trial.worker)
            return [(number, trial.outcome)]
        return []

    def placements(self) -> dict[int, str]:
        return {number: trial.worker for number, trial in self._running.items()}

    def check(self) -> None:
        return None

    def take_reports(self) -> list[IncomingReport]:
        reports, self._delivered = self._delivered, []
        return reports

    def answer(self, report: IncomingReport, stop: bool) -> None:
        trial = self._running.get(report.number)
        if not stop or trial is None or trial.outcome.pruned:
            return
        # Stopped here: it ends now, pruned, its value the last it reported.
        trial.outcome = replace(
            trial.outcome,
            value=report.value,
            metrics={},
            error=None,
            finished=self.clock,
            pruned=True,
            paused=self._pauses,
        )
        self._push(self.clock, trial, report.number, -1)

    def share_cutoffs(self, table: dict[tuple[int, float], float], minimize: bool) -> None:
        return None  # every report that can stop a trial waits for the driver here

    def cancel(self) -> list[int]:
        numbers = list(self._running)
        self._free.extend(trial.worker for trial in self._running.values())
        self._running.clear()
        self._events.clear()
        return numbers
