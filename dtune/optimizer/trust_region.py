"""A trust region around the best result: a local search with a model of its own, for
long searches that have found a basin and need to keep refining it.

A Gaussian process fitted on hundreds of results over the whole space smooths over what
it cannot resolve. On Ackley-10 after 300 trials (32 simulated workers) the best point was
0.4 from the minimum in every coordinate, in the right bowl, and sat on the ripples of
its cosine term; the global model had length scales of the bowl and saw the ripples as
noise, so its suggestions stopped improving after about 170 trials. A model fitted only
on the results near the best point has length scales of its own, of the local detail.

After TuRBO-1 (Eriksson et al. 2019): a box of side ``length`` (in the unit cube the
Gaussian process works in) centred on the best result so far. Its search is an optimizer
of the same settings restricted to the box (:meth:`~dtune.optimizer.core.
PendingAwareOptimizer.restrict`), told the results in the box (the nearest
``_MAX_LOCAL`` to the centre when it is built, and every later one), and the result of
any point it proposes that has one (an integer rounded from the box's edge can land
outside it, and a point it is not told it proposes again and again). Three of its points
in a row that improve on the best double the box (up to ``_MAX_LENGTH``); ``max(4, d)``
in a row that do not halve it; below ``_MIN_LENGTH`` it starts again at
``_INITIAL_LENGTH``. A new best, from any point, moves the box there.

TuRBO restarts a collapsed region from a fresh design elsewhere; here the restart
searches of :mod:`.restarts` do that, beside the region, while the search is stalled.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from dtune.optimizer.posterior import best_measured
from dtune.space import point_key

if TYPE_CHECKING:  # the optimizer builds these searches from itself
    from dtune.optimizer.core import PendingAwareOptimizer

__all__ = ["TrustRegion"]

_INITIAL_LENGTH = 0.8
_MAX_LENGTH = 1.6
_MIN_LENGTH = 0.5**7
_SUCCESSES = 3  # improvements in a row that double the box
_MAX_LOCAL = 200  # results a new region's search is told: the nearest to its centre
_IMPROVEMENT = 1e-3  # relative: a point improves on the best by more than this
# A point on the box's edge, transformed back to the space and again, can land this far
# outside it (a log scale's round trip: 7e-17 seen).
_EDGE = 1e-9
_RETELLS = 3  # times a box's search is told results it proposed again, and asked again


class TrustRegion:
    """A local search in a box around the best result, resized by its own successes.

    Parameters
    ----------
    new_search
        Makes an optimizer of the space from a seed (the region restricts it).
    transform
        Points to rows of the transformed space (the unit cube, one-hot categories).
    n_dims
        The space's dimensions (more need more failures before the box shrinks).
    seed
        Seeds the regions' searches.

    Examples
    --------
    >>> from dtune.optimizer import OptimizerSettings, PendingAwareOptimizer
    >>> from dtune.space import Real, SearchSpace
    >>> space = SearchSpace({"x": Real(0.0, 1.0)})
    >>> opt = PendingAwareOptimizer(space, OptimizerSettings(random_state=0))
    >>> region = TrustRegion(lambda seed: PendingAwareOptimizer(
    ...     space, OptimizerSettings(random_state=seed)), opt.transform, 1, seed=0)
    >>> X = [[0.1], [0.5], [0.9]]
    >>> points = region.ask(X, opt.transform(X), np.array([1.0, 0.0, 1.0]), [], 2, set())
    >>> all(0.1 <= p[0] <= 0.9 for p in points), region.proposed(points[0])
    (True, True)
    """

    def __init__(
        self,
        new_search: Callable[[int], PendingAwareOptimizer],
        transform: Callable[[Sequence[list[Any]]], np.ndarray],
        n_dims: int,
        *,
        seed: int,
    ) -> None:
        self._new_search = new_search
        self._transform = transform
        self._failure_tolerance = max(4, n_dims)
        self._rng = np.random.RandomState(seed)
        self.length = _INITIAL_LENGTH
        self._successes = self._failures = 0
        self._search: PendingAwareOptimizer | None = None
        self._last_model: Any = None  # the last box's search's surrogate
        self._box = (np.zeros(0), np.zeros(0))
        self._centre_value = math.inf
        self._best = math.inf
        # Points the region proposed and has not been told, by key (of any box).
        self._proposed: dict[tuple[Any, ...], list[Any]] = {}
        # False: the owner runs the search's refits (PendingAwareOptimizer.search_fit).
        self.fit_here = True
        self.built = 0  # searches built (moves and resizes)
        self.collapsed = 0  # times the box shrank below _MIN_LENGTH

    def ask(
        self,
        X: Sequence[list[Any]],
        Xt: np.ndarray,
        y: np.ndarray,
        pending: Sequence[list[Any]],
        n: int,
        seen: set[tuple[Any, ...]],
        noise: np.ndarray | None = None,
    ) -> list[list[Any]]:
        """Up to ``n`` points in the box, given the search's told points ``X``
        (transformed: ``Xt``), values ``y`` and their own noise variances (``noise``;
        None: none), and the ``pending`` ones; those whose key is in ``seen`` are left
        out."""
        noise = np.zeros(len(y)) if noise is None else noise
        best = best_measured(y, noise)  # not a pruned trial's imputed value
        self._best = min(self._best, float(y[best]))
        if self._search is None or y[best] < self._centre_value:
            self._drop_search()
            self._build(X, Xt, y, noise, best)
        assert self._search is not None
        inside = self._inside(self._transform(pending))
        in_box = [p for p, i in zip(pending, inside, strict=True) if i]
        busy = {point_key(p): p for p in in_box} | self._proposed
        if not self._search.ready_to_ask(self.fit_here):
            return []  # its first fit runs elsewhere; the global model fills in
        points = self._search.ask_batch(list(busy.values()), n)
        for _ in range(_RETELLS):
            known = self._results_of(points, seen, X, y, noise)
            if not known:
                break
            self._search.tell_rows(known)
            points = self._search.ask_batch(list(busy.values()), n)
        points = [p for p in points if point_key(p) not in seen]
        self._proposed.update((point_key(p), p) for p in points)
        return points

    def _results_of(
        self,
        points: Sequence[list[Any]],
        seen: set[tuple[Any, ...]],
        X: Sequence[list[Any]],
        y: np.ndarray,
        noise: np.ndarray,
    ) -> list[tuple[list[Any], float, float]]:
        """The results among ``X`` of those ``points`` the search has (``seen``) and the
        box's search was not told: an integer rounded from the box's edge can land
        outside it, where no result is told to the box's search, which would then
        propose that point again and again."""
        assert self._search is not None
        keys = {point_key(p) for p in points}
        new = {k for k in keys & seen if not self._search.has_told(k)}
        if not new:
            return []
        return [(x, float(y[i]), float(noise[i])) for i, x in enumerate(X) if point_key(x) in new]

    @property
    def search(self) -> PendingAwareOptimizer | None:
        """The current box's search (None until the next ask builds one)."""
        return self._search

    def proposed(self, point: list[Any]) -> bool:
        """Whether the region proposed ``point`` and has not been told its result."""
        return point_key(point) in self._proposed

    def tell(self, point: list[Any], value: float, noise: float = 0.0) -> None:
        """Any result of the search (``noise``: its own noise variance): a point the
        region proposed counts towards its successes or failures (an estimate, told
        with noise, only as a failure), and one in the box is told to its search."""
        measured = noise == 0
        if self._proposed.pop(point_key(point), None) is not None:
            if measured and value < self._best - _IMPROVEMENT * abs(self._best):
                self._successes, self._failures = self._successes + 1, 0
            else:
                self._successes, self._failures = 0, self._failures + 1
            if self._successes >= _SUCCESSES:
                self._resize(min(2 * self.length, _MAX_LENGTH))
            elif self._failures >= self._failure_tolerance:
                self._resize(self.length / 2)
        if measured:
            self._best = min(self._best, value)
        if self._search is not None and self._inside(self._transform([point]))[0]:
            self._search.tell([point], [value], [noise])

    def retell(
        self, point: list[Any], value: float, noise: float = 0.0, refit: bool = True
    ) -> None:
        """A value told before for ``point`` is now ``value`` (see
        :meth:`PendingAwareOptimizer.retell`): a measured one may be the best; the box's
        search, if it was told the point, is told the new value instead."""
        if noise == 0:
            self._best = min(self._best, value)
        if self._search is not None and self._search.has_told(point_key(point)):
            self._search.retell(point, value, noise, refit)

    def _resize(self, length: float) -> None:
        """A box of side ``length`` (or the initial side, if it collapsed), built at the
        next ask around the best result then."""
        if length < _MIN_LENGTH:
            length = _INITIAL_LENGTH
            self.collapsed += 1
        self.length, self._successes, self._failures = length, 0, 0
        self._drop_search()

    def _drop_search(self) -> None:
        if self._search is not None and self._search.has_model:
            self._last_model = self._search.model
        self._search = None

    def _inside(self, Xt: np.ndarray) -> np.ndarray:
        lower, upper = self._box
        if len(Xt) == 0:
            return np.zeros(0, dtype=bool)
        return np.all((Xt >= lower - _EDGE) & (Xt <= upper + _EDGE), axis=1)

    def _build(
        self, X: Sequence[list[Any]], Xt: np.ndarray, y: np.ndarray, noise: np.ndarray, best: int
    ) -> None:
        centre = Xt[best]
        lower, upper = centre - self.length / 2, centre + self.length / 2
        search = self._new_search(int(self._rng.randint(0, 2**31 - 1)))
        search.restrict(lower, upper)
        if not self.fit_here and self._last_model is not None:
            # Until its own first fit (run elsewhere) comes, the last box's kernel.
            search.adopt_fit((self._last_model, 0))
        self._box = (lower, upper)
        inside = np.flatnonzero(self._inside(Xt))
        nearest = inside[np.argsort(((Xt[inside] - centre) ** 2).sum(axis=1))[:_MAX_LOCAL]]
        search.tell(
            [X[i] for i in nearest], [float(y[i]) for i in nearest], noise[nearest].tolist()
        )
        search.skip_initial(len(nearest))
        self._search, self._centre_value = search, float(y[best])
        self.built += 1
