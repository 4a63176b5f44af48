"""A pending-aware, asynchronous wrapper around scikit-optimize's Bayesian optimization.

skopt's ``Optimizer`` refits its surrogate (kernel hyperparameters included) and
searches the acquisition function inside every ``tell``, and its ``ask()`` returns one
cached point until the next ``tell``; ``ask(n_points=K)`` makes K deep copies and K
refits. None of that suits workers that free up one at a time. This module keeps
skopt's models, acquisition functions and initial designs but splits the work:

- :meth:`PendingAwareOptimizer.tell` only records results (microseconds);
- :meth:`PendingAwareOptimizer.fit` refits the surrogate's hyperparameters on a
  schedule (``refit_growth``), on at most ``_FIT_MAX_POINTS`` results; it can be
  prepared here and run in another thread (:meth:`~PendingAwareOptimizer.prepare_fit`);
- :meth:`PendingAwareOptimizer.ask_batch` conditions the last fitted Gaussian process,
  its kernel held fixed, on every told result *and* the points still being evaluated
  (believed at the model's own mean by default, or a constant liar), predicts a set of
  candidates once, and picks K points by rank-one "fantasy" updates of that prediction:
  one Cholesky factorisation per batch, not a hyperparameter fit per point.

Only the latest surrogate is kept (skopt's ``model_queue_size`` list has no
counterpart), so memory stays flat however long the search. The optimizer minimizes;
the study negates values for ``direction="maximize"``.
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.linalg import cho_solve, cholesky, solve_triangular
from scipy.stats import norm
from sklearn.base import clone, is_regressor
from sklearn.utils import check_random_state
from skopt.learning import GaussianProcessRegressor
from skopt.space import Categorical as SkCategorical
from skopt.space import Integer as SkInteger
from skopt.space import Real as SkReal
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

LIARS = ("cl_min", "cl_mean", "cl_max", "believer")
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
# Hyperparameter refits use at most this many results (a random subset): the fit costs
# O(n^3) per iteration, and the hyperparameters barely move past a few hundred points.
# Every result still conditions every suggestion.
_FIT_MAX_POINTS = 400
# Candidates drawn per suggestion round shrink as the history grows past ~100 results,
# to hold the O(n^2) per candidate cost of the posterior variance near this many flops.
_CANDIDATE_FLOPS = 1e8
_MIN_CANDIDATES = 500
# Local search around the best candidates: rounds (step sizes in the unit cube), starts
# per round, points per start.
_LOCAL_STEPS = (0.1, 0.02)
_LOCAL_STARTS = 5
_LOCAL_POINTS = 40


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


class _Posterior:
    """A Gaussian process with fixed kernel hyperparameters, predicted on a candidate
    set and conditioned further on "fantasy" observations at chosen candidates.

    Each fantasy is a rank-one update of the candidates' means and variances (exact GP
    conditioning, O(candidates x data)), so a batch of K suggestions costs one posterior
    plus K cheap updates instead of K refits.
    """

    def __init__(self, model: GaussianProcessRegressor, X: np.ndarray, y: np.ndarray) -> None:
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
        ``"EI"`` (default: expected improvement), ``"gp_hedge"`` (skopt's default: EI, LCB
        or PI drawn by past gains), ``"LCB"`` or ``"PI"``. EI is the default because it
        found as good or better points than gp_hedge in dtune's asynchronous setting, with
        fewer bad seeds (docs/PERFORMANCE.md).
    acq_optimizer
        ``"auto"`` (default): ``"local"`` for a GP, else ``"sampling"``. ``"sampling"``
        picks the best of ``n_points`` random candidates; ``"local"`` then adds
        candidates around the best ones in shrinking steps (a batched stand-in for
        skopt's per-point L-BFGS polish, which ``"lbfgs"`` names for compatibility).
    acq_func_kwargs, acq_optimizer_kwargs
        As in skopt (``xi``, ``kappa``, ``eta``; ``n_points``: random candidates per
        suggestion, 2,000 by default; ``n_restarts_optimizer``: starts of the local
        search, 5 by default).
    random_state
        Seed for the initial design, the candidate points and the surrogate.
    liar
        The value assumed for points still being evaluated: ``"believer"`` (default;
        the surrogate's mean there, a "kriging believer": a GP's uncertainty shrinks
        around pending points while its mean stays), or a constant liar: ``"cl_min"``
        (the best value seen, which pushes new points away from pending ones),
        ``"cl_mean"`` or ``"cl_max"``. With a forest (RF, ET) ``"believer"`` uses the
        mean of the results.
    refit_growth
        Refit the kernel's hyperparameters once the results grew by this fraction since
        the last fit (default 0.1: every result up to 10, every 10th around 100, every
        100th around 1,000); 0 refits after every result.

    Notes
    -----
    Not thread-safe: one thread at a time may call it. Only the function returned by
    :meth:`prepare_fit` may run in another thread meanwhile (it works on a snapshot).

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
        acq_func: str = "EI",
        acq_optimizer: str = "auto",
        acq_func_kwargs: Mapping[str, Any] | None = None,
        acq_optimizer_kwargs: Mapping[str, Any] | None = None,
        random_state: int | np.random.RandomState | None = None,
        liar: str = "believer",
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
        # skopt samples 10,000; with the local search after it, 2,000 find as good
        # points at a fifth of the cost (scripts/bench_optimizer.py, docs/PERFORMANCE.md).
        self._n_points = int(optimizer_kwargs.get("n_points", 2000))
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
        if acq_optimizer not in ("auto", "local", "lbfgs", "sampling"):
            raise ValueError(
                f"acq_optimizer={acq_optimizer!r} must be 'auto', 'local', 'lbfgs' or 'sampling'"
            )
        gp = isinstance(self._estimator, GaussianProcessRegressor)
        if acq_optimizer == "lbfgs" and not (gp and has_gradients(self._estimator)):
            raise ValueError(
                f"acq_optimizer='lbfgs' needs a surrogate with gradients (a GP on a space "
                f"without categories); {self._estimator!r} needs acq_optimizer='sampling'"
            )
        if acq_optimizer in ("auto", "lbfgs"):
            return "local" if gp else "sampling"
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

    @property
    def fitted_on(self) -> int:
        """How many results the surrogate's hyperparameters were last fit on."""
        return self._model_n_told

    @property
    def has_model(self) -> bool:
        """True once a surrogate has been fitted."""
        return self._model is not None

    @property
    def in_initial_design(self) -> bool:
        """True while :meth:`ask` draws from the initial design (or at random): no
        surrogate is used, so asking is cheap anywhere."""
        return self._n_asked < self._n_initial or self._estimator is None or self.n_told < 2

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
        """Refit the surrogate, hyperparameters included, when :attr:`needs_fit` (or,
        with ``force``, whenever there are new results)."""
        fresh = self._estimator is not None and self.n_told >= 2
        if self.needs_fit or (force and fresh and self._model_n_told != self.n_told):
            self.adopt_fit(self.prepare_fit()())

    def prepare_fit(self) -> Callable[[], tuple[Any, int]]:
        """A fit of the surrogate on a snapshot of the results, to run in any thread;
        pass what it returns to :meth:`adopt_fit`. Results told meanwhile are kept.

        Past ``_FIT_MAX_POINTS`` results a random subset of them fits the hyperparameters.
        """
        X, y, n_told = list(self._X), list(self._y), self.n_told
        estimator = clone(self._estimator)
        subset = None
        if n_told > _FIT_MAX_POINTS:
            subset = self._rng.choice(n_told, _FIT_MAX_POINTS, replace=False)
        transform = self._skspace.transform

        def fit() -> tuple[Any, int]:
            Xt, yt = transform(X), np.asarray(y)
            if subset is not None:
                Xt, yt = Xt[subset], yt[subset]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                estimator.fit(Xt, yt)
            return estimator, n_told

        return fit

    def adopt_fit(self, fitted: tuple[Any, int]) -> None:
        """Use a surrogate fitted by :meth:`prepare_fit`'s function."""
        model, n_told = fitted
        if self._acq_func == "gp_hedge" and self._last_candidates is not None:
            self._gains -= model.predict(np.vstack(self._last_candidates))
        self._model = model
        self._model_n_told = n_told

    # -- suggestions ----------------------------------------------------------------------

    def ask(self, pending: Sequence[Point]) -> Point:
        """A new point, accounting for told results and for ``pending`` points.

        Initial-design points come first; then the surrogate, conditioned on the pending
        points with the liar's value, picks the best point by the acquisition function
        that is neither told nor pending (unless the space has none left).
        """
        return self.ask_batch(pending, 1)[0]

    def ask_batch(self, pending: Sequence[Point], n: int) -> list[Point]:
        """``n`` new points at once, each accounting for the ones before it as pending.

        With a Gaussian process, the batch costs one posterior over the candidates and
        a rank-one update per point (kriging with the liar's value), not one per point.

        Examples
        --------
        >>> from dtune.space import Real
        >>> opt = PendingAwareOptimizer(SearchSpace({"x": Real(-2.0, 2.0)}),
        ...                             n_initial_points=4, random_state=0)
        >>> first = opt.ask_batch([], 4)
        >>> opt.tell(first, [x[0] ** 2 for x in first])
        >>> batch = opt.ask_batch(pending=[], n=3)
        >>> len({tuple(p) for p in batch + first})
        7
        """
        seen = self._told | {_point_key(p) for p in pending}
        points: list[Point] = []
        while len(points) < n and self.in_initial_design:
            points.append(self._next_initial(seen))
            seen.add(_point_key(points[-1]))
            self._n_asked += 1
        if len(points) == n:
            return points
        if self._model is None:
            self.fit(force=True)
        busy = [*pending, *points]
        if isinstance(self._model, GaussianProcessRegressor):
            batch = self._next_batch_gp(busy, seen, n - len(points))
        else:
            batch = []
            for _ in range(n - len(points)):
                batch.append(self._next_from_model([*busy, *batch], seen))
                seen.add(_point_key(batch[-1]))
        self._n_asked += len(batch)
        return points + batch

    def ask_initial(self, pending: Sequence[Point]) -> Point:
        """A point from the initial design, or at random once it is used up: never from
        the surrogate, so cheap anywhere (the driver's stopgap while suggestions from
        the model are not ready yet)."""
        point = self._next_initial(self._told | {_point_key(p) for p in pending})
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

    def _lie(self) -> float:
        """The constant liar's value (for "believer", the mean: RF and ET)."""
        ys = np.asarray(self._y)
        if self._liar == "cl_min":
            return float(ys.min())
        return float(ys.max() if self._liar == "cl_max" else ys.mean())

    def _conditioned_model(self, pending: Sequence[Point]) -> Any:
        """The surrogate fit on told + pending points, its hyperparameters held fixed."""
        if not pending and self._model_n_told == self.n_told:
            return self._model
        X = self._skspace.transform(self._X + [list(p) for p in pending])
        y = np.concatenate([self._y, np.full(len(pending), self._lie())])
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

    def _acquisitions(self, mu: np.ndarray, std: np.ndarray) -> list[np.ndarray]:
        y_opt = float(np.min(self._y))
        funcs = _HEDGE if self._acq_func == "gp_hedge" else (self._acq_func,)
        return [_acquisition(func, mu, std, y_opt, self._acq_func_kwargs) for func in funcs]

    def _hedge_choice(self) -> int:
        """Which acquisition function to follow (gp_hedge draws one by past gains)."""
        if self._acq_func != "gp_hedge":
            return 0
        logits = self._gains - self._gains.max()
        probs = np.exp(self._acq_func_kwargs.get("eta", 1.0) * logits)
        return int(np.argmax(self._rng.multinomial(1, probs / probs.sum())))

    def _to_point(self, x: np.ndarray) -> Point:
        return list(self._skspace.inverse_transform(x.reshape(1, -1))[0])

    def _next_batch_gp(
        self, pending: Sequence[Point], seen: set[tuple[Any, ...]], n: int
    ) -> list[Point]:
        X = self._skspace.transform(self._X + [list(p) for p in pending])
        told = np.asarray(self._y)
        if self._liar == "believer":  # each pending point believed at the model's mean
            lies = np.zeros(0)
            if pending:
                lies = _Posterior(self._model, X[: len(told)], told).add_candidates(X[len(told) :])[
                    0
                ]
        else:
            lies = np.full(len(pending), self._lie())
        posterior = _Posterior(self._model, X, np.concatenate([told, lies]))
        budget = int(_CANDIDATE_FLOPS / max(1, len(X)) ** 2)
        n_candidates = min(self._n_points, max(_MIN_CANDIDATES, budget))
        candidates = self._candidates(n_candidates)
        values = self._acquisitions(*posterior.add_candidates(candidates))
        self._last_candidates = [candidates[np.argmin(v)] for v in values]
        choice = self._hedge_choice()
        if self._acq_optimizer != "sampling":
            self._local_search(posterior, values[choice], choice)
        batch: list[Point] = []
        taken: list[int] = []
        for k in range(n):
            if k:
                choice = self._hedge_choice()
            acq = self._acquisitions(*posterior.mean_std())[choice]
            acq[taken] = np.inf
            point = None
            for i in np.argsort(acq)[:100]:
                candidate = self._to_point(posterior.C[i])
                if _point_key(candidate) not in seen:
                    point = candidate
                    break
                acq[i] = np.inf
            if point is None:
                point = self._random_unseen(seen)
            else:
                taken.append(int(i))
                if k + 1 < n:
                    believed = posterior.mean_std()[0][i] if self._liar == "believer" else None
                    posterior.fantasize(int(i), self._lie() if believed is None else believed)
            batch.append(point)
            seen.add(_point_key(point))
        return batch

    def _candidates(self, n: int) -> np.ndarray:
        """``n`` random points of the space, transformed: uniform in the normalized
        space (what rvs + transform gives for uniform and log-uniform reals), snapped
        onto integers and categories, without skopt's per-point Python."""
        bounds = np.asarray(self._skspace.transformed_bounds)
        return self._snap(self._rng.uniform(bounds[:, 0], bounds[:, 1], (n, len(bounds))))

    def _snap(self, Xt: np.ndarray) -> np.ndarray:
        """Transformed points moved onto the space (integers, one category each),
        dimension by dimension, as ``transform(inverse_transform(Xt))`` does."""
        if self._skspace.is_real:
            return Xt
        out, column = Xt.copy(), 0
        for dim, allowed in zip(self._skspace.dimensions, self._snap_grid, strict=True):
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
    def _snap_grid(self) -> list[np.ndarray | None]:
        """Per dimension, its sorted transformed values when it has few (<= 10,000) and
        one column; else None."""
        grids: list[np.ndarray | None] = []
        for dim in self._skspace.dimensions:
            grid = None
            if dim.transformed_size == 1 and isinstance(dim, SkInteger):
                if dim.high - dim.low < 10_000:
                    values = np.arange(dim.low, dim.high + 1)
                    grid = np.unique(np.asarray(dim.transform(values), dtype=float))
            elif dim.transformed_size == 1 and isinstance(dim, SkCategorical):
                grid = np.unique(np.asarray(dim.transform(list(dim.categories)), dtype=float))
            grids.append(grid if grid is not None and len(grid) > 1 else None)
        return grids

    def _local_search(self, posterior: _Posterior, acq: np.ndarray, choice: int) -> None:
        """Add candidates around the best ones, in rounds of shrinking steps: a batched
        stand-in for skopt's per-point L-BFGS polish, and usable on any space."""
        bounds = np.asarray(self._skspace.transformed_bounds)
        best = np.argsort(acq)[: self._n_restarts]
        starts, starts_acq = posterior.C[best], acq[best]
        for step in _LOCAL_STEPS:
            local = np.repeat(starts, _LOCAL_POINTS, axis=0)
            local += self._rng.normal(scale=step, size=local.shape)
            local = np.clip(local, bounds[:, 0], bounds[:, 1])
            local = self._snap(local)
            local_acq = self._acquisitions(*posterior.add_candidates(local))[choice]
            pool, pool_acq = np.vstack([starts, local]), np.concatenate([starts_acq, local_acq])
            best = np.argsort(pool_acq)[: self._n_restarts]
            starts, starts_acq = pool[best], pool_acq[best]

    def _next_from_model(self, pending: Sequence[Point], seen: set[tuple[Any, ...]]) -> Point:
        """One point from a surrogate without a posterior covariance (RF, ET)."""
        model = self._conditioned_model(pending)
        candidates = self._candidates(self._n_points)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mu, std = model.predict(candidates, return_std=True)
        values = self._acquisitions(mu, std)
        self._last_candidates = [candidates[np.argmin(v)] for v in values]
        for x in candidates[np.argsort(values[self._hedge_choice()])]:
            point = self._to_point(x)
            if _point_key(point) not in seen:
                return point
        return self._random_unseen(seen)

    # -- views ----------------------------------------------------------------------------

    def result(self) -> Any:
        """The told results as a skopt ``OptimizeResult`` (for ``skopt.plots``)."""
        if not self._y:
            raise ValueError("no results told yet: nothing to show")
        self.fit(force=True)
        models = [self._model] if self._model is not None else []
        return create_result(self._X, self._y, self._skspace, self._rng, models=models)
