"""The ledger of a study's trials: the only place where a trial changes state.

Every change goes the same way: **the store first** (committed), then the in-memory view,
then the listeners (the suggesters, which feed the model)::

    Study.ask / driver ──▶ start ────┐
    Study.tell / driver ─▶ finish ───┤   store.put_trials   ──▶ view ──▶ listener.started
    driver ─────────────▶ interrupt ─┤   (committed, synced)            listener.finished
    driver ─────────────▶ restart ───┘                                  listener.reset (sync)

So a result reaches the store and the model one way only, whoever reports it. The
ledger also numbers trials, holds the driver's claim on the study, catches up with
trials other processes wrote (:meth:`Ledger.sync`), and applies the direction and
failure-value rules that decide what the model is told (:meth:`Ledger.told_value`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import statistics
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

from dtune.exceptions import StudyInUseError
from dtune.execution import Outcome
from dtune.pruners import value_at
from dtune.space import SearchSpace
from dtune.storage import BaseStorage
from dtune.trial import Report, Trial, TrialState

__all__ = ["CLAIM_STALE_S", "Ledger", "LedgerListener", "ModelState"]

# Trials that must show the gain from a rung to the model's before pruned trials there
# are imputed with it (until then they are told the worst value).
_MIN_GAINS = 3

logger = logging.getLogger("dtune")

Point = list[Any]
# A claim not renewed for this long may be taken over by another driver.
CLAIM_STALE_S = 30.0
_CLAIM_RENEW_S = 5.0


class ModelState:
    """What a model needs to know of a study: told results (``noise``: each one's own
    noise variance, 0 for a measured value; None: all measured), running points, and
    how many trials were ever started (where the initial design stands)."""

    def __init__(
        self,
        told: Sequence[tuple[Point, float]],
        running: Sequence[tuple[int, Point]],
        n_started: int,
        noise: Sequence[float] | None = None,
    ) -> None:
        self.told = list(told)
        self.noise = [0.0] * len(self.told) if noise is None else list(noise)
        self.running = list(running)
        self.n_started = n_started


class LedgerListener(Protocol):
    """Told of every change, after it is in the store. Called under the ledger's lock:
    keep it quick (the suggesters only queue or send messages)."""

    def started(self, number: int, point: Point) -> None:
        """Trial ``number`` is now running at ``point``."""

    def finished(
        self,
        results: Sequence[tuple[int, Point, float | None]],
        noise: Mapping[int, float] | None = None,
    ) -> None:
        """Trials no longer running; a None value is not told to the model (a failure
        without a ``failure_value``, an interrupted trial). ``noise``: by trial number,
        the own noise variance of a value that is an estimate (a pruned trial's imputed
        value); the others are measured."""

    def observed(self, results: Sequence[tuple[Point, float]]) -> None:
        """Results of trials that still run, each point with its resource (a joint
        model's rung values): told to the model, the trials still pending."""

    def retold(self, results: Sequence[tuple[Point, float, float]], refit: bool = True) -> None:
        """Values told before for these points (a paused trial's estimate, or a running
        one's) replaced by these (point, value, its own noise variance: 0 for a measured
        one); ``refit``: a refit of the kernel is due."""

    def reset(self, state: ModelState) -> None:
        """Start over from ``state`` (the store changed under this process)."""


class Ledger:
    """The trials of one study in one store, and every change to them.

    Parameters
    ----------
    storage
        The store (the record of truth); the study's record must exist in it.
    name, space, direction
        The study.
    failure_value
        What the model is told about a failed trial: None (nothing), ``"worst"`` (the
        worst complete value so far) or a number in the objective's units.
    rungs
        A pruner's resources (ascending), whose reports the model is told.
    joint
        Tell the model every rung's value of every trial, each at its resource (a
        joint model: ``resource_model="joint"``), instead of one rung's values.
    estimate_running
        With ``rungs`` (a stopping rule's): a running trial that reaches a rung below the
        model's is told its estimate from there, as a pruned trial would be, rather than
        stay pending until it ends (:meth:`_tell_estimate`).

    Notes
    -----
    Thread-safe: every method takes the ledger's lock, so a notebook may read views
    while a search runs in another thread.

    Examples
    --------
    >>> from dtune.storage import InMemoryStorage, StudyRecord
    >>> from dtune.space import Real
    >>> store = InMemoryStorage()
    >>> store.create_study(StudyRecord("s", "minimize", None, {}, {}, 0.0))
    >>> ledger = Ledger(store, "s", SearchSpace({"x": Real(0.0, 1.0)}), "minimize")
    >>> trial = ledger.start({"x": 0.5})
    >>> done, = ledger.finish([(trial.number, Outcome(value=0.25))])
    >>> done.state.value, store.get_trials("s")[0].value
    ('COMPLETE', 0.25)
    """

    def __init__(
        self,
        storage: BaseStorage,
        name: str,
        space: SearchSpace,
        direction: str,
        failure_value: str | float | None = None,
        rungs: Sequence[float] | None = None,
        joint: bool = False,
        estimate_running: bool = False,
    ) -> None:
        self.storage = storage
        self.name = name
        self.space = space
        self.direction = direction
        self.failure_value = failure_value
        self.rungs = sorted(rungs) if rungs else None
        self.joint = joint and self.rungs is not None
        self.estimate_running = estimate_running and self.rungs is not None and not self.joint
        # A lower rung feeds the model once it has this many values and no higher has.
        self.rung_min_points = max(5, len(space) + 2)
        self._lock = threading.RLock()
        self._unwritten: list[Trial] | None = None  # inside deferred_writes()
        self._listeners: list[LedgerListener] = []
        self._trials: dict[int, Trial] = {}
        self._next_number = 0
        self._claimed_at = -math.inf
        self._model_rung: int | None = None  # index into rungs; None: final values
        self._told_early: set[int] = set()  # trials the model was told at a lower rung
        # Trials the model was told an imputed value of (pruned or paused below its rung):
        # one told more of later (a paused trial promoted) sets the model over again.
        self._told_imputed: set[int] = set()
        self._worst: float | None = None  # the worst value told at the model's rung
        # Per rung k below the model's: how much trials that reached both improved from
        # k to the model's rung (value there minus value at k), to impute pruned trials.
        self._gains: dict[int, list[float]] = {}
        self._load()

    def __repr__(self) -> str:
        return f"Ledger({self.name!r}, {self.storage!r}, trials={len(self._trials)})"

    def _load(self) -> None:
        self._trials = {t.number: t for t in self.storage.get_trials(self.name)}
        self._next_number = max(self._trials, default=-1) + 1
        self._count_rungs()
        self._model_rung = self._pick_model_rung()
        self._told_early = set()
        self._told_imputed = set()

    # -- views ----------------------------------------------------------------------------

    @property
    def trials(self) -> list[Trial]:
        """Every trial, by number (a snapshot)."""
        with self._lock:
            return [self._trials[n] for n in sorted(self._trials)]

    def get(self, number: int) -> Trial | None:
        """Trial ``number``, or None."""
        with self._lock:
            return self._trials.get(number)

    def in_state(self, state: TrialState) -> list[Trial]:
        """The trials in ``state``, by number."""
        return [t for t in self.trials if t.state is state]

    def to_minimize(self, value: float) -> float:
        """A value as the model sees it: the model minimizes."""
        return -value if self.direction == "maximize" else value

    def top(self, n: int) -> list[Trial]:
        """The ``n`` best complete trials, best first."""
        complete = self.in_state(TrialState.COMPLETE)
        return sorted(complete, key=lambda t: self.to_minimize(t.value or 0.0))[:n]

    def told_value(self, trial: Trial) -> float | None:
        """What the model (which minimizes) is told about a finished trial, if anything."""
        if trial.state is TrialState.COMPLETE and trial.value is not None:
            return self.to_minimize(trial.value)
        if trial.state is not TrialState.FAILED or self.failure_value is None:
            return None
        if self.failure_value == "worst":
            seen = [self.to_minimize(t.value or 0.0) for t in self.in_state(TrialState.COMPLETE)]
            return max(seen) if seen else None
        return self.to_minimize(float(self.failure_value))

    def point(self, trial: Trial) -> Point | None:
        """The trial's point in the model's terms; None if it lies outside the space (a
        space changed since, with ``allow_space_change``)."""
        try:
            return self.space.to_point(trial.params)
        except ValueError:
            return None

    # -- the model's fidelity (with a pruner's rungs) --------------------------------------

    def rung_value(self, trial: Trial, k: int) -> float | None:
        """What the model is told of ``trial`` at rung ``k`` (below the top): the value
        it reported at its first step at or past that rung, to minimize."""
        assert self.rungs is not None
        value = value_at(trial, self.rungs[k])
        return None if value is None else self.to_minimize(value)

    def _count_rungs(self) -> None:
        """How many trials reached each rung below the top, and how many completed."""
        self._complete = sum(t.state is TrialState.COMPLETE for t in self._trials.values())
        self._rung_counts = [0] * (len(self.rungs) - 1 if self.rungs else 0)
        for trial in self._trials.values():
            self._count_reached(trial.reports, +1)

    def _count_reached(
        self, reports: Sequence[Report], sign: int, since: float = -math.inf
    ) -> None:
        if not reports or self.rungs is None:
            return
        last = reports[-1].step
        for k, r in enumerate(self.rungs[:-1]):
            if since < r <= last:
                self._rung_counts[k] += sign

    def _pick_model_rung(self) -> int | None:
        """The rung whose values the model is fitted on: the highest below the top with
        enough values, unless the top (complete trials) has enough (BOHB's rule); None
        means final values."""
        if self.rungs is None or self.joint or self._complete >= self.rung_min_points:
            return None
        enough = [k for k, n in enumerate(self._rung_counts) if n >= self.rung_min_points]
        return enough[-1] if enough else None

    @property
    def model_rung(self) -> float | None:
        """The resource whose values the model is fitted on now (None: final values)."""
        if self._model_rung is None or self.rungs is None:
            return None
        return self.rungs[self._model_rung]

    def model_state(self) -> ModelState:
        """What a model rebuilt now should know."""
        with self._lock:
            if self.joint:
                return self._joint_state()
            told, running = [], []
            self._told_early = set()
            self._told_imputed = set()
            self._gains = {}
            for trial in self.trials:
                point = self.point(trial)
                if point is None:
                    continue
                if self._model_rung is not None:
                    value = self.rung_value(trial, self._model_rung)
                    if value is not None:
                        told.append((point, value))
                        self._told_early.add(trial.number)
                        self._add_gains(trial, value)
                        continue
                if trial.state is TrialState.RUNNING:
                    running.append((trial.number, point))
                    continue
                if self._model_rung is None:
                    value = self.told_value(trial)
                    if value is not None:
                        told.append((point, value))
                        if trial.state is TrialState.COMPLETE:
                            self._add_gains(trial, value)
            self._worst = max((v for _, v in told), default=None)
            noise = [0.0] * len(told)
            for trial in self.trials:
                if trial.number in self._told_early:
                    continue
                if trial.state.is_stopped_early():
                    point, (value, var) = self.point(trial), self._imputed(trial)
                elif trial.state is TrialState.RUNNING and self.estimate_running:
                    point, (value, var) = self.point(trial), self._imputed(trial, worst=False)
                else:
                    continue
                if point is not None and value is not None:
                    told.append((point, value))
                    noise.append(var)
                    self._told_imputed.add(trial.number)
            running = [(n, p) for n, p in running if n not in self._told_imputed]
            return ModelState(told, running, len(self._trials), noise)

    def _joint_state(self) -> ModelState:
        """:meth:`model_state` for a joint model: every rung value below the top, at its
        resource, and every finished trial's value but a pruned one's (its last value
        is a rung's, told already)."""
        told: list[tuple[Point, float]] = []
        running = []
        for trial in self.trials:
            point = self.point(trial)
            if point is None:
                continue
            told += self._rung_results(trial)
            if trial.state is TrialState.RUNNING:
                running.append((trial.number, point))
            elif not trial.state.is_stopped_early():
                value = self.told_value(trial)
                if value is not None:
                    told.append((point, value))
        return ModelState(told, running, len(self._trials))

    def _rung_results(self, trial: Trial, since: Trial | None = None) -> list[tuple[Point, float]]:
        """``trial``'s values at the rungs below the top, each as a result at the rung's
        resource (0 at the first rung, 1 at the top, on a log scale); only the rungs
        ``since`` (the trial before a report) had not reached. Most reports reach no
        rung: the point is built only when one does."""
        assert self.rungs is not None
        reached = []
        for k in range(len(self.rungs) - 1):
            value = self.rung_value(trial, k)
            if value is not None and (since is None or self.rung_value(since, k) is None):
                reached.append((k, value))
        point = self.point(trial) if reached else None
        if point is None:
            return []
        low, top = self.rungs[0], self.rungs[-1]
        return [
            ([*point, math.log(self.rungs[k] / low) / math.log(top / low)], value)
            for k, value in reached
        ]

    def _below_model(self) -> range:
        """The indices of the rungs below the one the model fits."""
        assert self.rungs is not None
        return range(len(self.rungs) - 1 if self._model_rung is None else self._model_rung)

    def _add_gains(self, trial: Trial, value: float) -> None:
        """Record how ``trial`` improved from each lower rung to ``value``, its value at
        the model's rung."""
        if self.rungs is None:
            return
        for k in self._below_model():
            early = self.rung_value(trial, k)
            if early is not None:
                self._gains.setdefault(k, []).append(value - early)

    def _imputed(self, trial: Trial, worst: bool = True) -> tuple[float | None, float]:
        """What the model is told of a trial pruned below its rung, and that value's own
        noise variance: the value at the highest rung it reached, plus the median gain
        from there to the model's rung of the trials that reached both (an additive
        learning-curve model), as uncertain as those gains are spread but never exactly
        0, which marks a measured value (gains that all agree, as an accuracy's can when
        each moved by the same count of images, still make an estimate: no best to
        improve on); while fewer than ``_MIN_GAINS`` trials show that gain, the worst
        value told (as measured), or with ``worst=False`` (a trial still running),
        None."""
        if self.rungs is not None:
            for k in reversed(self._below_model()):
                early = self.rung_value(trial, k)
                if early is not None:
                    gains = self._gains.get(k, [])
                    if len(gains) >= _MIN_GAINS:
                        spread = statistics.pvariance(gains) or sys.float_info.min
                        return early + statistics.median(gains), spread
                    break
        return (self._worst if worst else None), 0.0

    def _told(self, value: float | None) -> float | None:
        if value is not None and (self._worst is None or value > self._worst):
            self._worst = value
        return value

    def _refit_on_new_rung(self) -> bool:
        """Move the model to a higher rung if one has enough values now; listeners start
        over from the values there."""
        rung = self._pick_model_rung()
        if rung == self._model_rung:
            return False
        self._model_rung = rung
        logger.info(
            "dtune: the model of study %r now fits values at resource %s",
            self.name,
            "max" if self.model_rung is None else f"{self.model_rung:g}",
        )
        self._start_over()
        return True

    def _start_over(self) -> None:
        """The listeners start over from :meth:`model_state`."""
        state = self.model_state()
        for listener in self._listeners:
            listener.reset(state)

    # -- listeners ------------------------------------------------------------------------

    def subscribe(self, listener: LedgerListener) -> None:
        """Tell ``listener`` of every change from now on."""
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: LedgerListener) -> None:
        """Stop telling ``listener``."""
        with self._lock:
            self._listeners.remove(listener)

    @contextlib.contextmanager
    def listening(self, listener: LedgerListener) -> Iterator[None]:
        """``listener`` subscribed for the length of a ``with`` block (if it was not
        already)."""
        with self._lock:
            known = any(listener is other for other in self._listeners)
            if not known:
                self._listeners.append(listener)
        try:
            yield
        finally:
            if not known:
                self.unsubscribe(listener)

    # -- changes: store first, then the view, then the listeners ---------------------------

    def _commit(self, trials: Sequence[Trial]) -> None:
        if self._unwritten is not None:
            self._unwritten.extend(trials)
        else:
            self.storage.put_trials(self.name, trials)
        self._trials.update((t.number, t) for t in trials)

    @contextlib.contextmanager
    def deferred_writes(self) -> Iterator[None]:
        """Changes made in the block are written to the store in one transaction when
        it ends (one fsync, not one each), the view and the listeners updated at once.
        The caller must act on none of them outside this process (submit a trial, say)
        before the block ends. Used by the driver to start a batch of trials.

        Examples
        --------
        >>> from dtune.storage import InMemoryStorage, StudyRecord
        >>> from dtune.space import Real
        >>> store = InMemoryStorage()
        >>> store.create_study(StudyRecord("s", "minimize", None, {}, {}, 0.0))
        >>> ledger = Ledger(store, "s", SearchSpace({"x": Real(0.0, 1.0)}), "minimize")
        >>> with ledger.deferred_writes():
        ...     _ = [ledger.start({"x": x}) for x in (0.1, 0.2)]
        ...     len(store.get_trials("s")), len(ledger.trials)
        (0, 2)
        >>> len(store.get_trials("s"))
        2
        """
        with self._lock:
            if self._unwritten is not None:  # nested: the outer block writes
                yield
                return
            self._unwritten = []
            try:
                yield
            finally:
                unwritten, self._unwritten = self._unwritten, None
                if unwritten:
                    latest = {t.number: t for t in unwritten}
                    self.storage.put_trials(self.name, list(latest.values()))

    def _started(self, trial: Trial) -> None:
        point = self.space.to_point(trial.params)
        for listener in self._listeners:
            listener.started(trial.number, point)

    def _ended(self, trials: Sequence[Trial]) -> None:
        if self.joint:  # a pruned trial's rung values were told as they came
            ended = []
            for t in trials:
                point = self.point(t)
                if point is not None:
                    told = None if t.state.is_stopped_early() else self.told_value(t)
                    ended.append((t.number, point, told))
            for listener in self._listeners:
                listener.finished(ended)
            return
        if self._refit_on_new_rung():
            return  # the listeners started over from the store, these trials included
        results, noise = [], {}
        retold: list[tuple[Point, float, float]] = []
        for t in trials:
            point = self.point(t)
            if point is None:
                continue
            estimated = t.number in self._told_imputed  # a promoted trial's, told before
            self._told_imputed.discard(t.number)
            told = None
            if self._model_rung is None and t.state.is_finished():
                told = self._told(self.told_value(t))
                if told is not None and t.state is TrialState.COMPLETE:
                    self._add_gains(t, told)
            elif self._model_rung is not None and t.number not in self._told_early:
                told = self._told(self.rung_value(t, self._model_rung))
                if told is not None:
                    self._add_gains(t, told)
            if told is None and t.state.is_stopped_early() and t.number not in self._told_early:
                # Stopped for doing worse than others: the model learns to avoid its point
                # (told what its curve would reach) rather than propose it again.
                told, noise[t.number] = self._imputed(t)
                if told is not None:
                    self._told_imputed.add(t.number)
            if estimated:
                if told is None:  # nothing to replace its estimate with (a failure)
                    self._start_over()
                    return
                # What it did next replaces its estimate in place: the model keeps its
                # kernel and the suggestion process its ready points (starting over
                # cost them, run 26); a second result at the point made it worse.
                retold.append((point, told, noise.pop(t.number, 0.0)))
                told = None
            results.append((t.number, point, told))
        for listener in self._listeners:
            if retold:
                # a running trial's estimate counts like a result for the refits: the
                # value that replaces it does not make one due
                listener.retold(retold, refit=not self.estimate_running)
            listener.finished(results, noise)

    def start(self, params: dict[str, Any], *, submitted: float | None = None) -> Trial:
        """A new RUNNING trial at ``params``, under the next number."""
        with self._lock:
            trial = Trial(
                number=self._next_number,
                state=TrialState.RUNNING,
                params=params,
                submitted=time.time() if submitted is None else submitted,
            )
            self._commit([trial])
            self._next_number += 1
            self._started(trial)
            return trial

    def restart(self, number: int, *, submitted: float | None = None) -> Trial:
        """Run an INTERRUPTED trial again, under its own number and point. The reports
        of its unfinished run stay until the new run reports: from the start (its first
        step again), or from a checkpoint, when the earlier reports up to that step stay
        (:meth:`report`)."""
        return self._run_again(number, TrialState.INTERRUPTED, submitted)

    def resume(self, number: int, *, submitted: float | None = None) -> Trial:
        """Run a PAUSED trial on (a promotion-type ASHA promoted it), under its own
        number and point, its reports kept: it goes on from the step after its last
        one, or from the start, when its new run's reports replace them (:meth:`report`).
        The seconds of its runs so far go to ``earlier_s``."""
        return self._run_again(number, TrialState.PAUSED, submitted)

    def _run_again(self, number: int, state: TrialState, submitted: float | None) -> Trial:
        """Trial ``number``, now in ``state``, RUNNING again with its reports. A paused
        trial's runs so far count in ``earlier_s``; an interrupted run's do not (its
        result never came)."""
        with self._lock:
            old = self._trials[number]
            if old.state is not state:
                raise ValueError(f"trial {number} is {old.state.value}, not {state.value}")
            paused = state is TrialState.PAUSED
            trial = Trial(
                number=number,
                state=TrialState.RUNNING,
                params=old.params,
                worker=old.worker if paused else None,
                submitted=time.time() if submitted is None else submitted,
                reports=old.reports,
                earlier_s=(old.duration or 0.0) if paused else old.earlier_s,
            )
            self._commit([trial])
            self._started(trial)
            return trial

    def report(self, number: int, report: Report) -> Trial | None:
        """Record an intermediate result of RUNNING trial ``number`` (store first); the
        model is told of it if it is the trial's value at the rung the model fits. A
        report of a trial that no longer runs is dropped (None).

        A step not after the trial's last one means its run started again (Dask reran
        its task after its worker died, or a driver restarted it; a run never reports a
        step twice): the earlier run's reports from that step on are dropped. A run from
        the start drops them all; one that resumed from a checkpoint keeps those before.
        """
        return self.report_many([(number, report)])[0]

    def report_many(self, reports: Sequence[tuple[int, Report]]) -> list[Trial | None]:
        """:meth:`report` for each of ``reports`` in order, written to the store in one
        call (one transaction in SQLite) before any is applied; each trial as it stands
        after its report, or None for a report dropped."""
        with self._lock:
            written: dict[int, list[Report]] = {}
            last: dict[int, float] = {}
            kept: list[tuple[int, Report] | None] = []
            for number, report in reports:
                trial = self._trials.get(number)
                if trial is None or trial.state is not TrialState.RUNNING:
                    kept.append(None)
                    continue
                before = last.get(number, trial.reports[-1].step if trial.reports else -math.inf)
                if report.step <= before:  # run again: the earlier run's reports from here go
                    self.storage.delete_reports(self.name, number, from_step=report.step)
                    earlier = written.get(number, [])
                    written[number] = [r for r in earlier if r.step < report.step]
                written.setdefault(number, []).append(report)
                last[number] = report.step
                kept.append((number, report))
            if written:
                self.storage.put_many_reports(self.name, written)
            return [None if item is None else self._apply_report(*item) for item in kept]

    def _apply_report(self, number: int, report: Report) -> Trial:
        """The view's part of :meth:`report_many`, once the store has the report."""
        trial = before = self._trials[number]
        if trial.reports and report.step <= trial.reports[-1].step:
            logger.info("dtune: trial %d runs again from step %d", number, report.step)
            kept = tuple(r for r in trial.reports if r.step < report.step)
            self._count_reached(trial.reports, -1)
            self._count_reached(kept, +1)
            trial = replace(trial, reports=kept)
        since = trial.reports[-1].step if trial.reports else -math.inf
        trial = replace(trial, reports=(*trial.reports, report))
        self._count_reached(trial.reports, +1, since)
        self._trials[number] = trial
        if self.joint:
            reached = self._rung_results(trial, since=before)
            if reached:
                for listener in self._listeners:
                    listener.observed(reached)
        elif self.rungs is not None and not self._refit_on_new_rung():
            k = self._model_rung
            if k is not None and number not in self._told_early:
                value = self.rung_value(trial, k)
                point = self.point(trial)
                if value is not None and point is not None:
                    self._told_early.add(number)
                    self._told(value)
                    self._add_gains(trial, value)
                    estimated = number in self._told_imputed  # a promoted trial's
                    self._told_imputed.discard(number)
                    for listener in self._listeners:
                        if estimated:  # its value replaces the estimate; not pending
                            listener.retold([(point, value, 0.0)], not self.estimate_running)
                        listener.finished([(number, point, None if estimated else value)])
            if (
                self.estimate_running
                and number not in self._told_early
                and any(since < self.rungs[j] <= report.step for j in self._below_model())
            ):
                self._tell_estimate(trial)
        return trial

    def _tell_estimate(self, trial: Trial) -> None:
        """Tell the model what ``trial``, still running, is expected to reach at the
        model's rung from the rung it just reached (:meth:`_imputed`), in place of its
        earlier estimate; it is no longer pending. A trial that survives a rung is the
        search's best news: told only when it completes, the model would propose the
        next dozens of points without it."""
        point, (value, var) = self.point(trial), self._imputed(trial, worst=False)
        if point is None or value is None:
            return
        estimated = trial.number in self._told_imputed
        self._told_imputed.add(trial.number)
        for listener in self._listeners:
            if estimated:  # a better estimate: no refit of the kernel for it
                listener.retold([(point, value, var)], refit=False)
            else:
                listener.finished([(trial.number, point, value)], {trial.number: var})

    def place(self, placements: dict[int, str]) -> None:
        """Record the workers running trials were given to (before they finish), so live
        views (the dashboard's timeline) can place them."""
        with self._lock:
            placed = [
                replace(self._trials[n], worker=worker)
                for n, worker in placements.items()
                if n in self._trials
                and self._trials[n].state is TrialState.RUNNING
                and self._trials[n].worker != worker
            ]
            if placed:
                self._commit(placed)

    def finish(self, results: Sequence[tuple[int, Outcome]]) -> list[Trial]:
        """Finish RUNNING trials with what their runs produced: COMPLETE, or FAILED when
        the outcome carries an error. Raises ``ValueError`` for a trial that is not
        running, before anything is written."""
        with self._lock:
            finished = []
            for number, outcome in results:
                trial = self._trials.get(number)
                if trial is None:
                    raise ValueError(f"trial {number!r} is not in study {self.name!r}")
                if trial.state is not TrialState.RUNNING:
                    raise ValueError(f"trial {number} is already {trial.state.value}")
                failed = outcome.error is not None or outcome.value is None
                if failed:
                    state = TrialState.FAILED
                elif outcome.paused:
                    state = TrialState.PAUSED
                else:
                    state = TrialState.PRUNED if outcome.pruned else TrialState.COMPLETE
                finished.append(
                    Trial(
                        number=number,
                        state=state,
                        params=trial.params,
                        value=outcome.value,
                        metrics=outcome.metrics,
                        worker=outcome.worker or trial.worker,
                        host=outcome.host,
                        device=outcome.device,
                        submitted=trial.submitted,
                        started=outcome.started,
                        finished=outcome.finished,
                        error=(outcome.error or "no value") if failed else None,
                        reports=trial.reports,
                        earlier_s=trial.earlier_s,
                    )
                )
            if finished:
                self._commit(finished)
                self._complete += sum(t.state is TrialState.COMPLETE for t in finished)
                self._ended(finished)
            return finished

    def interrupt(self, numbers: Sequence[int]) -> list[Trial]:
        """Mark running trials INTERRUPTED: their points run again first, under their
        own numbers (:meth:`restart`), in this search or when the study resumes."""
        with self._lock:
            marked = [
                Trial(
                    number=n,
                    state=TrialState.INTERRUPTED,
                    params=self._trials[n].params,
                    submitted=self._trials[n].submitted,
                    error="interrupted: the driver stopped while this trial ran",
                    reports=self._trials[n].reports,
                    earlier_s=self._trials[n].earlier_s,
                )
                for n in numbers
                if self._trials[n].state is TrialState.RUNNING
            ]
            if marked:
                self._commit(marked)
                self._ended(marked)
            return marked

    def take_interrupted(self) -> list[Trial]:
        """Trials a stopped driver left RUNNING (marked INTERRUPTED now) or INTERRUPTED:
        the ones to run again first."""
        with self._lock:
            self.interrupt([t.number for t in self.in_state(TrialState.RUNNING)])
            return self.in_state(TrialState.INTERRUPTED)

    def sync(self) -> bool:
        """Catch up with trials another driver (or Study object) wrote to the store
        since this ledger read it; listeners start over if anything changed."""
        with self._lock:
            stored = {t.number: t for t in self.storage.get_trials(self.name)}
            if stored == self._trials:
                return False
            self._load()
            state = self.model_state()
            for listener in self._listeners:
                listener.reset(state)
            return True

    # -- the driver's claim -----------------------------------------------------------------

    def claim(self, owner: str) -> None:
        """Make ``owner`` the one driver of this study, or renew its claim.

        Raises
        ------
        StudyInUseError
            When another live driver holds it.
        """
        holder = self.storage.claim(self.name, owner, stale_after=CLAIM_STALE_S)
        if holder is not None:
            raise StudyInUseError(
                f"study {self.name!r} in {self.storage!r} is being searched by another "
                f"driver ({holder}). Wait for it, stop it, or use another study name. A "
                f"driver that died gives the study up after {CLAIM_STALE_S:g} s (at once on "
                "its own host)"
            )
        self._claimed_at = time.monotonic()

    def renew_claim(self, owner: str) -> None:
        """Renew ``owner``'s claim if it is due (every few seconds)."""
        if time.monotonic() - self._claimed_at < _CLAIM_RENEW_S:
            return
        holder = self.storage.claim(self.name, owner, CLAIM_STALE_S)
        if holder is not None:
            raise StudyInUseError(
                f"driver {holder} took study {self.name!r} over while this one did not "
                f"renew its claim for over {CLAIM_STALE_S:g} s"
            )
        self._claimed_at = time.monotonic()

    def release(self, owner: str) -> None:
        """Give up ``owner``'s claim."""
        self.storage.release(self.name, owner)
