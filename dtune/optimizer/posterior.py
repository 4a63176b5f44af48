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

__all__ = ["HEDGE", "XI", "Posterior", "acquisition", "acquisition_slopes"]

# The acquisition functions gp_hedge draws from.
HEDGE = ("EI", "LCB", "PI")
# EI's and PI's margin ``xi`` unless one is given: none. skopt's 0.01 is in the values'
# own units, so it asks a search whose values differ by 0.001 near the best for gains it
# cannot make there, and expected improvement then goes where the model knows least
# (docs/PERFORMANCE.md, "Run 20").
XI = 0.0


def acquisition(
    func: str, mu: np.ndarray, std: np.ndarray, y_opt: float, kwargs: Mapping[str, Any]
) -> np.ndarray:
    """skopt's LCB, EI or PI from one prediction, as values to minimize (EI and PI with
    the margin :data:`XI` unless ``kwargs`` give ``xi``).

    Examples
    --------
    >>> acquisition("LCB", np.array([1.0]), np.array([0.5]), 0.0, {"kappa": 2.0})
    array([0.])
    """
    return _acquisition(func, mu, std, y_opt, kwargs)[0]


def acquisition_slopes(
    func: str, mu: np.ndarray, std: np.ndarray, y_opt: float, kwargs: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`acquisition`'s values and their derivatives by the mean and by the standard
    deviation (for a gradient by the point: ``d_mu * grad_mu + d_std * grad_std``).

    Examples
    --------
    >>> value, d_mu, d_std = acquisition_slopes("LCB", np.array([1.0]), np.array([0.5]),
    ...                                          0.0, {"kappa": 2.0})
    >>> float(d_mu[0]), float(d_std[0])
    (1.0, -2.0)
    """
    return _acquisition(func, mu, std, y_opt, kwargs)


def _acquisition(
    func: str, mu: np.ndarray, std: np.ndarray, y_opt: float, kwargs: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if func == "LCB":
        kappa = kwargs.get("kappa", 1.96)
        if kappa == "inf":
            return -std, np.zeros_like(mu), -np.ones_like(std)
        return mu - kappa * std, np.ones_like(mu), np.full_like(std, -kappa)
    values, d_mu, d_std = np.zeros_like(mu), np.zeros_like(mu), np.zeros_like(std)
    mask = std > 0
    improve = y_opt - kwargs.get("xi", XI) - mu[mask]
    scaled = improve / std[mask]
    cdf, pdf = norm.cdf(scaled), norm.pdf(scaled)
    if func == "EI":
        values[mask] = -(improve * cdf + std[mask] * pdf)
        d_mu[mask], d_std[mask] = cdf, -pdf
    else:
        values[mask] = -cdf
        d_mu[mask], d_std[mask] = pdf / std[mask], pdf * scaled / std[mask]
    return values, d_mu, d_std


def measured(noise: np.ndarray) -> np.ndarray:
    """The indices of the values told with no noise of their own (measured, not
    estimated: an estimate is no best to improve on or refine around); all of them if
    none is.

    >>> measured(np.array([0.0, 0.04, 0.0])).tolist(), measured(np.array([0.04])).tolist()
    ([0, 2], [0])
    """
    is_measured = noise == 0
    return np.flatnonzero(is_measured) if is_measured.any() else np.arange(len(noise))


def best_measured(y: np.ndarray, noise: np.ndarray) -> int:
    """The index of the lowest of the :func:`measured` values ``y``.

    >>> best_measured(np.array([0.5, -1.0, 0.2]), np.array([0.0, 0.04, 0.0]))
    2
    """
    at = measured(noise)
    return int(at[np.argmin(y[at])])


class Posterior:
    """A fitted GP's posterior on ``(X, y)`` with its kernel hyperparameters fixed.

    Parameters
    ----------
    model
        A fitted scikit-optimize ``GaussianProcessRegressor`` (its ``kernel_``, ``alpha``,
        learned ``noise_`` and ``normalize_y`` are used; it is not changed).
    X, y
        The observations to condition on (transformed points, values).
    noise
        Each observation's own noise variance, in ``y``'s units, on top of the model's
        (None: none).

    Notes
    -----
    Not thread-safe; each batch of suggestions builds its own.
    """

    def __init__(
        self, model: Any, X: np.ndarray, y: np.ndarray, noise: np.ndarray | None = None
    ) -> None:
        self._kernel = model.kernel_
        # skopt's GP keeps its learned noise out of kernel_: it is added at fit time only.
        self.noise = float(model.alpha + (getattr(model, "noise_", None) or 0.0))
        self.shift, self.scale = (
            (float(y.mean()), float(y.std()) or 1.0) if model.normalize_y else (0.0, 1.0)
        )
        K = self._kernel(X)
        # what the observations' noise adds to the kernel's diagonal
        self._diagonal = np.full(len(X), self.noise)
        if noise is not None:
            self._diagonal += noise / self.scale**2
        K[np.diag_indices_from(K)] += self._diagonal
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
        grown._diagonal = np.concatenate([self._diagonal, np.full(m, self.noise)])
        grown._y = np.concatenate([self._y, (y - self.shift) / self.scale])
        grown._alpha = cho_solve((L, True), grown._y, check_finite=False)
        grown._V = np.empty((n + m, 0))
        grown._updates = []
        return grown

    def observed_mean(self) -> np.ndarray:
        """The mean at the observations themselves, in O(n): the kernel times the
        weights is the values less what the noise on the diagonal takes of them.

        >>> from sklearn.gaussian_process import GaussianProcessRegressor
        >>> X = np.linspace(0, 1, 6)[:, None]
        >>> gp = GaussianProcessRegressor(alpha=0.01).fit(X, np.sin(3 * X[:, 0]))
        >>> gp.noise_ = None
        >>> post = Posterior(gp, X, np.sin(3 * X[:, 0]), np.full(6, 0.02))
        >>> bool(np.allclose(post.observed_mean(), post.mean(X)))
        True
        """
        return self.shift + self.scale * (self._y - self._diagonal * self._alpha)

    def mean(self, C: np.ndarray) -> np.ndarray:
        """The mean at ``C`` on the observations alone (no fantasy; nothing is kept)."""
        return self.shift + self.scale * (self._kernel(C, self._X) @ self._alpha)

    def add_candidates(self, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add candidates (before any fantasy); their mean and standard deviation."""
        if self._updates:
            raise ValueError("add candidates to a posterior before any fantasy")
        mu, var, V = self._predict(C)
        self.C = np.vstack([self.C, C])
        self.mu = np.concatenate([self.mu, mu])
        self.var = np.concatenate([self.var, var])
        self._V = np.hstack([self._V, V])
        return self.shift + self.scale * mu, self.scale * np.sqrt(var)

    def predict(self, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The mean and standard deviation at ``C`` on the observations alone (no fantasy;
        nothing is kept)."""
        mu, var, _ = self._predict(C)
        return self.shift + self.scale * mu, self.scale * np.sqrt(var)

    def predict_gradient(self, x: np.ndarray) -> tuple[float, float, np.ndarray, np.ndarray]:
        """The mean and standard deviation at one point ``x`` (no fantasy), and their
        gradients by ``x``: what a gradient search of an acquisition function needs.

        Examples
        --------
        >>> from skopt.learning import GaussianProcessRegressor
        >>> from skopt.learning.gaussian_process.kernels import Matern
        >>> X = np.linspace(0, 1, 6)[:, None]
        >>> gp = GaussianProcessRegressor(Matern(0.3, nu=2.5)).fit(X, np.sin(3 * X[:, 0]))
        >>> post = Posterior(gp, X, np.sin(3 * X[:, 0]))
        >>> x, h = np.array([0.37]), 1e-6
        >>> mu, std, d_mu, d_std = post.predict_gradient(x)
        >>> (m1, s1), (m0, s0) = post.predict(x[None] + h), post.predict(x[None] - h)
        >>> bool(np.isclose(d_mu[0], (m1 - m0)[0] / (2 * h), rtol=1e-4))
        True
        >>> bool(np.isclose(d_std[0], (s1 - s0)[0] / (2 * h), rtol=1e-4))
        True
        """
        k = self._kernel(x[None], self._X)[0]
        dk = self._kernel.gradient_x(x, self._X)  # (observations, dimensions)
        v = solve_triangular(self._L, k, lower=True, check_finite=False)
        var = max(float(self._kernel.diag(x[None])[0] - v @ v), 0.0)
        w = solve_triangular(self._L, v, lower=True, trans="T", check_finite=False)
        mu = self.shift + self.scale * float(k @ self._alpha)
        d_mu = self.scale * (dk.T @ self._alpha)
        std = self.scale * math.sqrt(var)
        d_std = -self.scale * (dk.T @ w) / math.sqrt(var) if var > 0 else np.zeros_like(x)
        return mu, std, d_mu, d_std

    def _predict(self, C: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scaled means, variances and ``L^-1 k(X, C)`` at ``C``."""
        Kc = self._kernel(C, self._X)
        V = solve_triangular(self._L, Kc.T, lower=True, check_finite=False)
        var = np.maximum(self._kernel.diag(C) - np.einsum("ij,ij->j", V, V), 0.0)
        return Kc @ self._alpha, var, V

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
