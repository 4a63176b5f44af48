"""Candidate points for the acquisition search, in skopt's transformed space: random
candidates drawn with numpy, snapped onto integers and categories, and a batched local
search around the best of them.

The local search stands in for skopt's per-point L-BFGS polish (70% of a suggestion's
time in the first build): a few rounds of perturbations around the best candidates,
each round one batched prediction, usable on integer and categorical dimensions too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from skopt.space import Categorical as SkCategorical
from skopt.space import Integer as SkInteger
from skopt.space import Real as SkReal
from skopt.space import Space

__all__ = ["CandidateSampler"]

# Local search: rounds (step sizes in the unit cube) and points per start.
_LOCAL_STEPS = (0.1, 0.02)
_LOCAL_POINTS = 40


class CandidateSampler:
    """Draws candidates of ``space`` (a transformed skopt ``Space``) with ``rng``.

    Examples
    --------
    >>> from skopt.space import Integer, Real
    >>> sampler = CandidateSampler(Space([Real(0.0, 1.0), Integer(0, 4)]),
    ...                            np.random.RandomState(0))
    >>> C = sampler.sample(3)
    >>> C.shape, bool(np.all(C[:, 1] == np.round(C[:, 1])))
    ((3, 2), True)
    """

    def __init__(self, space: Space, rng: np.random.RandomState) -> None:
        self.space = space
        self._rng = rng
        self._bounds = np.asarray(space.transformed_bounds, dtype=float)

    def restrict(self, lower: np.ndarray, upper: np.ndarray) -> None:
        """Draw and search candidates only within the box ``lower``-``upper`` (transformed
        coordinates; clipped to the space's bounds), as a trust region does.

        >>> sampler = CandidateSampler(Space([SkReal(0.0, 1.0)]), np.random.RandomState(0))
        >>> sampler.restrict(np.array([0.4]), np.array([1.5]))
        >>> C = sampler.sample(100)
        >>> float(C.min()) >= 0.4, float(C.max()) <= 1.0
        (True, True)
        """
        space = np.asarray(self.space.transformed_bounds, dtype=float)
        low = np.clip(lower, space[:, 0], space[:, 1])
        high = np.clip(upper, low, space[:, 1])
        self._bounds = np.column_stack([low, high])

    @property
    def bounds(self) -> np.ndarray:
        """The box candidates are drawn from: one (low, high) row per transformed column."""
        return self._bounds.copy()

    def sample(self, n: int) -> np.ndarray:
        """``n`` random points, transformed: uniform in the normalized space (what
        ``rvs`` + ``transform`` gives for uniform and log-uniform reals), snapped onto
        integers and categories, without skopt's per-point Python."""
        bounds = self._bounds
        return self.snap(self._rng.uniform(bounds[:, 0], bounds[:, 1], (n, len(bounds))))

    def farthest(self, known: np.ndarray, n: int = 512) -> np.ndarray:
        """Of ``n`` random candidates, the one farthest from its nearest ``known`` point
        (maximin; each dimension's bounds scaled to 1). No model, about a millisecond.

        >>> sampler = CandidateSampler(Space([SkReal(0.0, 1.0)]), np.random.RandomState(0))
        >>> float(sampler.farthest(np.array([[0.0], [0.5]]))[0]) > 0.9
        True
        """
        C = self.sample(n)
        if len(known) == 0:
            return C[0]
        span = self._bounds[:, 1] - self._bounds[:, 0]
        span[span == 0] = 1.0
        C_s, K_s = C / span, known / span
        # squared distances |c|^2 + |k|^2 - 2 c.k: (n, len(known)), without a 3-d array
        d = (C_s**2).sum(1)[:, None] + (K_s**2).sum(1)[None, :] - 2 * C_s @ K_s.T
        return C[int(np.argmax(d.min(axis=1)))]

    def snap(self, Xt: np.ndarray) -> np.ndarray:
        """Transformed points moved onto the space (integers, one category each),
        dimension by dimension, as ``transform(inverse_transform(Xt))`` does."""
        if self.space.is_real:
            return Xt
        out, column = Xt.copy(), 0
        for dim, allowed in zip(self.space.dimensions, self.grids, strict=True):
            width = dim.transformed_size
            block = Xt[:, column : column + width]
            if allowed is not None:  # the nearest allowed value (integers, two categories)
                at = np.clip(np.searchsorted(allowed, block[:, 0]), 1, len(allowed) - 1)
                lower, upper = allowed[at - 1], allowed[at]
                nearest = np.where(block[:, 0] - lower < upper - block[:, 0], lower, upper)
                out[:, column] = nearest
            elif width > 1:  # one-hot categories: the largest wins
                out[:, column : column + width] = np.eye(width)[np.argmax(block, axis=1)]
            elif not isinstance(dim, SkReal):
                snapped = np.asarray(dim.transform(dim.inverse_transform(block[:, 0])), float)
                out[:, column] = snapped.reshape(len(Xt))
            column += width
        return out

    @functools.cached_property
    def grids(self) -> list[np.ndarray | None]:
        """Per dimension, its sorted transformed values when it has few (<= 10,000) and
        one column; else None."""
        grids: list[np.ndarray | None] = []
        for dim in self.space.dimensions:
            grid = None
            if dim.transformed_size == 1 and isinstance(dim, SkInteger):
                if dim.high - dim.low < 10_000:
                    values = np.arange(dim.low, dim.high + 1)
                    grid = np.unique(np.asarray(dim.transform(values), dtype=float))
            elif dim.transformed_size == 1 and isinstance(dim, SkCategorical):
                grid = np.unique(np.asarray(dim.transform(list(dim.categories)), dtype=float))
            grids.append(grid if grid is not None and len(grid) > 1 else None)
        return grids

    def local_search(
        self,
        starts: np.ndarray,
        scores: np.ndarray,
        score: Callable[[np.ndarray], np.ndarray],
    ) -> None:
        """Score points around ``starts`` in rounds of shrinking steps, keeping the
        ``len(starts)`` best points as the next round's starts. ``score`` takes new
        candidates (and, for a posterior, adds them to it) and returns values to
        minimize."""
        keep = len(starts)
        for step in _LOCAL_STEPS:
            local = np.repeat(starts, _LOCAL_POINTS, axis=0)
            local += self._rng.normal(scale=step, size=local.shape)
            local = self.snap(np.clip(local, self._bounds[:, 0], self._bounds[:, 1]))
            pool = np.vstack([starts, local])
            pool_scores = np.concatenate([scores, score(local)])
            best = np.argsort(pool_scores)[:keep]
            starts, scores = pool[best], pool_scores[best]
