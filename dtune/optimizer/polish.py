"""Polishing the acquisition's best candidates over a mixed space: L-BFGS-B with exact
gradients over the real dimensions, and a search of every allowed value of each integer
and categorical dimension in turn, the others held, until neither improves.

Random candidates and the perturbation search of :mod:`~dtune.optimizer.candidates`
find the right region; they do not refine in it. Without this step a search stayed
0.03-0.25 above the mixed space's optimum where scikit-optimize's L-BFGS reached 1e-3
(docs/PERFORMANCE.md). Optuna's GPSampler polishes the same way (``optim_mixed``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import fmin_l_bfgs_b
from skopt.space import Categorical as SkCategorical
from skopt.space import Integer as SkInteger
from skopt.space import Space

from dtune.optimizer.candidates import CandidateSampler

__all__ = ["Polisher"]

# Rounds of (gradient search, discrete search); L-BFGS-B iterations per round.
_ROUNDS = 4
_LBFGS_ITERATIONS = 20
# The gradient search stays within this distance of its start, per dimension (the unit
# cube's scale): unbounded, it ran to the space's edges on an early model (Branin).
_STEP = 0.05
# A discrete dimension with more allowed values is searched over this many: the nearest
# half of them and the rest spread over its range.
_MAX_CHOICES = 64

Values = Callable[[np.ndarray], np.ndarray]
ValueGradient = Callable[[np.ndarray], tuple[float, np.ndarray]]


@dataclass(frozen=True)
class _Block:
    """A discrete dimension's columns in the transformed space and its allowed rows."""

    columns: slice
    choices: np.ndarray  # (allowed values, width)


class Polisher:
    """Refines points of a transformed skopt ``space`` (normalized for a GP) by an
    acquisition function's values and gradient.

    Parameters
    ----------
    space
        The transformed space.
    sampler
        The space's candidate sampler (for snapping onto integers and categories).
    pinned_last
        Hold the last column where each start has it (a joint model's resource).

    Examples
    --------
    >>> from skopt.space import Integer, Real
    >>> space = Space([Real(0.0, 1.0), Integer(0, 10, transform="normalize")])
    >>> polisher = Polisher(space, CandidateSampler(space, np.random.RandomState(0)))
    >>> target = np.array([0.3, 0.7])
    >>> def values(X): return ((X - target) ** 2).sum(axis=1)
    >>> def value_gradient(x): return float(values(x[None])[0]), 2 * (x - target)
    >>> polisher.polish(np.array([[0.38, 0.1]]), values, value_gradient).round(3)
    array([[0.3, 0.7]])
    """

    def __init__(self, space: Space, sampler: CandidateSampler, pinned_last: bool = False) -> None:
        self._sampler = sampler
        bounds = np.asarray(space.transformed_bounds, dtype=float)
        real: list[int] = []
        self._blocks: list[_Block] = []
        # integers with too many values to list are searched as reals, then snapped
        self._snap_reals = False
        column = 0
        for dim, grid in zip(space.dimensions, sampler.grids, strict=True):
            width = dim.transformed_size
            if width > 1:  # one-hot categories
                self._blocks.append(_Block(slice(column, column + width), np.eye(width)))
            elif grid is not None:  # integers, two categories
                self._blocks.append(_Block(slice(column, column + 1), grid[:, None]))
            elif not isinstance(dim, SkCategorical):
                real.append(column)
                self._snap_reals |= isinstance(dim, SkInteger)
            column += width
        if pinned_last:  # a column held where it starts (a joint model's resource)
            real = [c for c in real if c != column - 1]
        self._real = np.asarray(real, dtype=int)
        self._real_bounds = bounds[self._real]

    def polish(
        self, starts: np.ndarray, values: Values, value_gradient: ValueGradient
    ) -> np.ndarray:
        """Each start, refined: ``values`` gives many points' acquisition (to minimize),
        ``value_gradient`` one point's and its gradient. The points come back on the
        space (snapped), each no worse than its start."""
        return np.vstack([self._polish_one(x, values, value_gradient) for x in starts])

    def _polish_one(
        self, x: np.ndarray, values: Values, value_gradient: ValueGradient
    ) -> np.ndarray:
        best = float(values(x[None])[0])
        for _ in range(_ROUNDS):
            before = best
            if len(self._real):
                x, best = self._descend(x, best, values, value_gradient)
            for block in self._blocks:
                x, best = self._choose(x, best, block, values)
            if not best < before - 1e-12 * max(1.0, abs(before)):
                break
        return x

    def _descend(
        self, x: np.ndarray, best: float, values: Values, value_gradient: ValueGradient
    ) -> tuple[np.ndarray, float]:
        """L-BFGS-B over the real dimensions, the others held."""
        real = self._real

        def on_reals(z: np.ndarray) -> tuple[float, np.ndarray]:
            point = x.copy()
            point[real] = z
            value, gradient = value_gradient(point)
            return value, gradient[real]

        low, high = self._real_bounds[:, 0], self._real_bounds[:, 1]
        box = list(
            zip(np.maximum(low, x[real] - _STEP), np.minimum(high, x[real] + _STEP), strict=True)
        )
        z, _, _ = fmin_l_bfgs_b(on_reals, x[real], bounds=box, maxiter=_LBFGS_ITERATIONS)
        moved = x.copy()
        moved[real] = z
        if self._snap_reals:
            moved = self._sampler.snap(moved[None])[0]
        value = float(values(moved[None])[0])
        return (moved, value) if value < best else (x, best)

    def _choose(
        self, x: np.ndarray, best: float, block: _Block, values: Values
    ) -> tuple[np.ndarray, float]:
        """The best allowed value of one discrete dimension, the others held."""
        choices = block.choices
        if len(choices) > _MAX_CHOICES:
            current = x[block.columns]
            nearest = np.argsort(np.abs(choices - current).sum(axis=1))[: _MAX_CHOICES // 2]
            spread = np.linspace(0, len(choices) - 1, _MAX_CHOICES // 2).round().astype(int)
            choices = choices[np.union1d(nearest, spread)]
        trial = np.repeat(x[None], len(choices), axis=0)
        trial[:, block.columns] = choices
        scores = values(trial)
        i = int(np.argmin(scores))
        return (trial[i], float(scores[i])) if scores[i] < best else (x, best)
