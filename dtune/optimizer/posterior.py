"""A Gaussian process's posterior with its kernel held fixed, and the acquisition
functions computed from it.

:class:`Posterior` is predicted once on a set of candidates and then conditioned further
on "fantasy" observations at chosen candidates. Each fantasy is a rank-one update of the
candidates' means and variances (exact GP conditioning, O(candidates x data)), so a
batch of K suggestions costs one posterior plus K cheap updates instead of K refits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.linalg import cho_solve, cholesky, solve_triangular
from scipy.stats import norm

__all__ = ["HEDGE", "Posterior", "acquisition"]

# The acquisition functions gp_hedge draws from.
HEDGE = ("EI", "LCB", "PI")


def acquisition(
    func: str, mu: np.ndarray, std: np.ndarray, y_opt: float, kwargs: Mapping[str, Any]
) -> np.ndarray:
    """skopt's LCB, EI or PI from one prediction, as values to minimize.

    Examples
    --------
    >>> acquisition("LCB", np.array([1.0]), np.array([0.5]), 0.0, {"kappa": 2.0})
    array([0.])
    """
    if func == "LCB":
        kappa = kwargs.get("kappa", 1.96)
        return -std if kappa == "inf" else mu - kappa * std
    values = np.zeros_like(mu)
    mask = std > 0
    improve = y_opt - kwargs.get("xi", 0.01) - mu[mask]
    scaled = improve / std[mask]
    if func == "EI":
        values[mask] = improve * norm.cdf(scaled) + std[mask] * norm.pdf(scaled)
    else:
        values[mask] = norm.cdf(scaled)
    return -values


class Posterior:
    """A fitted GP's posterior on ``(X, y)`` with its kernel hyperparameters fixed.

    Parameters
    ----------
    model
        A fitted scikit-optimize ``GaussianProcessRegressor`` (its ``kernel_``, ``alpha``,
        learned ``noise_`` and ``normalize_y`` are used; it is not changed).
    X, y
        The observations to condition on (transformed points, values).

    Notes
    -----
    Not thread-safe; each batch of suggestions builds its own.
    """

    def __init__(self, model: Any, X: np.ndarray, y: np.ndarray) -> None:
        self._kernel = model.kernel_
        # skopt's GP keeps its learned noise out of kernel_: it is added at fit time only.
        self.noise = float(model.alpha + (getattr(model, "noise_", None) or 0.0))
        self.shift, self.scale = (
            (float(y.mean()), float(y.std()) or 1.0) if model.normalize_y else (0.0, 1.0)
        )
        K = self._kernel(X)
        K[np.diag_indices_from(K)] += self.noise
        self._X = X
        self._L = cholesky(K, lower=True, check_finite=False)
        self._alpha = cho_solve((self._L, True), (y - self.shift) / self.scale, check_finite=False)
        self.C = np.empty((0, X.shape[1]))
        self.mu = self.var = np.empty(0)
        self._V = np.empty((len(X), 0))
        self._updates: list[np.ndarray] = []

    def add_candidates(self, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add candidates (before any fantasy); their mean and standard deviation."""
        Kc = self._kernel(C, self._X)
        V = solve_triangular(self._L, Kc.T, lower=True, check_finite=False)
        mu = Kc @ self._alpha
        var = np.maximum(self._kernel.diag(C) - np.einsum("ij,ij->j", V, V), 0.0)
        self.C = np.vstack([self.C, C])
        self.mu = np.concatenate([self.mu, mu])
        self.var = np.concatenate([self.var, var])
        self._V = np.hstack([self._V, V])
        return self.shift + self.scale * mu, self.scale * np.sqrt(var)

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        """Every candidate's current mean and standard deviation (fantasies included)."""
        return self.shift + self.scale * self.mu, self.scale * np.sqrt(np.maximum(self.var, 0.0))

    def fantasize(self, i: int, value: float) -> None:
        """Condition on candidate ``i`` having been observed as ``value``."""
        cov = self._kernel(self.C, self.C[i : i + 1])[:, 0] - self._V.T @ self._V[:, i]
        for u in self._updates:
            cov -= u * u[i]
        denominator = self.var[i] + self.noise
        self.mu = self.mu + cov * ((value - self.shift) / self.scale - self.mu[i]) / denominator
        self.var = np.maximum(self.var - cov**2 / denominator, 0.0)
        self._updates.append(cov / math.sqrt(denominator))
