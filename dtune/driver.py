"""The asynchronous search loop: start trials on a backend, record each result the
moment its run ends, and refill that slot at once.

The loop works through public surfaces only: the :class:`~dtune.ledger.Ledger` (every
change of a trial's state, store first), a :class:`~dtune.suggest.Suggester` (points;
it listens to the ledger, so it learns of results from there), and a
:class:`~dtune.execution.Backend` (a Dask cluster, or a simulated one with a simulated
clock: the same loop, no Dask, for tests and quality benchmarks)::

    optimize ─▶ claim, sync ─▶ refill: suggester.suggest ─▶ ledger.start ─▶ backend.submit
                               ▲                                                │
                               └── ledger.finish ◀── backend.wait (as each ends) ┘

For each finished run the driver commits the trial (and the ledger tells the
suggester), checks the failure limits, refills the free slots, and only then does
bookkeeping that talks to the store or the scheduler (the claim, the workers of
running trials), so a worker's gap between trials is the refill alone.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import pickle
import secrets
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from dtune.exceptions import SchedulerLostError, TooManyFailuresError
from dtune.execution import Backend, DaskBackend, IncomingReport, PackedObjective, TrialRun
from dtune.ledger import Ledger
from dtune.pruners import Pruner
from dtune.storage import driver_owner
from dtune.suggest import Suggester
from dtune.trial import Report, Trial, TrialState

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["BackendFactory", "Callback", "SearchSettings", "run_search"]

logger = logging.getLogger("dtune")

# The loop wakes at least this often (budgets, the claim) when no run ends.
_TICK_S = 1.0
# The rungs' cutoffs (the workers judge reports at rungs by them) are sent again at most
# this often (each time to every worker).
_CUTOFFS_EVERY_S = 0.05
# Trials started in one store transaction at most: with synchronous=FULL each commit is
# an fsync (~1-5 ms), which at 256 workers was a quarter of the driver's time; more per
# batch would hold the first of them back from its worker for longer.
_START_BATCH = 32
# A free slot waits for a model point at most this share of the recent trials' median
# duration (pruned ones count), and at least _MIN_PATIENCE_S: then it gets a point
# without the model. With pruned trials of ~0.1 s ending dozens a second, a slot that
# waited the suggester's full second for the next batch idled ten trials' time.
_PATIENCE_SHARE = 0.2
_MIN_PATIENCE_S = 0.01
_RECENT_TRIALS = 64
Callback = Callable[[Any, Trial], None]


class BackendFactory(Protocol):
    """Something that opens a backend for one search, such as
    :class:`dtune.sim.SimulatedCluster`; pass it as ``optimize(client=...)``."""

    def open(self, run: TrialRun) -> contextlib.AbstractContextManager[Backend]:
        """A backend running ``run``'s trials, for a ``with`` block."""


@dataclass(frozen=True)
class SearchSettings:
    """How one ``optimize`` call runs; see :meth:`dtune.Study.optimize`."""

    n_trials: int
    gpus_per_trial: int = 1
    timeout: float | None = None
    trial_timeout: float | None = None
    isolate: bool = False
    max_failures: int | None = None
    max_consecutive_failures: int | None = 10
    callbacks: Sequence[Callable[[Trial], None]] = ()
    progress: bool = True
    pruner: Pruner | None = None
    stop: threading.Event | None = None  # set: start no more trials (Study.stop)


def _packed(objective: Callable[..., Any]) -> PackedObjective:
    """The objective pickled for Dask workers, once per search; a clear error if it
    cannot be (checked before anything starts, whatever the backend)."""
    try:
        return PackedObjective.of(objective)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise TypeError(
            f"the objective {objective!r} cannot be pickled to send it to Dask workers "
            f"({exc}). Define it at module level or in the notebook, and create things "
            "like open files, locks, clients or GPU models inside it rather than "
            "capturing them from outside."
        ) from exc


@contextlib.contextmanager
def _open_backend(
    client: Client | str | BackendFactory | None,
    run: TrialRun,
    packed: PackedObjective,
    key_prefix: str,
    n_workers: int | None,
    announce: bool,
) -> Iterator[Backend]:
    """A backend factory's (given the objective itself), or a Dask cluster's (given the
    packed objective: each task carries its bytes, not a fresh pickle of the function)."""
    if client is not None and callable(getattr(client, "open", None)):
        with client.open(run) as backend:  # type: ignore[union-attr]
            yield backend
        return
    from dtune.cluster import connect

    with connect(client, n_workers=n_workers, announce=announce) as dask_client:  # type: ignore[arg-type]
        backend = DaskBackend(dask_client, replace(run, objective=packed), key_prefix)
        try:
            yield backend
        finally:
            backend.close()


def run_search(
    ledger: Ledger,
    suggester: Suggester,
    objective: Callable[..., Any],
    settings: SearchSettings,
    *,
    objective_key: str | None = None,
    client: Client | str | BackendFactory | None = None,
    n_workers: int | None = None,
    services: Callable[[str | None], contextlib.AbstractContextManager[Any]] | None = None,
) -> None:
    """Run ``settings.n_trials`` more trials; see :meth:`dtune.Study.optimize`.

    ``suggester`` is started (its process, unless it runs already) after the claim and the
    sync with the store, and listens to ``ledger`` while the search runs; it is not
    closed afterwards (its owner, the study, keeps it for the next call).
    ``services(dashboard_link)`` is held open while the backend is up (the dashboard).
    """
    packed = _packed(objective)
    owner = driver_owner()
    ledger.claim(owner)
    try:
        ledger.sync()
        run = TrialRun(
            objective=objective,
            objective_key=objective_key,
            gpus_per_trial=settings.gpus_per_trial,
            isolate=settings.isolate,
            timeout=settings.trial_timeout,
            pruner=settings.pruner,
            study=ledger.name,
        )
        # Dask treats equal keys as one task: two drivers using the same study name on
        # one cluster, or a retried trial, must not share keys.
        key_prefix = f"dtune-{ledger.name}-{secrets.token_hex(3)}"
        suggester.start()
        with (
            ledger.listening(suggester),
            _open_backend(client, run, packed, key_prefix, n_workers, settings.progress) as backend,
            services(backend.dashboard_link) if services else contextlib.nullcontext(),
        ):
            _Search(ledger, suggester, backend, settings, owner).run()
        _log_summary(suggester.summary())
    finally:
        ledger.release(owner)


def _log_summary(stats: dict[str, Any]) -> None:
    if "asks" not in stats:
        return
    logger.info(
        "dtune: %d suggestion batches (median %.0f ms, max %.0f ms to compute), %d refits "
        "(%.1f s in all); the driver waited for a suggestion %d times (%.1f s in all), "
        "drew %d points itself, without the model; %d suggestion process restarts",
        stats["asks"], stats["ask_median_ms"], stats["ask_max_ms"], stats["fits"],
        stats["fit_total_s"], stats["waits"], stats["wait_total_s"], stats["drawn_in_driver"],
        stats["restarts"], extra={"dtune_suggest": stats},
    )  # fmt: skip


class _Progress:
    def __init__(self, ledger: Ledger, total: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self._ledger = ledger
        self._bar = tqdm(
            total=total, desc=f"dtune {ledger.name}", unit="trial", disable=not enabled
        )
        self.failed = 0
        self.early: dict[int, TrialState] = {}  # pruned or paused, by number
        self._counted: set[int] = set()  # the bar counts a trial's first end only
        top = ledger.top(1)  # then kept up to date from each finished trial
        self._best = top[0].value if top else None

    def update(self, finished: Sequence[Trial], running: int) -> None:
        self.failed += sum(t.state is TrialState.FAILED for t in finished)
        for t in finished:
            if t.state.is_stopped_early():
                self.early[t.number] = t.state
            else:
                self.early.pop(t.number, None)  # a promoted trial that completed
        postfix: dict[str, Any] = {"running": running, "failed": self.failed}
        for state in (TrialState.PRUNED, TrialState.PAUSED):
            count = sum(s is state for s in self.early.values())
            if count:
                postfix[state.value.lower()] = count
        to_minimize = self._ledger.to_minimize
        for t in finished:
            if t.state is not TrialState.COMPLETE or t.value is None:
                continue
            if self._best is None or to_minimize(t.value) < to_minimize(self._best):
                self._best = t.value
        if self._best is not None:
            postfix["best"] = f"{self._best:.6g}"
        self._bar.set_postfix(postfix, refresh=False)
        new = {t.number for t in finished} - self._counted
        self._counted |= new
        self._bar.update(len(new))

    def close(self) -> None:
        self._bar.close()


class _Search:
    """One call of ``optimize``: the running trials, the budget, the failure counts."""

    def __init__(
        self,
        ledger: Ledger,
        suggester: Suggester,
        backend: Backend,
        settings: SearchSettings,
        owner: str,
    ) -> None:
        self.ledger = ledger
        self.suggester = suggester
        self.backend = backend
        self.settings = settings
        self.owner = owner
        self.deadline = None if settings.timeout is None else backend.now() + settings.timeout
        self.running: set[int] = set()
        self.retry: list[int] = []
        # Trials a promotion-type ASHA paused, which it may promote to run on.
        self.paused = {t.number for t in ledger.trials if t.state is TrialState.PAUSED}
        self.n_started = 0
        self.failures = self.consecutive_failures = 0
        self.durations: collections.deque[float] = collections.deque(maxlen=_RECENT_TRIALS)
        # A rung has values the cutoffs sent to the workers do not count yet (at the
        # start, a resumed study's: its first trials bring the cutoffs along).
        self.rung_news = True
        self.cutoffs_due = -math.inf
        pruner = settings.pruner
        self.rung_table = (
            None if pruner is None else pruner.rung_table(ledger.direction == "minimize")
        )

    def run(self) -> None:
        # Points left running by a driver that died are evaluated again first.
        self.retry = [t.number for t in self.ledger.take_interrupted()]
        for trial in self.ledger.trials:
            self._count_rungs(trial)
        bar = _Progress(self.ledger, self.settings.n_trials, self.settings.progress)
        try:
            self._share_cutoffs()
            self._refill()
            while self.running:
                done = self.backend.wait(_TICK_S)
                self._judge(self.backend.take_reports())
                finished = self._record(done)
                # A lost scheduler cancels every future: record them interrupted first.
                self._check_backend()
                self._check_failures(finished)
                self._pace(finished)
                self._refill()
                self._share_cutoffs()  # after the refill: no free worker waits for it
                # Bookkeeping that talks to the store or the scheduler waits until the
                # free workers have their next trials.
                self.ledger.renew_claim(self.owner)
                self.ledger.place(self.backend.placements())
                bar.update(finished, len(self.running))
                for trial in finished:
                    for callback in self.settings.callbacks:
                        callback(trial)
            self.cutoffs_due = -math.inf  # the workers end with the rungs' last cutoffs
            self._share_cutoffs()
        except BaseException:
            self._interrupt()
            raise
        finally:
            bar.close()

    def _pace(self, finished: Sequence[Trial]) -> None:
        """Tell the suggester how long a free slot may wait (see ``_PATIENCE_SHARE``)."""
        durations = [t.duration for t in finished if t.duration is not None]
        if durations:
            self.durations.extend(durations)
            typical = statistics.median(self.durations)
            self.suggester.set_patience(max(_MIN_PATIENCE_S, _PATIENCE_SHARE * typical))

    def _may_start(self) -> bool:
        """Whether trials may start (not stopped, in time): new ones within n_trials,
        and paused ones that are promoted whatever the count."""
        if self.settings.stop is not None and self.settings.stop.is_set():
            return False
        return self.deadline is None or self.backend.now() < self.deadline

    def _budget_left(self) -> bool:
        return self._may_start() and self.n_started < self.settings.n_trials

    def _promotion(self) -> int | None:
        """A paused trial the pruner promotes now (a promotion-type ASHA), or None."""
        pruner = self.settings.pruner
        if self.rung_table is None or not self.paused or pruner is None or not pruner.promotes:
            return None
        return self.rung_table.promotable(self.paused)

    def _refill(self) -> None:
        while self._may_start():
            slots = self.backend.slots()
            self.suggester.set_slots(slots)
            free = slots - len(self.running)
            if free <= 0:
                return
            # Up to _START_BATCH trials are recorded in one transaction, then submitted;
            # those ready go before the batch waits for the suggester's next point.
            trials: list[Trial] = []
            with self.ledger.deferred_writes():
                for _ in range(min(free, _START_BATCH)):
                    if not self._may_start():
                        break
                    now = self.backend.now()
                    promoted = None if self.retry else self._promotion()
                    if self.retry:
                        trial = self.ledger.restart(self.retry.pop(0), submitted=now)
                        self._count_rungs(trial)  # its earlier run's reports are gone
                        self.n_started += 1
                    elif promoted is not None:
                        trial = self.ledger.resume(promoted, submitted=now)
                        self.paused.discard(promoted)
                    elif not self._budget_left() or (trials and not self.suggester.ready_now()):
                        break
                    else:
                        wanted = min(free - len(trials), self.settings.n_trials - self.n_started)
                        # While it waits, reports of running trials are answered.
                        point = self.suggester.suggest(wanted, self._answer_reports)
                        params = self.ledger.space.to_params(point)
                        trial = self.ledger.start(params, submitted=now)
                        self.n_started += 1
                    trials.append(trial)
            for trial in trials:
                self.backend.submit(trial)
                self.running.add(trial.number)
            if not trials:
                return  # nothing to start: the budget is spent and nothing is promoted

    def _answer_reports(self) -> None:
        self._judge(self.backend.take_reports())
        self._share_cutoffs()  # the driver waits for a point anyway

    def _judge(self, reports: Sequence[IncomingReport]) -> None:
        """Record the reports (the store first, all in one write), then tell each trial
        that waits whether to stop; a report that reached a rung makes the rungs'
        cutoffs due to the workers (:meth:`_count_rungs`, :meth:`_share_cutoffs`)."""
        if not reports:
            return
        pruner = self.settings.pruner
        minimize = self.ledger.direction == "minimize"
        now = self.backend.now()
        recorded = self.ledger.report_many(
            [(r.number, Report(r.step, r.value, r.metrics, time=now)) for r in reports]
        )
        everyone: list[Trial] | None = None  # a snapshot, taken if a report is judged
        for report, trial in zip(reports, recorded, strict=True):
            if trial is not None:
                self._count_rungs(trial)
            stop = False
            # Only a report that waits can be told to stop (Pruner.stops_at): the others,
            # most of them, are recorded and not judged.
            if report.wait and trial is not None and pruner is not None:
                if everyone is None:
                    everyone = self.ledger.trials
                stop = pruner.should_stop(trial, everyone, minimize)
            self.backend.answer(report, stop)

    def _share_cutoffs(self) -> None:
        """A rung has new values: send the workers its new cutoffs, which they judge
        reports there by (at most every ``_CUTOFFS_EVERY_S``, and a tenth of the time)."""
        now = time.monotonic()
        if self.rung_table is None or not self.rung_news or now < self.cutoffs_due:
            return
        self.rung_news = False
        self.backend.share_cutoffs(self.rung_table.cutoffs(), self.ledger.direction == "minimize")
        self.cutoffs_due = now + max(_CUTOFFS_EVERY_S, 10 * (time.monotonic() - now))

    def _count_rungs(self, trial: Trial) -> None:
        """Keep the rungs' values (:class:`~dtune.pruners.RungTable`) in step with
        ``trial``'s reports; new values make the cutoffs due to the workers."""
        if self.rung_table is not None and self.rung_table.update(trial):
            self.rung_news = True

    def _record(self, done: list[tuple[int, Any]]) -> list[Trial]:
        lost = [number for number, outcome in done if outcome is None]
        if lost:  # cancelled by someone else, or unreachable: run again, same number
            self.ledger.interrupt(lost)
            self.running.difference_update(lost)
            self.retry.extend(lost)
            self.n_started -= len(lost)
        results = [(number, outcome) for number, outcome in done if outcome is not None]
        if not results:
            return []
        self.running.difference_update(number for number, _ in results)
        finished = self.ledger.finish(results)
        self.paused.update(t.number for t in finished if t.state is TrialState.PAUSED)
        for trial in finished:
            if trial.state is TrialState.FAILED:
                logger.warning(
                    "dtune: trial %d failed: %s",
                    trial.number,
                    (trial.error or "").strip().splitlines()[-1:],
                )
        return finished

    def _check_failures(self, finished: Sequence[Trial]) -> None:
        for trial in finished:
            if trial.state is not TrialState.FAILED:
                self.consecutive_failures = 0
                continue
            self.failures += 1
            self.consecutive_failures += 1
            for count, limit, name, what in (
                (self.failures, self.settings.max_failures, "max_failures", "trials failed"),
                (
                    self.consecutive_failures,
                    self.settings.max_consecutive_failures,
                    "max_consecutive_failures",
                    "trials failed in a row",
                ),
            ):
                if limit is not None and count >= limit:
                    raise TooManyFailuresError(
                        f"stopping study {self.ledger.name!r}: {count} {what} ({name}={limit}). "
                        f"The last one, trial {trial.number} with {trial.params}, failed "
                        f"with:\n{trial.error}"
                    )

    def _check_backend(self) -> None:
        try:
            self.backend.check()
        except SchedulerLostError as exc:
            raise SchedulerLostError(
                f"{exc}. Every finished trial is in {self.ledger.storage!r}; the trials that "
                "were running are marked interrupted and run first when the study resumes "
                "on a new cluster"
            ) from None

    def _interrupt(self) -> None:
        """Cancel what runs and mark it INTERRUPTED, so a resumed study retries it."""
        if not self.running:
            return
        self.backend.cancel()
        self.ledger.interrupt(sorted(self.running))
        self.running.clear()
