"""A pending-aware, asynchronous wrapper around scikit-optimize's Bayesian optimization.

skopt's ``Optimizer`` refits its surrogate (kernel hyperparameters included) and
searches the acquisition function inside every ``tell``, and its ``ask()`` returns one
cached point until the next ``tell``; ``ask(n_points=K)`` makes K deep copies and K
refits. None of that suits workers that free up one at a time. This module keeps
skopt's models, acquisition functions and initial designs but splits the work:

- :meth:`PendingAwareOptimizer.tell` only records results (microseconds);
- :meth:`PendingAwareOptimizer.fit` refits the surrogate's hyperparameters (the
  expensive part, done in the background on the driver's schedule);
- :meth:`PendingAwareOptimizer.ask` conditions the last fitted surrogate on every
  told result *and* on the points still being evaluated (a constant liar), keeping the
  fitted kernel hyperparameters fixed, so one suggestion costs one Cholesky
  factorisation and one acquisition search instead of a hyperparameter fit.

The optimizer minimizes; the study negates values for ``direction="maximize"``.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.optimize import fmin_l_bfgs_b
from scipy.stats import norm
from sklearn.base import clone, is_regressor
from sklearn.utils import check_random_state
from skopt.acquisition import gaussian_acquisition_1D
from skopt.learning import GaussianProcessRegressor
from skopt.space import Space
from skopt.utils import (
    cook_estimator,
    cook_initial_point_generator,
    create_result,
    has_gradients,
    normalize_dimensions,
)

from dtune.space import SearchSpace

__all__ = ["LIARS", "PendingAwareOptimizer"]

LIARS = ("cl_min", "cl_mean", "cl_max")
_ACQ_FUNCS = ("gp_hedge", "EI", "LCB", "PI")
_HEDGE = ("EI", "LCB", "PI")
_BROKEN_ESTIMATORS = {
    "GBRT": (
        "base_estimator='GBRT' is broken in scikit-optimize 0.10.2 with scikit-learn >= 1.6 "
        "and numpy >= 2.4 (its quantile regressor is not recognised as a regressor and calls "
        "the removed numpy.in1d); use 'GP', 'RF' or 'ET'"
    )
}
Point = list[Any]


def _acquisition(
    func: str, mu: np.ndarray, std: np.ndarray, y_opt: float, kwargs: Mapping[str, Any]
) -> np.ndarray:
    """skopt's LCB, EI and PI from one prediction, as values to minimize."""
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


def _point_key(point: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(v.item() if isinstance(v, np.generic) else v for v in point)


class PendingAwareOptimizer:
    """Suggests points for an asynchronous parallel search, one at a time.

    Parameters
    ----------
    space
        The search space.
    base_estimator
        ``"GP"`` (default), ``"RF"``, ``"ET"``, ``"dummy"`` (random search) or a
        scikit-learn regressor whose ``predict`` accepts ``return_std``, as in skopt.
    n_initial_points
        Points drawn from ``initial_point_generator`` before the surrogate is used.
    initial_point_generator
        ``"random"``, ``"sobol"``, ``"halton"``, ``"hammersly"``, ``"lhs"`` or ``"grid"``.
    acq_func
        ``"gp_hedge"`` (default), ``"EI"``, ``"LCB"`` or ``"PI"``.
    acq_optimizer
        ``"auto"``, ``"lbfgs"`` or ``"sampling"``, as in skopt.
    acq_func_kwargs, acq_optimizer_kwargs
        As in skopt (``xi``, ``kappa``, ``eta``; ``n_points``, ``n_restarts_optimizer``).
    random_state
        Seed for the initial design, the candidate points and the surrogate.
    liar
        The value assumed for points still being evaluated: ``"cl_min"`` (default; the
        best value seen, which pushes new points away from pending ones), ``"cl_mean"``
        or ``"cl_max"``.
    refit_growth
        Refit the kernel's hyperparameters once the results grew by this fraction since
        the last fit (default 0.1: every result up to 10, every 10th around 100, every
        100th around 1,000); 0 refits after every result.

    Notes
    -----
    Not thread-safe: one thread at a time may call it. The driver gives it its own thread.

    Examples
    --------
    >>> from dtune.space import Real
    >>> opt = PendingAwareOptimizer(SearchSpace({"x": Real(-2.0, 2.0)}), n_initial_points=3,
    ...                             random_state=0)
    >>> first = [opt.ask(pending=[]) for _ in range(3)]
    >>> opt.tell(first, [x[0] ** 2 for x in first])
    >>> opt.fit()
    >>> a = opt.ask(pending=[]); b = opt.ask(pending=[a])
    >>> a != b
    True
    """

    space: SearchSpace
    settings: dict[str, Any]
    _rng: np.random.RandomState
    _estimator: Any
    _skspace: Space
    _acq_func: str
    _acq_func_kwargs: dict[str, Any]
    _acq_optimizer: str
    _n_points: int
    _n_restarts: int
    _n_initial: int
    _initial: list[Point] | None
    _gains: np.ndarray
    _liar: str
    _refit_growth: float
    _X: list[Point]
    _y: list[float]
    _told: set[tuple[Any, ...]]
    _model: Any
    _model_n_told: int
    _n_asked: int
    _last_candidates: list[np.ndarray] | None

    def __init__(
        self,
        space: SearchSpace,
        *,
        base_estimator: str | Any = "GP",
        n_initial_points: int = 10,
        initial_point_generator: str = "random",
        acq_func: str = "gp_hedge",
        acq_optimizer: str = "auto",
        acq_func_kwargs: Mapping[str, Any] | None = None,
        acq_optimizer_kwargs: Mapping[str, Any] | None = None,
        random_state: int | np.random.RandomState | None = None,
        liar: str = "cl_min",
        refit_growth: float = 0.1,
    ) -> None:
        if (
            isinstance(n_initial_points, bool)
            or not isinstance(n_initial_points, numbers.Integral)
            or n_initial_points < 0
        ):
            raise ValueError(f"n_initial_points={n_initial_points!r} must be an int >= 0")
        if acq_func not in _ACQ_FUNCS:
            raise ValueError(
                f"acq_func={acq_func!r} is not supported; choose one of {_ACQ_FUNCS} "
                "(skopt's per-second and MES/PVRS variants need a synchronous loop)"
            )
        if liar not in LIARS:
            raise ValueError(f"liar={liar!r} must be one of {LIARS}")
        if (
            isinstance(refit_growth, bool)
            or not isinstance(refit_growth, (int, float))
            or not (0 <= refit_growth <= 10)
        ):
            raise ValueError(f"refit_growth={refit_growth!r} must be a number from 0 to 10")
        self._refit_growth = float(refit_growth)
        self.space = space
        self._rng = check_random_state(random_state)
        self._liar = liar
        self._acq_func = acq_func
        self._acq_func_kwargs = dict(acq_func_kwargs or {})
        optimizer_kwargs = dict(acq_optimizer_kwargs or {})
        self._n_points = int(optimizer_kwargs.get("n_points", 10000))
        self._n_restarts = int(optimizer_kwargs.get("n_restarts_optimizer", 5))
        self._estimator = self._cook_estimator(base_estimator)
        self._acq_optimizer = self._check_acq_optimizer(acq_optimizer)
        dims = space.dimensions
        if isinstance(self._estimator, GaussianProcessRegressor):
            dims = normalize_dimensions(dims)
        self._skspace = Space(dims)
        self._n_initial = int(n_initial_points)
        self._initial = self._initial_design(initial_point_generator)
        self.settings: dict[str, Any] = {
            "base_estimator": base_estimator if isinstance(base_estimator, str) else None,
            "n_initial_points": self._n_initial,
            "initial_point_generator": initial_point_generator,
            "acq_func": acq_func,
            "acq_optimizer": self._acq_optimizer,
            "acq_func_kwargs": self._acq_func_kwargs,
            "acq_optimizer_kwargs": optimizer_kwargs,
            "random_state": random_state if isinstance(random_state, int) else None,
            "liar": liar,
            "refit_growth": self._refit_growth,
        }
        self._X: list[Point] = []
        self._y: list[float] = []
        self._told: set[tuple[Any, ...]] = set()
        self._model: Any = None
        self._model_n_told = 0
        self._n_asked = 0
        self._gains = np.zeros(len(_HEDGE))
        self._last_candidates: list[np.ndarray] | None = None

    # -- set-up ---------------------------------------------------------------------------

    def _cook_estimator(self, base_estimator: str | Any) -> Any:
        if isinstance(base_estimator, str):
            name = base_estimator.upper()
            if name in _BROKEN_ESTIMATORS:
                raise ValueError(_BROKEN_ESTIMATORS[name])
            if name == "DUMMY":
                return None
            if name not in ("GP", "RF", "ET"):
                raise ValueError(
                    f"base_estimator={base_estimator!r}; expected 'GP', 'RF', 'ET', 'dummy' "
                    "or a scikit-learn regressor"
                )
            return cook_estimator(
                name,
                space=self.space.dimensions,
                random_state=self._rng.randint(0, np.iinfo(np.int32).max),
            )
        if not is_regressor(base_estimator):
            raise TypeError(f"base_estimator={base_estimator!r} is not a scikit-learn regressor")
        return base_estimator

    def _check_acq_optimizer(self, acq_optimizer: str) -> str:
        if acq_optimizer not in ("auto", "lbfgs", "sampling"):
            raise ValueError(
                f"acq_optimizer={acq_optimizer!r} must be 'auto', 'lbfgs' or 'sampling'"
            )
        gradients = self._estimator is not None and has_gradients(self._estimator)
        if acq_optimizer == "auto":
            return "lbfgs" if gradients else "sampling"
        if acq_optimizer == "lbfgs" and not gradients:
            raise ValueError(
                f"acq_optimizer='lbfgs' needs a surrogate with gradients (a GP on a space "
                f"without categories); {self._estimator!r} needs acq_optimizer='sampling'"
            )
        return acq_optimizer

    def _initial_design(self, name: str) -> list[Point] | None:
        generator = cook_initial_point_generator(name)
        if generator is None or self._n_initial == 0:
            return None
        design_space = Space(self._skspace.dimensions)
        # skopt's generators replace the dimensions' transformers as a side effect.
        points = generator.generate(
            design_space.dimensions,
            self._n_initial,
            random_state=self._rng.randint(0, np.iinfo(np.int32).max),
        )
        return [list(p) for p in points]

    # -- state ----------------------------------------------------------------------------

    @property
    def n_told(self) -> int:
        """How many results the optimizer has been told."""
        return len(self._y)

    @property
    def needs_fit(self) -> bool:
        """True when enough results arrived since the surrogate's hyperparameters were last
        fit: at least one, and at least ``refit_growth`` times the results it was fit on.

        Between refits every result is still used: :meth:`ask` conditions the last fitted
        kernel on all of them. Only the kernel's hyperparameters wait, which keeps the
        refit cost (cubic in the history) from growing per result on long searches.
        """
        if self._estimator is None or self.n_told < 2:
            return False
        new = self.n_told - self._model_n_told
        return new >= max(1, math.ceil(self._refit_growth * self._model_n_told))

    def skip_initial(self, n: int) -> None:
        """Count ``n`` points as already asked (a resumed study's earlier trials)."""
        self._n_asked += n

    def tell(self, points: Sequence[Point], values: Sequence[float]) -> None:
        """Record results. Cheap: the surrogate is refit by :meth:`fit`."""
        if len(points) != len(values):
            raise ValueError(f"{len(points)} points but {len(values)} values")
        for point, value in zip(points, values, strict=True):
            if not math.isfinite(value):
                raise ValueError(f"cannot tell a non-finite value {value!r} for {point!r}")
            self._X.append(list(point))
            self._y.append(float(value))
            self._told.add(_point_key(point))

    def fit(self, force: bool = False) -> None:
        """Refit the surrogate, hyperparameters included, on every told result, when
        :attr:`needs_fit` (or, with ``force``, whenever there are new results)."""
        fresh = self._estimator is not None and self.n_told >= 2
        if not (self.needs_fit or (force and fresh and self._model_n_told != self.n_told)):
            return
        model = clone(self._estimator)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(self._skspace.transform(self._X), self._y)
        if self._acq_func == "gp_hedge" and self._last_candidates is not None:
            self._gains -= model.predict(np.vstack(self._last_candidates))
        self._model = model
        self._model_n_told = self.n_told

    # -- suggestions ----------------------------------------------------------------------

    def ask(self, pending: Sequence[Point]) -> Point:
        """A new point, accounting for told results and for ``pending`` points.

        Initial-design points come first; then the surrogate, conditioned on the pending
        points with the liar's value, picks the best point by the acquisition function
        that is neither told nor pending (unless the space has none left).
        """
        seen = self._told | {_point_key(p) for p in pending}
        if self._n_asked < self._n_initial or self._estimator is None or self.n_told < 2:
            point = self._next_initial(seen)
        else:
            if self._model is None:
                self.fit()
            point = self._next_from_model(pending, seen)
        self._n_asked += 1
        return point

    def _next_initial(self, seen: set[tuple[Any, ...]]) -> Point:
        if self._initial is not None and self._n_asked < len(self._initial):
            point = self._initial[self._n_asked]
            if _point_key(point) not in seen:
                return point
        return self._random_unseen(seen)

    def _random_unseen(self, seen: set[tuple[Any, ...]]) -> Point:
        candidates = self._skspace.rvs(n_samples=100, random_state=self._rng)
        for point in candidates:
            if _point_key(point) not in seen:
                return list(point)
        return list(candidates[0])  # a small discrete space, every point evaluated

    def _conditioned_model(self, pending: Sequence[Point]) -> Any:
        """The surrogate fit on told + pending points, its hyperparameters held fixed."""
        if not pending and self._model_n_told == self.n_told:
            return self._model
        ys = np.asarray(self._y)
        lie = float(
            ys.min()
            if self._liar == "cl_min"
            else ys.max()
            if self._liar == "cl_max"
            else ys.mean()
        )
        X = self._skspace.transform(self._X + [list(p) for p in pending])
        y = np.concatenate([ys, np.full(len(pending), lie)])
        if isinstance(self._model, GaussianProcessRegressor):
            # The learned noise is folded into alpha: added to K(X, X) when fitting only,
            # as skopt does with its WhiteKernel, so predictions stay noise-free.
            noise = self._model.noise_ or 0.0
            model = clone(self._model).set_params(
                kernel=self._model.kernel_,
                alpha=self._model.alpha + noise,
                noise=None,
                optimizer=None,
            )
        else:
            model = clone(self._model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(X, y)
        return model

    def _next_from_model(self, pending: Sequence[Point], seen: set[tuple[Any, ...]]) -> Point:
        model = self._conditioned_model(pending)
        y_opt = float(np.min(self._y))
        candidates = self._skspace.transform(
            self._skspace.rvs(n_samples=self._n_points, random_state=self._rng)
        )
        # One prediction serves every acquisition function (gp_hedge evaluates three).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "predicted variances smaller than 0"
            mu, std = model.predict(candidates, return_std=True)
        funcs = _HEDGE if self._acq_func == "gp_hedge" else (self._acq_func,)
        values = [_acquisition(func, mu, std, y_opt, self._acq_func_kwargs) for func in funcs]
        best = [candidates[np.argmin(v)] for v in values]
        choice = 0
        if self._acq_func == "gp_hedge":
            logits = self._gains - self._gains.max()
            probs = np.exp(self._acq_func_kwargs.get("eta", 1.0) * logits)
            choice = int(np.argmax(self._rng.multinomial(1, probs / probs.sum())))
        order = np.argsort(values[choice])
        if self._acq_optimizer == "lbfgs":
            # Polish only the chosen function's best candidates: the others' sampled
            # optima are good enough for gp_hedge's bookkeeping of gains.
            bounds = np.asarray(self._skspace.transformed_bounds)
            x = self._lbfgs(model, y_opt, funcs[choice], candidates[order[: self._n_restarts]])
            best[choice] = np.clip(x, bounds[:, 0], bounds[:, 1])
        self._last_candidates = best
        for x in [best[choice], *candidates[order]]:
            point = list(self._skspace.inverse_transform(x.reshape(1, -1))[0])
            if _point_key(point) not in seen:
                return point
        return self._random_unseen(seen)

    def _lbfgs(self, model: Any, y_opt: float, func: str, starts: np.ndarray) -> np.ndarray:
        bounds = self._skspace.transformed_bounds
        best_x, best_value = starts[0], math.inf
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for x0 in starts:
                x, value, _ = fmin_l_bfgs_b(
                    gaussian_acquisition_1D,
                    x0,
                    args=(model, y_opt, func, self._acq_func_kwargs),
                    bounds=bounds,
                    approx_grad=False,
                    maxiter=20,
                )
                if value < best_value:
                    best_x, best_value = x, float(value)
        return np.asarray(best_x)

    # -- views ----------------------------------------------------------------------------

    def result(self) -> Any:
        """The told results as a skopt ``OptimizeResult`` (for ``skopt.plots``)."""
        if not self._y:
            raise ValueError("no results told yet: nothing to show")
        self.fit(force=True)
        models = [self._model] if self._model is not None else []
        return create_result(self._X, self._y, self._skspace, self._rng, models=models)
