"""Suggestions computed in the calling thread, from one optimizer copy."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dtune.ledger import ModelState
from dtune.optimizer import OptimizerSettings, PendingAwareOptimizer, Point
from dtune.space import SearchSpace, point_key
from dtune.suggest.base import Suggester

__all__ = ["InProcessSuggester"]


class InProcessSuggester(Suggester):
    """Fits and asks its optimizer in the calling thread.

    Used by ``Study.ask``, by simulated searches (deterministic per seed), and by the
    process-backed suggester for the initial design, for model-free points while its
    process is not serving (:meth:`explore`), and for the model when the process is gone
    for good. Free slots are filled from one batch (one posterior) at a time; a batch is
    dropped when a result arrives.

    Examples
    --------
    >>> from dtune.space import Real
    >>> space = SearchSpace({"x": Real(0.0, 1.0)})
    >>> s = InProcessSuggester(space, OptimizerSettings(random_state=0))
    >>> p = s.suggest()
    >>> s.started(0, p); s.finished([(0, p, 0.5)])
    >>> s.optimizer.n_told
    1
    """

    def __init__(self, space: SearchSpace, settings: OptimizerSettings) -> None:
        self.space = space
        self.settings = settings
        self.optimizer = PendingAwareOptimizer(space, settings)
        self.pending: dict[int, Point] = {}
        self._running_keys: Counter[tuple[Any, ...]] = Counter()  # of the pending points
        self._batch: list[Point] = []
        self._stale = False
        self.ask_seconds: list[float] = []

    @property
    def in_initial_design(self) -> bool:
        """True while points come from the initial design (no model is needed)."""
        return self.optimizer.in_initial_design

    def knows(self, point: Point) -> bool:
        """True if ``point`` is running or its result was told: not to be suggested.
        Constant time (the driver asks it of every ready point at every refill)."""
        key = point_key(point)
        return self.optimizer.has_told(key) or self._running_keys[key] > 0

    def reset(self, state: ModelState) -> None:
        self.optimizer = PendingAwareOptimizer(self.space, self.settings)
        self.optimizer.skip_initial(state.n_started)
        if state.told:
            points, values = [p for p, _ in state.told], [v for _, v in state.told]
            self.optimizer.tell(points, values, state.noise)
        self.pending = dict(state.running)
        self._running_keys = Counter(point_key(p) for p in self.pending.values())
        self._batch = []
        self._stale = False
        self.optimizer.draw_initial_design()  # off the first refill's path

    def suggest(self, free: int = 1, while_waiting: Callable[[], None] | None = None) -> Point:
        if self._stale:
            self._batch = []
        if not self._batch:
            self._stale = False
            started = time.perf_counter()
            optimizer = self.optimizer
            if not optimizer.in_initial_design:
                optimizer.fit()
            n = 1 if optimizer.in_initial_design else max(1, free)
            self._batch = optimizer.ask_batch(list(self.pending.values()), n)
            self.ask_seconds.append(time.perf_counter() - started)
        return self._batch.pop(0)

    def explore(self) -> Point:
        """A point without the model (see :meth:`PendingAwareOptimizer.explore`): what
        the driver hands out while its suggestion process is not serving."""
        return self.optimizer.explore(list(self.pending.values()))

    def started(self, number: int, point: Point) -> None:
        key = point_key(point)
        self._batch = [p for p in self._batch if point_key(p) != key]
        self._forget_running(number)
        self.pending[number] = point
        self._running_keys[key] += 1

    def _forget_running(self, number: int) -> None:
        point = self.pending.pop(number, None)
        if point is not None:
            key = point_key(point)
            self._running_keys[key] -= 1
            if self._running_keys[key] <= 0:
                del self._running_keys[key]

    def finished(
        self,
        results: Sequence[tuple[int, Point, float | None]],
        noise: Mapping[int, float] | None = None,
    ) -> None:
        noise = noise or {}
        told = []
        for number, point, value in results:
            self._forget_running(number)
            if value is not None:
                told.append((point, value, noise.get(number, 0.0)))
        if told:
            self.optimizer.tell_rows(told)
            self._stale = True  # the batch was computed without these results

    def observed(self, results: Sequence[tuple[Point, float]]) -> None:
        self.optimizer.tell([p for p, _ in results], [v for _, v in results])
        self._stale = True

    def retold(self, results: Sequence[tuple[Point, float, float]], refit: bool = True) -> None:
        self.optimizer.retell_rows(results, refit)
        self._stale = True

    def summary(self) -> dict[str, float]:
        n, asks = len(self.ask_seconds), sorted(self.ask_seconds) or [0.0]
        self.ask_seconds = []
        return {
            "asks_here": n,
            "ask_here_median_ms": 1000 * asks[len(asks) // 2],
            "ask_here_max_ms": 1000 * asks[-1],
        }
