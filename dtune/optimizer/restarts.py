"""Restarts out of a settled basin: while the best value has stopped improving, a share
of the points comes from a fresh search that knows none of the results so far.

A Gaussian-process search that has settled in one basin keeps refining it. Its model
does not help it leave: fitted on hundreds of results in that basin, it is confidently
wrong elsewhere. On Hartmann6 at 300 trials, a seed that settled in the second basin had
no trial within 0.3 of the global minimum; the model put its mean there at -0.56 (the
minimum is -3.32) with a standard deviation of 0.13, and had judged two of the six
dimensions irrelevant (length scales of 4–5 in the unit cube), so expected improvement
there was 1e-93. Boxes around points the global model picked (its lower confidence bound
away from the good points) did not get two such seeds out (0.1195, 0.1198 against 0.120).

TuRBO (Eriksson et al. 2019) restarts a stalled local search from a fresh design with a
model of its own. Here the global search goes on, and once max(50, 10·d) results have not
improved its best value, every third point comes from a *restart search*: an
optimizer of the same settings that starts from its own initial design and is told only
the results of the points it proposed, so its model and its length scales are its own.
A restart search that has been told max(50, 10·d) results without beating the global best
is replaced by a new one; one that beats it ends the stall, and the global search (which
is told every result) takes over from the new best, its kernel refitted at once (past
400 results it would otherwise wait for the results to double, with length scales from
the old basin). Another third goes to a trust region around the best result
(:mod:`.trust_region`), which refines the basin the search is in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from dtune.space import point_key

if TYPE_CHECKING:  # the optimizer builds these searches from itself
    from dtune.optimizer.core import PendingAwareOptimizer

__all__ = ["Restarts", "stalled"]

# Results without an improvement of more than _TOLERANCE × the values' spread before a
# restart search runs (at least; 10 per dimension in more than 5 dimensions).
_STALL = 50
_TOLERANCE = 0.01


def stalled(y: Sequence[float], n_dims: int) -> bool:
    """Whether the last ``max(50, 10 n_dims)`` of the values ``y`` (in the order told)
    improved on the best before them by at most 1% of the values' spread.

    >>> stalled([1.0 - 0.01 * i for i in range(10)] + [0.95] * 60, 2)
    True
    >>> stalled([1.0 - 0.01 * i for i in range(70)], 2)
    False
    """
    stall = max(_STALL, 10 * n_dims)
    if len(y) <= stall:
        return False
    before, recent = np.asarray(y[:-stall]), np.asarray(y[-stall:])
    return bool(recent.min() >= before.min() - _TOLERANCE * float(np.std(y)))


class Restarts:
    """Fresh searches to take a share of the points while the global search is stalled.

    Parameters
    ----------
    new_search
        Makes a restart search (an optimizer) from a seed.
    n_dims
        The space's dimensions (the patience grows with them).
    seed
        Seeds the restart searches' seeds.

    Examples
    --------
    >>> from dtune.optimizer import OptimizerSettings, PendingAwareOptimizer
    >>> from dtune.space import Real, SearchSpace
    >>> space = SearchSpace({"x": Real(0.0, 1.0)})
    >>> restarts = Restarts(lambda seed: PendingAwareOptimizer(
    ...     space, OptimizerSettings(n_initial_points=3, random_state=seed)), 1, seed=0)
    >>> points = restarts.ask([], 2, seen=set())
    >>> restarts.proposed(points[0]), restarts.started
    (True, 1)
    """

    def __init__(
        self, new_search: Callable[[int], PendingAwareOptimizer], n_dims: int, *, seed: int
    ) -> None:
        self._new_search = new_search
        self._patience = max(_STALL, 10 * n_dims)
        self._rng = np.random.RandomState(seed)
        self._search: PendingAwareOptimizer | None = None
        # The current search's points not told yet, by key.
        self._running: dict[tuple[Any, ...], list[Any]] = {}
        self._told = 0  # results the current search was told
        # False: the owner runs the search's refits (PendingAwareOptimizer.search_fit).
        self.fit_here = True
        self.started = 0  # restart searches started

    def ask(
        self, pending: Sequence[list[Any]], n: int, seen: set[tuple[Any, ...]]
    ) -> list[list[Any]]:
        """Up to ``n`` points from the restart search (a new one if there is none, or
        the current one has used up its patience), accounting for its own running points
        and ``pending`` ones; those whose key is in ``seen`` (told or pending in the
        global search) are left out."""
        if self._search is None or self._told >= self._patience:
            self.drop()
            self._search = self._new_search(int(self._rng.randint(0, 2**31 - 1)))
            self.started += 1
        if not self._search.ready_to_ask(self.fit_here):
            return []  # its first fit runs elsewhere; the global search fills in
        busy = {point_key(p): p for p in pending} | self._running
        points = self._search.ask_batch(list(busy.values()), n)
        points = [p for p in points if point_key(p) not in seen]
        self._running.update((point_key(p), p) for p in points)
        return points

    @property
    def search(self) -> PendingAwareOptimizer | None:
        """The current restart search (None while the global search is not stalled)."""
        return self._search

    def proposed(self, point: list[Any]) -> bool:
        """Whether the current restart search proposed ``point`` and has not been told
        its result."""
        return point_key(point) in self._running

    def tell(self, point: list[Any], value: float, noise: float = 0.0) -> None:
        """A result of a point the current restart search proposed (``noise``: its own
        noise variance)."""
        if self._search is not None:
            self._running.pop(point_key(point), None)
            self._search.tell([point], [value], [noise])
            self._told += 1

    def retell(
        self, point: list[Any], value: float, noise: float = 0.0, refit: bool = True
    ) -> None:
        """A value told before for ``point`` is now ``value``: the current restart
        search, if it was told the point, is told the new value instead."""
        if self._search is not None and self._search.has_told(point_key(point)):
            self._search.retell(point, value, noise, refit)

    def drop(self) -> None:
        """Drop the current restart search (the global search is no longer stalled):
        the next stall starts a new one."""
        self._search, self._running, self._told = None, {}, 0
