"""A Gaussian process's posterior with its kernel held fixed, and the acquisition
functions computed from it.

:class:`Posterior` is predicted once on a set of candidates and then conditioned further
on "fantasy" observations at chosen candidates. Each fantasy is a rank-one update of the
candidates' means and variances (exact GP conditioning, O(candidates x data)), so a
batch of K suggestions costs one posterior plus K cheap updates instead of K refits.
"""

from __future__ import annotations

import copy
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
        self._y = (y - self.shift) / self.scale
        self._alpha = cho_solve((self._L, True), self._y, check_finite=False)
        self.C = np.empty((0, X.shape[1]))
        self.mu = self.var = np.empty(0)
        self._V = np.empty((len(X), 0))
        self._updates: list[np.ndarray] = []

    def extend(self, X: np.ndarray, y: np.ndarray) -> Posterior:
        """This posterior conditioned on more observations (before any candidate): the
        Cholesky factor grows by a block, O(n^2 m) for m new points against O((n+m)^3)
        to factor again. The values are scaled as this posterior's own.

        Examples
        --------
        >>> from sklearn.gaussian_process import GaussianProcessRegressor
        >>> X = np.linspace(0, 1, 5)[:, None]
        >>> gp = GaussianProcessRegressor(alpha=1e-6).fit(X, np.sin(3 * X[:, 0]))
        >>> gp.noise_ = None
        >>> grown = Posterior(gp, X[:3], np.sin(3 * X[:3, 0])).extend(X[3:], np.sin(3 * X[3:, 0]))
        >>> whole = Posterior(gp, X, np.sin(3 * X[:, 0]))
        >>> C = np.array([[0.3], [0.9]])
        >>> bool(np.allclose(grown.add_candidates(C), whole.add_candidates(C)))
        True
        """
        if len(self.C):
            raise ValueError("extend a posterior before adding candidates to it")
        grown = copy.copy(self)
        K12 = self._kernel(self._X, X)
        K22 = self._kernel(X)
        K22[np.diag_indices_from(K22)] += self.noise
        L21 = solve_triangular(self._L, K12, lower=True, check_finite=False).T
        L22 = cholesky(K22 - L21 @ L21.T, lower=True, check_finite=False)
        n, m = len(self._X), len(X)
        L = np.zeros((n + m, n + m))
        L[:n, :n], L[n:, :n], L[n:, n:] = self._L, L21, L22
        grown._L, grown._X = L, np.vstack([self._X, X])
        grown._y = np.concatenate([self._y, (y - self.shift) / self.scale])
        grown._alpha = cho_solve((L, True), grown._y, check_finite=False)
        grown._V = np.empty((n + m, 0))
        grown._updates = []
        return grown

    def mean(self, C: np.ndarray) -> np.ndarray:
        """The mean at ``C`` on the observations alone (no fantasy; nothing is kept)."""
        return self.shift + self.scale * (self._kernel(C, self._X) @ self._alpha)

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
