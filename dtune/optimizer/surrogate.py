"""The Gaussian-process surrogate with priors on its kernel's hyperparameters.

scikit-optimize's GP fits its amplitude, length scales and noise by maximum likelihood.
On a few dozen points in several dimensions that overfits: length scales collapse
towards the 0.01 bound or the noise swallows the signal, and the acquisition then
chases artefacts. :class:`PriorGaussianProcess` fits the same kernel by maximum *a
posteriori* instead, with weak priors on the scales a normalized problem has (inputs
in [0, 1], values standardized): length scales near 1, an amplitude near 1, and little
noise. These are the priors of Optuna's GPSampler, written over the log
hyperparameters scikit-learn optimizes. Measured in docs/PERFORMANCE.md ("The
surrogate's priors").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from skopt.learning import GaussianProcessRegressor

__all__ = ["PriorGaussianProcess", "log_prior"]

Objective = Callable[..., Any]


def log_prior(names: list[str], theta: np.ndarray) -> tuple[float, np.ndarray]:
    """The log prior density of a kernel's log hyperparameters ``theta`` (named, one
    name per element), and its gradient. Hyperparameters of other names are free.

    - ``length_scale`` l: ``-(0.1 l^2 + 0.1 / l^2)``, largest at l = 1;
    - ``constant_value`` (amplitude) a: Gamma(2, 1), ``log a - a``;
    - ``noise_level`` n: Gamma(1.1, 30), ``0.1 log n - 30 n``.

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
        elif name == "constant_value":
            value[i] = theta[i] - p[i]
            grad[i] = 1.0 - p[i]
        elif name == "noise_level":
            value[i] = 0.1 * theta[i] - 30.0 * p[i]
            grad[i] = 0.1 - 30.0 * p[i]
    return float(value.sum()), grad


class PriorGaussianProcess(GaussianProcessRegressor):
    """scikit-optimize's ``GaussianProcessRegressor``, its kernel fit by maximum a
    posteriori under :func:`log_prior` (restarts compared by the same objective)."""

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
