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
    take() ◀──── ("ready", gen, point) ───  ask: conditioned on told + running +
    submitted(number, point) ────────────▶       ready points, kernel fixed
                ◀──── ("drop", keys) ──────  stale spares replaced by fresh ones
                                            refit hyperparameters when idle

A suggestion computed before the latest result is *stale*: still handed out rather than
let a worker idle, but replaced as soon as fresh ones exist.
"""

from __future__ import annotations

import contextlib
import multiprocessing
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

    def __enter__(self) -> SuggestionEngine:
        self._process.start()
        self._child_conn.close()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):  # the child may be gone already
            self._conn.send(("stop",))
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
        self._conn.close()

    def _receive(self, block: bool) -> None:
        while block or self._conn.poll():
            block = False
            try:
                message = self._conn.recv()
            except EOFError:
                raise RuntimeError("dtune's suggestion process exited unexpectedly") from None
            if message[0] == "ready":
                self._ready.append((message[1], message[2]))
            elif message[0] == "drop":
                dropped = set(message[1])
                self._ready = [(g, p) for g, p in self._ready if _point_key(p) not in dropped]
                # Any of them taken already was reported as submitted before this ack.
                self._conn.send(("dropped", message[1]))
            elif message[0] == "error":
                raise RuntimeError(f"dtune's suggestion process failed:\n{message[1]}")

    def take(self) -> Point:
        """The freshest ready suggestion; waits only when none is ready."""
        self._receive(block=False)
        while not self._ready:
            self._receive(block=True)
        newest = max(range(len(self._ready)), key=lambda i: (self._ready[i][0], -i))
        return self._ready.pop(newest)[1]

    def submitted(self, number: int, point: Point) -> None:
        """``point`` is now being evaluated as trial ``number``."""
        self._conn.send(("submitted", number, point))

    def finished(self, results: Sequence[tuple[int, float | None]]) -> None:
        """Trials finished; a None value (a failed trial) is not told to the optimizer."""
        self._conn.send(("finished", list(results)))


def _serve(optimizer: PendingAwareOptimizer, depth: int, conn: Connection) -> None:
    """The suggestion process: keep ``depth`` fresh suggestions ready, tell, refit."""
    from threadpoolctl import threadpool_limits

    pending: dict[int, Point] = {}
    ready: list[tuple[int, Point]] = []
    dropped: list[Point] = []  # busy until the driver acknowledges it will not take them
    results: list[tuple[Point, float]] = []
    generation = 0  # bumps with every tell; a suggestion from an older one is stale

    def fresh() -> int:
        return sum(1 for g, _ in ready if g >= generation)

    def suggest() -> None:
        # Finished points whose results wait to be told are neither pending nor told yet.
        busy = [*pending.values(), *(p for _, p in ready), *dropped, *(p for p, _ in results)]
        point = optimizer.ask(pending=busy)
        ready.append((generation, point))
        conn.send(("ready", generation, point))
        stale = [p for g, p in ready if g < generation]
        if stale and fresh() >= depth:  # stale spares are no longer needed
            ready[:] = [(g, p) for g, p in ready if g >= generation]
            dropped.extend(stale)
            conn.send(("drop", [_point_key(p) for p in stale]))

    def handle(message: tuple[Any, ...]) -> bool:
        if message[0] == "stop":
            return False
        if message[0] == "submitted":
            _, number, point = message
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
        # slower and fights the workers for cores.
        with threadpool_limits(limits=1):
            while True:
                idle = not results and fresh() >= depth and not optimizer.needs_fit
                while idle or conn.poll():
                    if not handle(conn.recv()):
                        return
                    idle = not results and fresh() >= depth and not optimizer.needs_fit
                if not ready:  # the driver may be waiting: serve it first
                    suggest()
                elif results:
                    optimizer.tell([p for p, _ in results], [v for _, v in results])
                    results.clear()
                    generation += 1
                elif optimizer.needs_fit:
                    # Refit before refreshing suggestions: results that arrive meanwhile
                    # are told together in the next round.
                    optimizer.fit()
                else:
                    suggest()
    except (EOFError, BrokenPipeError):
        return  # the driver went away
    except BaseException:
        with contextlib.suppress(OSError):
            conn.send(("error", traceback.format_exc()))
