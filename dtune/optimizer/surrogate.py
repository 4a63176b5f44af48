"""The Gaussian-process surrogate with priors on its kernel's hyperparameters.

scikit-optimize's GP fits its amplitude, length scales and noise by maximum likelihood.
On a few dozen points in several dimensions that overfits: length scales collapse
towards the 0.01 bound or the noise swallows the signal, and the acquisition then
chases artefacts. :class:`PriorGaussianProcess` fits the same kernel by maximum *a
posteriori* instead, with weak priors on the scales a normalized problem has (inputs
in [0, 1], values standardized): length scales near 1 and little noise. These are two of
the three priors of Optuna's GPSampler, written over the log hyperparameters
scikit-learn optimizes. Its third, Gamma(2, 1) on the amplitude, is left out: it held
Branin's amplitude near 2.3² where the data asks for a large, smooth, nearly quadratic
model, tripled Branin's regret at 8 workers and helped on none of the other problems.
Measured in docs/PERFORMANCE.md ("The surrogate's priors" and "The amplitude's
prior").

On a space with a categorical of three or more categories (one-hot columns in skopt's
transformed space) beside other dimensions, the kernel is a :class:`CategoricalMatern`:
one length scale per categorical, not per category, over a distance of 1 between two
categories (a Hamming distance, as GPSampler's kernel). Measured in
docs/PERFORMANCE.md ("One length scale per categorical").

The fit maximizes scikit-learn's log marginal likelihood, computed here for skopt's
kernel without scikit-learn's per-hyperparameter (n, n) gradient arrays: the same
values and gradients, fits 2-3x faster on 50 results and 3.5-7x on 200-400
(docs/PERFORMANCE.md, "Faster fits, and the objective pickled once").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.linalg import cho_solve, cholesky
from scipy.linalg.lapack import dpotri
from scipy.spatial.distance import pdist, squareform
from sklearn.gaussian_process.kernels import (
    ConstantKernel,
    Hyperparameter,
    Kernel,
    Product,
    Sum,
    WhiteKernel,
)
from sklearn.gaussian_process.kernels import Matern as SkMatern
from skopt.learning import GaussianProcessRegressor
from skopt.learning.gaussian_process.kernels import Matern

__all__ = ["CategoricalMatern", "PriorGaussianProcess", "log_prior"]

Objective = Callable[..., Any]


def log_prior(names: list[str], theta: np.ndarray) -> tuple[float, np.ndarray]:
    """The log prior density of a kernel's log hyperparameters ``theta`` (named, one
    name per element), and its gradient. Hyperparameters of other names are free.

    - ``length_scale`` l: ``-(0.1 l^2 + 0.1 / l^2)``, largest at l = 1;
    - ``noise_level`` n: Gamma(1.1, 30), ``0.1 log n - 30 n``.

    The amplitude (``constant_value``) is free, between its bounds.

    Examples
    --------
    >>> value, grad = log_prior(["length_scale", "noise_level"], np.log([1.0, 0.1 / 30]))
    >>> round(value, 3), bool(np.abs(grad).max() < 1e-9)
    (-0.87, True)
    """
    p = np.exp(theta)
    value = np.zeros_like(theta)
    grad = np.zeros_like(theta)
    for i, name in enumerate(names):
        if name == "length_scale":
            value[i] = -0.1 * (p[i] ** 2 + p[i] ** -2)
            grad[i] = -0.2 * (p[i] ** 2 - p[i] ** -2)
        elif name == "noise_level":
            value[i] = 0.1 * theta[i] - 30.0 * p[i]
            grad[i] = 0.1 - 30.0 * p[i]
    return float(value.sum()), grad


class PriorGaussianProcess(GaussianProcessRegressor):
    """scikit-optimize's ``GaussianProcessRegressor``, its kernel fit by maximum a
    posteriori under :func:`log_prior` (restarts compared by the same objective).

    Its log marginal likelihood is scikit-learn's, computed without the
    (n, n, hyperparameters) gradient tensors for skopt's kernel (amplitude × Matern 5/2,
    plus white noise); see :func:`_matern_lml`.
    """

    def log_marginal_likelihood(
        self, theta: Any = None, eval_gradient: bool = False, clone_kernel: bool = True
    ) -> Any:
        # Read from theta itself; the fit sets kernel_'s hyperparameters to the best
        # theta when it is done, so kernel_ is not updated at every evaluation.
        y = np.asarray(self.y_train_)
        if theta is not None and (y.ndim == 1 or y.shape[1] == 1):
            if getattr(self, "_parts_of", None) is not self.kernel_:  # once per fit
                self._parts_of, self._parts = self.kernel_, _matern_parts(self.kernel_)
            parts = self._parts
            if parts is not None and len(parts[0]) == self.X_train_.shape[1]:
                theta = np.asarray(theta, dtype=float)
                return _matern_lml(
                    theta, parts, self.X_train_, y.ravel(), self.alpha, eval_gradient
                )
        return super().log_marginal_likelihood(theta, eval_gradient, clone_kernel)

    def _constrained_optimization(
        self, obj_func: Objective, initial_theta: np.ndarray, bounds: np.ndarray
    ) -> tuple[np.ndarray, float]:
        names = [
            hp.name.rsplit("__", 1)[-1]
            for hp in self.kernel_.hyperparameters
            if not hp.fixed
            for _ in range(hp.n_elements)
        ]

        def posterior(theta: np.ndarray, eval_gradient: bool = True) -> Any:
            prior, prior_grad = log_prior(names, theta)
            if not eval_gradient:
                return obj_func(theta, eval_gradient=False) - prior
            value, grad = obj_func(theta, eval_gradient=True)
            return value - prior, grad - prior_grad

        return super()._constrained_optimization(posterior, initial_theta, bounds)


class CategoricalMatern(Matern):
    """skopt's Matern kernel over a transformed space, with one length scale per
    *dimension* of the space: a categorical's one-hot columns share one. Two different
    categories are at distance 1 (the one-hot distance, sqrt 2, scaled down), so a
    categorical's length scale means what a real dimension's does and the same prior
    fits both.

    With a length scale per category column, as skopt's kernel has, each category is
    fitted on its own few results and the model learns little across them: on the mixed
    space of scripts/bench.py its predictions ranked points worse than this kernel's on
    the same data (docs/PERFORMANCE.md).

    Parameters
    ----------
    length_scale
        One per dimension of the space.
    columns
        Per dimension, how many transformed columns it has (one-hot: one per category).

    Examples
    --------
    >>> k = CategoricalMatern(length_scale=[0.5, 2.0], columns=(1, 3))
    >>> X = np.array([[0.1, 1.0, 0.0, 0.0], [0.1, 0.0, 1.0, 0.0]])
    >>> plain = Matern([0.5, 2.0 * 2**0.5, 2.0 * 2**0.5, 2.0 * 2**0.5], nu=2.5)
    >>> bool(np.allclose(k(X), plain(X))), k.theta.shape
    (True, (2,))
    """

    def __init__(
        self,
        length_scale: Any = 1.0,
        length_scale_bounds: Any = (1e-5, 1e5),
        nu: float = 2.5,
        columns: tuple[int, ...] = (),
    ) -> None:
        super().__init__(length_scale=length_scale, length_scale_bounds=length_scale_bounds, nu=nu)
        self.columns = columns

    @property
    def hyperparameter_length_scale(self) -> Hyperparameter:
        return Hyperparameter(
            "length_scale", "numeric", self.length_scale_bounds, len(self.columns)
        )

    def _per_column(self) -> Matern:
        """The same kernel with a length scale per transformed column."""
        width = np.asarray(self.columns)
        scale = np.asarray(self.length_scale, dtype=float) * np.where(width > 1, math.sqrt(2), 1.0)
        return Matern(
            length_scale=np.repeat(scale, width), length_scale_bounds=(1e-9, 1e9), nu=self.nu
        )

    def __call__(self, X: Any, Y: Any = None, eval_gradient: bool = False) -> Any:
        per_column = self._per_column()
        if not eval_gradient:
            return per_column(X, Y)
        K, gradient = per_column(X, Y, eval_gradient=True)
        # d/d log l of a shared length scale: the sum over its columns
        starts = np.concatenate([[0], np.cumsum(self.columns)[:-1]])
        return K, np.add.reduceat(gradient, starts, axis=2)

    def gradient_x(self, x: Any, X_train: Any) -> Any:
        return self._per_column().gradient_x(x, X_train)


def _matern_parts(kernel: Kernel) -> tuple[np.ndarray, np.ndarray] | None:
    """For ``ConstantKernel * Matern(nu=2.5) + WhiteKernel`` (a
    :class:`CategoricalMatern` or a plain Matern, every hyperparameter free): per
    transformed column, which length scale in ``theta`` it uses and by what factor
    (``l_column = exp(theta[1 + index]) * factor``); None for any other kernel."""
    if not (isinstance(kernel, Sum) and isinstance(kernel.k2, WhiteKernel)):
        return None
    product = kernel.k1
    if not (isinstance(product, Product) and isinstance(product.k1, ConstantKernel)):
        return None
    matern = product.k2
    if not isinstance(matern, SkMatern) or matern.nu != 2.5:
        return None
    if any(hp.fixed for hp in kernel.hyperparameters):
        return None
    if isinstance(matern, CategoricalMatern):
        widths = np.asarray(matern.columns)
        index = np.repeat(np.arange(len(widths)), widths)
        # two categories are sqrt(2) apart in one-hot columns: scaled to 1
        factor = np.repeat(np.where(widths > 1, math.sqrt(2), 1.0), widths)
    elif type(matern).__call__ is SkMatern.__call__:
        index = np.arange(np.size(matern.length_scale))
        factor = np.ones(len(index))
    else:
        return None  # a Matern whose covariance is its own
    if len(kernel.theta) != index.max(initial=-1) + 3:
        return None
    return index, factor


def _matern_lml(
    theta: np.ndarray,
    parts: tuple[np.ndarray, np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    jitter: Any,
    eval_gradient: bool,
) -> Any:
    """scikit-learn's ``log_marginal_likelihood`` at the log hyperparameters ``theta``
    (amplitude, length scales, noise), and its gradient, for the kernels
    :func:`_matern_parts` accepts (``parts``: what it returned).

    scikit-learn builds d K / d log l as an (n, n, d) array per kernel term, stacks
    them, and contracts them with ``alpha alpha^T - K^-1`` in an einsum; on 400 results
    that was most of a fit's time. The length scales' terms are sums over pairs of
    ``M_ij (x_ic - x_jc)^2 / l_c^2``, with ``M`` that matrix times the Matern's
    derivative, so they reduce to ``2 (x_c^2 . M 1 - x_c . M x_c) / l_c^2``: two
    matrix products, no third axis.
    """
    index, factor = parts
    p = np.exp(theta)
    amplitude, noise = p[0], p[-1]
    Xs = X / (p[1:-1][index] * factor)
    r5 = math.sqrt(5) * squareform(pdist(Xs))
    decay = np.exp(-r5)
    K_signal = amplitude * (1.0 + r5 + r5**2 / 3.0) * decay
    K = K_signal.copy()
    K[np.diag_indices_from(K)] += noise + jitter
    try:
        L = cholesky(K, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        return (-np.inf, np.zeros_like(theta)) if eval_gradient else -np.inf
    alpha = cho_solve((L, True), y, check_finite=False)
    lml = -0.5 * y @ alpha - np.log(np.diag(L)).sum() - len(y) / 2 * np.log(2 * np.pi)
    if not eval_gradient:
        return lml
    inverse, info = dpotri(L, lower=1)  # K^-1 from L, a third cheaper than solving for I
    if info != 0:
        return -np.inf, np.zeros_like(theta)
    W = np.outer(alpha, alpha) - (np.tril(inverse) + np.tril(inverse, -1).T)
    M = W * (amplitude * 5.0 / 3.0 * (1.0 + r5) * decay)
    per_column = 2.0 * ((Xs**2).T @ M.sum(axis=1) - np.einsum("ic,ic->c", Xs, M @ Xs))
    grad = np.empty(len(theta))
    grad[0] = 0.5 * np.einsum("ij,ij->", W, K_signal)
    grad[1:-1] = 0.5 * np.bincount(index, per_column, minlength=len(theta) - 2)
    grad[-1] = 0.5 * noise * np.trace(W)
    return lml, grad
