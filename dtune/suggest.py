"""Suggestions computed ahead, in a process of their own.

The optimizer's work (surrogate fits, acquisition searches) is CPU-bound Python and
numpy. Run in a thread of the driver it would hold the GIL that the Dask client's (and
an embedded scheduler's) event loop needs, and every finished trial would wait for it
to be noticed: measured on a 2-core machine, a thread engine left a median gap of
0.2–0.3 s between a worker's trials, against 0.02 s without a model. So the optimizer
runs in a child process and talks to the driver over a pipe::

    driver process                          suggestion process
    ──────────────────────────────          ─────────────────────────────────────
    finished(number, value) ─────────────▶  tell (cheap), generation += 1
    take() ◀── ("ready", gen, points) ────  ask_batch: a batch conditioned on told +
    submitted(number, point) ────────────▶       running + ready points, kernel fixed
                ◀──── ("drop", keys) ──────  stale spares replaced by fresh ones
                                            fit thread: hyperparameter refits, adopted
                                            when done (suggestions never wait for one)

A suggestion computed before the latest result is *stale*: still handed out rather than
let a worker idle, but replaced as soon as fresh ones exist. The driver draws the initial
design itself, and until this process has started (importing scikit-optimize takes
seconds) it draws from its own copy of the model.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import statistics
import time
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from dtune.optimizer import PendingAwareOptimizer, Point, _point_key

__all__ = ["SuggestionEngine"]


class SuggestionEngine:
    """The driver's side: a queue of ready suggestions fed by the suggestion process.

    Parameters
    ----------
    optimizer
        Copied into the child process as it is now (told results, initial design, random
        state). The driver's own copy is not touched.
    depth
        How many fresh suggestions the child keeps ready.

    Notes
    -----
    Used from one thread (the driver loop). A context manager: leaving it stops the child.
    """

    def __init__(self, optimizer: PendingAwareOptimizer, depth: int = 2) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(optimizer, depth, child_conn), name="dtune-suggest", daemon=True
        )
        self._child_conn = child_conn
        self._ready: list[tuple[int, Point]] = []
        self._depth = depth
        self.ask_seconds: list[float] = []  # each suggestion's compute time, in the child
        self.fit_seconds: list[float] = []  # each hyperparameter refit, in the child
        self.wait_seconds: list[float] = []  # each time the driver waited for a suggestion

    def __enter__(self) -> SuggestionEngine:
        self._process.start()
        self._child_conn.close()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):  # the child may be gone already
            self._conn.send(("stop",))
        # It holds nothing worth waiting for: one still importing, or in the middle of
        # a long refit, is killed rather than let the search's end wait on it.
        self._process.join(timeout=1)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()

    def _receive(self, block: bool) -> None:
        while block or self._conn.poll():
            block = False
            try:
                message = self._conn.recv()
            except EOFError:
                raise RuntimeError("dtune's suggestion process exited unexpectedly") from None
            if message[0] == "ready":
                self._ready.extend((message[1], p) for p in message[2])
                self.ask_seconds.append(message[3])
            elif message[0] == "fitted":
                self.fit_seconds.append(message[1])
            elif message[0] == "drop":
                dropped = set(message[1])
                self._ready = [(g, p) for g, p in self._ready if _point_key(p) not in dropped]
                # Any of them taken already was reported as submitted before this ack.
                self._conn.send(("dropped", message[1]))
            elif message[0] == "error":
                raise RuntimeError(f"dtune's suggestion process failed:\n{message[1]}")

    @property
    def serving(self) -> bool:
        """True once the process has sent its first suggestion from the model."""
        self._receive(block=False)
        return bool(self.ask_seconds)

    def take(self) -> Point:
        """The freshest ready suggestion; waits only when none is ready."""
        self._receive(block=False)
        if not self._ready:
            started = time.perf_counter()
            while not self._ready:
                self._receive(block=True)
            self.wait_seconds.append(time.perf_counter() - started)
        newest = max(range(len(self._ready)), key=lambda i: (self._ready[i][0], -i))
        return self._ready.pop(newest)[1]

    def summary(self) -> dict[str, float]:
        """How long suggestions took to compute and how long the driver waited for them."""
        asks, fits, waits = self.ask_seconds or [0.0], self.fit_seconds or [0.0], self.wait_seconds
        return {
            "asks": len(self.ask_seconds),
            "ask_median_ms": 1000 * statistics.median(asks),
            "ask_max_ms": 1000 * max(asks),
            "fits": len(self.fit_seconds),
            "fit_max_s": max(fits),
            "fit_total_s": sum(fits),
            "waits": len(waits),
            "wait_max_ms": 1000 * max(waits, default=0.0),
            "wait_total_s": sum(waits),
        }

    def set_depth(self, depth: int) -> None:
        """Keep ``depth`` fresh suggestions ready (about the results that arrive while
        one batch of suggestions is computed). Sent only when it changes."""
        depth = max(1, depth)
        if depth != self._depth:
            self._depth = depth
            self._conn.send(("depth", depth))

    def submitted(self, number: int, point: Point, *, initial: bool = False) -> None:
        """``point`` is now being evaluated as trial ``number``; ``initial``: the driver
        drew it from the initial design itself, rather than take it from here."""
        self._conn.send(("submitted", number, point, initial))

    def finished(self, results: Sequence[tuple[int, float | None]]) -> None:
        """Trials finished; a None value (a failed trial) is not told to the optimizer."""
        self._conn.send(("finished", list(results)))


def _serve(optimizer: PendingAwareOptimizer, depth: int, conn: Connection) -> None:
    """The suggestion process: keep ``depth`` fresh suggestions ready, tell, refit."""
    from concurrent.futures import Future, ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    pending: dict[int, Point] = {}
    ready: list[tuple[int, Point]] = []
    dropped: list[Point] = []  # busy until the driver acknowledges it will not take them
    results: list[tuple[Point, float]] = []
    generation = 0  # bumps with every tell; a suggestion from an older one is stale
    fitting: Future | None = None  # a hyperparameter refit running in the fit thread
    fit_started = 0.0

    def fresh() -> int:
        return sum(1 for g, _ in ready if g >= generation)

    def suggest() -> None:
        # Finished points whose results wait to be told are neither pending nor told yet;
        # stale ready points may still be taken until the driver acknowledges the drop.
        busy = [*pending.values(), *(p for _, p in ready), *dropped, *(p for p, _ in results)]
        started = time.perf_counter()
        points = optimizer.ask_batch(busy, max(1, depth - fresh()))
        ready.extend((generation, p) for p in points)
        conn.send(("ready", generation, points, time.perf_counter() - started))
        stale = [p for g, p in ready if g < generation]
        if stale and fresh() >= depth:  # stale spares are no longer needed
            ready[:] = [(g, p) for g, p in ready if g >= generation]
            dropped.extend(stale)
            conn.send(("drop", [_point_key(p) for p in stale]))

    def can_suggest() -> bool:
        # The driver draws the initial design itself; the surrogate takes over after it.
        # A first fit already running is waited for rather than done twice.
        model = not optimizer.in_initial_design and (fitting is None or optimizer.has_model)
        return model and fresh() < depth

    def work() -> bool:
        return can_suggest() or bool(results) or (fitting is None and optimizer.needs_fit)

    def handle(message: tuple[Any, ...]) -> bool:
        nonlocal depth
        if message[0] == "stop":
            return False
        if message[0] == "depth":
            depth = message[1]
        elif message[0] == "submitted":
            _, number, point, initial = message
            if initial:
                optimizer.skip_initial(1)
            key = _point_key(point)
            for i, (_, p) in enumerate(ready):
                if _point_key(p) == key:
                    del ready[i]
                    break
            pending[number] = point
        elif message[0] == "dropped":
            acknowledged = {tuple(k) for k in message[1]}
            dropped[:] = [p for p in dropped if _point_key(p) not in acknowledged]
        elif message[0] == "finished":
            for number, value in message[1]:
                point = pending.pop(number, None)
                if value is not None and point is not None:
                    results.append((point, value))
        return True

    try:
        # One BLAS thread: OpenBLAS's default threading makes small GP fits several times
        # slower and fights the workers for cores. Hyperparameter refits run in a thread
        # of their own (mostly LAPACK, which releases the GIL), so a long refit never
        # holds suggestions up: they use the last fitted kernel meanwhile.
        with threadpool_limits(limits=1), ThreadPoolExecutor(1) as fitter:
            while True:
                if fitting is not None and fitting.done():
                    optimizer.adopt_fit(fitting.result())
                    conn.send(("fitted", time.perf_counter() - fit_started))
                    fitting = None
                    generation += 1  # suggestions from the old kernel are stale
                timeout = 0.0 if work() else 0.05 if fitting is not None else None
                if conn.poll(timeout):
                    if not handle(conn.recv()):
                        return
                    continue  # take in every waiting message first
                if results:
                    optimizer.tell([p for p, _ in results], [v for _, v in results])
                    results.clear()
                    generation += 1
                elif fitting is None and optimizer.needs_fit:
                    fit_started = time.perf_counter()
                    fitting = fitter.submit(optimizer.prepare_fit())
                elif can_suggest():
                    suggest()
    except (EOFError, BrokenPipeError):
        return  # the driver went away
    except BaseException:
        with contextlib.suppress(OSError):
            conn.send(("error", traceback.format_exc()))
