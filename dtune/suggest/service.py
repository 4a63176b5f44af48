"""The suggestion process's loop: keep fresh pending-aware suggestions ready, tell
results as they come, refit the surrogate's hyperparameters in a background thread.

The optimizer's work (surrogate fits, acquisition searches) is CPU-bound Python and
numpy. Run in a thread of the driver it would hold the GIL that the Dask client's (and
an embedded scheduler's) event loop needs, and every finished trial would wait for it
to be noticed: measured on a 2-core machine, a thread engine left a median gap of
0.2–0.3 s between a worker's trials, against 0.02 s without a model. So it runs in a
process of its own (:class:`~dtune.suggest.process.ProcessSuggester` is the driver's
side) and talks over a socket::

    driver process                          suggestion process
    ──────────────────────────────          ─────────────────────────────────────
    sys.path, ("init", state) ───────────▶  optimizer rebuilt from told results
                ◀──────────── ("hello",) ─  imports done
    ("depth", n) ────────────────────────▶  keep n fresh suggestions ready (up to
                                            12n while results outrun batches, n ≤ 3)
    ("reset", told, running) ────────────▶  optimizer rebuilt (another rung, a sync)
    ("finished", [(number, value, noise)]) ▶ tell (cheap), generation += 1 (every
                                            result; every depth // 2 from 13 slots)
    ("observed", [(point, value)]) ──────▶  the same, for a running trial's rung value
                                            (a joint model: the point has its resource)
    ("retold", [(point, value, noise)],  ▶  an estimate replaced in place (a promoted
     refit)                                 trial's: the kernel refitted in the
                                            background; a running trial's: not)
    take ◀ ("ready", gen, points, s, cpu)   ask_batch: a batch conditioned on told +
    ("submitted", number, point) ────────▶       running + ready points, kernel fixed
                ◀──── ("drop", keys) ──────  stale spares replaced by fresh ones
    ("dropped", keys) ───────────────────▶  the driver will not take those
          ◀─ ("fitted", s, what, cpu) ────  fit thread: hyperparameter refits, adopted
                                            when done (suggestions never wait for one);
                                            search thread: the same for the trust
                                            region's and restart searches' models

A suggestion computed before the latest result is *stale*: still handed out rather than
let a worker idle, but replaced as soon as fresh ones exist. With many slots, a batch
costs a fixed ~0.15 s (the posterior over the candidates, conditioned on hundreds of
running points) that would be paid again for every result (64 a second at 256 slots):
from 13 slots (depth 4) a suggestion goes stale only after ``depth // 2`` results (an
eighth of the slots), and a new batch is computed once the fresh ones fall to half the
depth, so each batch is worth its fixed cost. Up to 12 slots (depth 2-3), every result
makes the ready suggestions stale, as it always did. When results arrive faster than
batches are computed (early stopping prunes trials of ~0.1 s, dozens a second), the
depth grows (up to 12 slots) to cover two of the slowest recent batches' worth of
results, up to twelve times the driver's, so a freed slot finds a point ready instead of
waiting for the next batch. The process draws no initial design (the driver's copy
does), and exits when the driver's end closes.

The refit threads run at the process's own priority. At a lower one (niceness +10) the
batches got slower at 256 workers on 2 cores (0.76 s median against 0.46 s): a refit
thread preempted while it holds the GIL holds up the batch thread of the same process.
"""

from __future__ import annotations

import collections
import contextlib
import math
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from threadpoolctl import threadpool_limits

from dtune.optimizer import OptimizerSettings, PendingAwareOptimizer, Point
from dtune.space import SearchSpace, point_key

T = TypeVar("T")

# How far back the rate of results is counted (see _Service.depth).
_RATE_WINDOW_S = 2.0
# The ready suggestions cover this many batches' worth of results, at most this many
# times the depth the driver asked for.
_COVER_BATCHES = 2.0
_MAX_DEPTH_FACTOR = 12
_TURNOVER_MAX_DEPTH = 3  # the driver's depth up to 12 slots
_BATCHES_TIMED = 9

__all__ = ["serve"]


def serve(conn: Connection) -> None:
    """Answer the driver on ``conn`` until it says stop or goes away."""
    try:
        _, space, settings, told, running, depth = conn.recv()
        _Service(conn, space, settings, told, running, depth).run()
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the driver went away
    except BaseException:
        with contextlib.suppress(OSError):
            conn.send(("error", traceback.format_exc()))


def _step(depth: int) -> int:
    """See :attr:`_Service.step`."""
    return max(1, depth // 2)


def _timed(fit: Callable[[], T]) -> tuple[T, float]:
    """``fit()`` and the CPU seconds its thread spent on it."""
    cpu = time.thread_time()
    return fit(), time.thread_time() - cpu


class _Service:
    def __init__(
        self,
        conn: Connection,
        space: SearchSpace,
        settings: OptimizerSettings,
        told: list[tuple[Point, float, float]],
        running: list[tuple[int, Point]],
        depth: int,
    ) -> None:
        self.conn = conn
        self.space, self.settings = space, settings
        self.asked_depth = depth  # the driver's: a quarter of the slots, at least 2
        self.arrivals: collections.deque[tuple[float, int]] = collections.deque()
        # The last batches' wall times (the slowest of them sets the depth).
        self.batch_seconds: collections.deque[float] = collections.deque(maxlen=_BATCHES_TIMED)
        self.generation = 0  # bumps with tells; a suggestion from an older one is stale
        self.told_since = 0  # results told since the generation last moved
        self.fitting: Future | None = None  # a hyperparameter refit in the fit thread
        self.fit_started = 0.0
        # A trust region's or restart search's refit in the search thread, and its search.
        self.search_fitting: tuple[PendingAwareOptimizer, Future] | None = None
        self.search_fit_started = 0.0
        self.start_over(told, running)

    def start_over(
        self, told: list[tuple[Point, float, float]], running: list[tuple[int, Point]]
    ) -> None:
        """A new optimizer told ``told`` (point, value, the value's own noise variance)."""
        # The driver's own copy draws the initial design; this one serves the model.
        self.optimizer = PendingAwareOptimizer(
            self.space, self.settings.replace(n_initial_points=0)
        )
        self.optimizer.defer_search_fits()  # run in the search thread
        self.optimizer.tell_rows(told)
        self.pending: dict[int, Point] = dict(running)
        self.ready: list[tuple[int, Point]] = []
        self.dropped: list[Point] = []  # busy until the driver acknowledges the drop
        self.results: list[tuple[Point, float, float]] = []  # with each one's noise
        self.next_generation()
        self.fitting = None  # a refit of the old model, if running, is not adopted
        self.search_fitting = None

    def next_generation(self) -> None:
        self.generation += 1
        self.told_since = 0

    @property
    def depth(self) -> int:
        """How many fresh suggestions to keep ready: the driver's depth, or, when results
        arrive faster than batches are computed (pruned trials end every few tens of
        milliseconds), enough for the results of ``_COVER_BATCHES`` of the slowest of
        the last ``_BATCHES_TIMED`` batches, up to ``_MAX_DEPTH_FACTOR`` times the
        driver's depth. Each batch is then larger and worth its fixed cost, and a freed
        slot finds a point ready rather than waiting for the next batch. The slowest
        batch, not the median one: the ready points run out during the slow ones (a
        refit holding the GIL on a busy machine). With the median (30 ms; the slowest
        0.5-1.3 s) and a cap of four times, the driver drew 16-39% of an ASHA search's
        points without the model on 8 workers and 2 cores; with these, 3-6%.

        Only up to ``_TURNOVER_MAX_DEPTH``: there a batch is 1-3 points and costs its
        fixed part, where from 13 slots a batch is a quarter of them and costs more the
        more points it has, so a depth that grew with the batches' time could feed on
        itself (at 256 workers the rule would rarely apply anyway: 64 results a second
        and 0.45-s batches ask for 58 points, below the depth of 64)."""
        if self.asked_depth > _TURNOVER_MAX_DEPTH:
            return self.asked_depth
        self.forget_old_arrivals()
        rate = sum(n for _, n in self.arrivals) / _RATE_WINDOW_S
        batch = max(self.batch_seconds, default=0.0)
        wanted = math.ceil(_COVER_BATCHES * rate * batch)
        return min(_MAX_DEPTH_FACTOR * self.asked_depth, max(self.asked_depth, wanted))

    def forget_old_arrivals(self) -> None:
        """Keep only the results of the last ``_RATE_WINDOW_S`` in :attr:`arrivals`."""
        now = time.perf_counter()
        while self.arrivals and now - self.arrivals[0][0] > _RATE_WINDOW_S:
            self.arrivals.popleft()

    @property
    def step(self) -> int:
        """Results that make ready suggestions stale, and how far their count falls
        before a batch tops them up: 1 up to depth 3 (12 slots), depth // 2 past."""
        return _step(self.depth)

    def tell_results(self) -> None:
        self.optimizer.tell_rows(self.results)
        self.told_since += len(self.results)
        self.results.clear()
        if self.told_since >= self.step:
            self.next_generation()

    def fresh(self) -> int:
        return sum(1 for g, _ in self.ready if g >= self.generation)

    def can_suggest(self) -> bool:
        # A first fit already running is waited for rather than done twice.
        optimizer = self.optimizer
        model = not optimizer.in_initial_design and (self.fitting is None or optimizer.has_model)
        if not model:
            return False
        depth = self.depth  # computed once: it moves with the clock
        return self.fresh() <= depth - _step(depth)

    def has_work(self) -> bool:
        idle_fit = self.fitting is None and self.optimizer.needs_fit
        idle_search_fit = self.search_fitting is None and self.optimizer.search_to_fit is not None
        return self.can_suggest() or bool(self.results) or idle_fit or idle_search_fit

    def suggest(self) -> None:
        # Finished points whose results wait to be told are neither pending nor told yet;
        # stale ready points may still be taken until the driver acknowledges the drop.
        busy = [
            *self.pending.values(),
            *(p for _, p in self.ready),
            *self.dropped,
            *(p for p, _, _ in self.results),
        ]
        depth = self.depth
        started, cpu = time.perf_counter(), time.thread_time()
        points = self.optimizer.ask_batch(busy, max(1, depth - self.fresh()))
        self.ready.extend((self.generation, p) for p in points)
        took = time.perf_counter() - started, time.thread_time() - cpu
        self.batch_seconds.append(took[0])
        self.conn.send(("ready", self.generation, points, *took))
        stale = [p for g, p in self.ready if g < self.generation]
        if stale and self.fresh() >= depth:  # stale spares are no longer needed
            self.ready = [(g, p) for g, p in self.ready if g >= self.generation]
            self.dropped.extend(stale)
            self.conn.send(("drop", [point_key(p) for p in stale]))

    def handle(self, message: tuple[Any, ...]) -> bool:
        kind = message[0]
        if kind == "stop":
            return False
        if kind == "depth":
            self.asked_depth = message[1]
        elif kind == "reset":
            self.start_over(message[1], message[2])
        elif kind == "submitted":
            _, number, point = message
            key = point_key(point)
            for i, (_, p) in enumerate(self.ready):
                if point_key(p) == key:
                    del self.ready[i]
                    break
            self.pending[number] = point
        elif kind == "dropped":
            acknowledged = {tuple(k) for k in message[1]}
            self.dropped = [p for p in self.dropped if point_key(p) not in acknowledged]
        elif kind == "finished":
            self.arrivals.append((time.perf_counter(), len(message[1])))
            self.forget_old_arrivals()  # also where the depth does not look at them
            for number, value, noise in message[1]:
                point = self.pending.pop(number, None)
                if value is not None and point is not None:
                    self.results.append((point, value, noise))
        elif kind == "retold":
            self.arrivals.append((time.perf_counter(), len(message[1])))
            self.tell_results()  # a value waiting to be told may be the one replaced
            self.optimizer.retell_rows(message[1], message[2])
            self.told_since += len(message[1])
            if self.told_since >= self.step:
                self.next_generation()
        elif kind == "observed":
            self.arrivals.append((time.perf_counter(), len(message[1])))
            self.results.extend((list(point), value, 0.0) for point, value in message[1])
        return True

    def run(self) -> None:
        self.conn.send(("hello",))
        # One BLAS thread: OpenBLAS's default threading makes small GP fits several times
        # slower and fights the workers for cores. Hyperparameter refits run in a thread
        # of their own (mostly LAPACK, which releases the GIL), so a long refit never
        # holds suggestions up: they use the last fitted kernel meanwhile.
        # The trust region's and restart searches' refits (a new box's first fit is on
        # up to 200 results) run in a second thread: were they run in the batch, as
        # they are in one process, the driver would wait seconds for its suggestions.
        with (
            threadpool_limits(limits=1),
            ThreadPoolExecutor(1) as fitter,
            ThreadPoolExecutor(1) as search_fitter,
        ):
            while True:
                if self.fitting is not None and self.fitting.done():
                    fitted, cpu = self.fitting.result()
                    self.optimizer.adopt_fit(fitted)
                    seconds = time.perf_counter() - self.fit_started
                    self.conn.send(("fitted", seconds, "model", cpu))
                    self.fitting = None
                    self.next_generation()  # suggestions from the old kernel are stale
                if self.search_fitting is not None and self.search_fitting[1].done():
                    search, done = self.search_fitting
                    fitted, cpu = done.result()
                    search.adopt_fit(fitted)  # a search since replaced: harmless
                    seconds = time.perf_counter() - self.search_fit_started
                    self.conn.send(("fitted", seconds, "search", cpu))
                    self.search_fitting = None
                busy = self.fitting is not None or self.search_fitting is not None
                timeout = 0.0 if self.has_work() else 0.05 if busy else None
                if self.conn.poll(timeout):
                    if not self.handle(self.conn.recv()):
                        return
                    continue  # take in every waiting message first
                if self.results:
                    self.tell_results()
                elif self.fitting is None and self.optimizer.needs_fit:
                    self.fit_started = time.perf_counter()
                    self.fitting = fitter.submit(_timed, self.optimizer.prepare_fit())
                elif self.search_fitting is None and (job := self.optimizer.search_fit()):
                    self.search_fit_started = time.perf_counter()
                    self.search_fitting = (job[0], search_fitter.submit(_timed, job[1]))
                elif self.can_suggest():
                    self.suggest()
