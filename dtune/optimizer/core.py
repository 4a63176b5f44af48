"""The optimizer's core: its history of results, the refit schedule of the surrogate,
the initial design, and batches of pending-aware suggestions.

skopt's ``Optimizer`` refits its surrogate (kernel hyperparameters included) and
searches the acquisition function inside every ``tell``, and its ``ask()`` returns one
cached point until the next ``tell``; ``ask(n_points=K)`` makes K deep copies and K
refits. None of that suits workers that free up one at a time. This keeps skopt's
models, acquisition functions and initial designs but splits the work:

- :meth:`PendingAwareOptimizer.tell` only records results (microseconds);
- :meth:`PendingAwareOptimizer.fit` refits the surrogate's hyperparameters on a
  schedule (``refit_growth``), on at most ``FIT_MAX_POINTS`` results; it can be
  prepared here and run in another thread (:meth:`~PendingAwareOptimizer.prepare_fit`);
- :meth:`PendingAwareOptimizer.ask_batch` conditions the last fitted Gaussian process,
  its kernel held fixed, on every told result *and* the points still being evaluated
  (believed at the model's own mean by default, or a constant liar), predicts a set of
  candidates once (:mod:`~dtune.optimizer.candidates`), and picks K points by rank-one
  "fantasy" updates of that prediction (:mod:`~dtune.optimizer.posterior`).

Only the latest surrogate is kept (skopt's ``model_queue_size`` list has no
counterpart), so memory stays flat however long the search. The optimizer minimizes;
the study negates values for ``direction="maximize"``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.utils import check_random_state
from skopt.learning import GaussianProcessRegressor
from skopt.learning.gaussian_process.kernels import Matern
from skopt.space import Categorical as SkCategorical
from skopt.space import Integer as SkInteger
from skopt.space import Real as SkReal
from skopt.space import Space
from skopt.utils import cook_estimator, cook_initial_point_generator, create_result

from dtune.optimizer.candidates import CandidateSampler
from dtune.optimizer.polish import Polisher
from dtune.optimizer.posterior import (
    HEDGE,
    Posterior,
    acquisition,
    acquisition_slopes,
    measured,
)
from dtune.optimizer.restarts import Restarts, stalled
from dtune.optimizer.settings import OptimizerSettings
from dtune.optimizer.surrogate import CategoricalMatern, PriorGaussianProcess
from dtune.optimizer.trust_region import TrustRegion
from dtune.space import SearchSpace, normalized_dimensions, point_key

__all__ = [
    "CONDITION_MAX_POINTS",
    "FIT_MAX_POINTS",
    "POLISH_AFTER",
    "PendingAwareOptimizer",
    "Point",
]

Point = list[Any]
# Hyperparameter refits use at most this many results (a random subset): the fit costs
# O(n^3) per iteration, and the hyperparameters barely move past a few hundred points.
# Every result still conditions every suggestion.
FIT_MAX_POINTS = 400
# Candidates drawn per suggestion round shrink as the history grows past ~220 results,
# to hold the O(n^2) per candidate cost of the posterior variance near this many flops.
_CANDIDATE_FLOPS = 1e8
_MIN_CANDIDATES = 500
# A suggestion conditions on at most this many told results: past it, on the best half
# of them and a random sample of the rest (drawn again each round), so that the
# posterior and its candidates cost ~0.2 s a batch at 5,000 results (0.33 s at 1,500).
CONDITION_MAX_POINTS = 1000
# With acq_optimizer="auto", the best candidates are polished (:mod:`.polish`) once this
# many results are told: earlier, on a rough model, a rough maximum of the acquisition
# finds better points (48 trials); later, the polish refines what the search alone does
# not (300 trials of Hartmann6: docs/PERFORMANCE.md).
POLISH_AFTER = 100
_POLISH_FLOPS = 2e8
# Past the first stall, of every _SHARE points one comes from the trust region, and while
# stalled, one from a restart search (see _restart_points).
_SHARE = 3


@functools.lru_cache(maxsize=16)
def _draw_design(space: str, normalized: bool, name: str, n: int, seed: int) -> list[Point]:
    """``n`` points of ``name``'s design over ``space`` (JSON; its dimensions normalized
    for a GP), the same for the same arguments; kept, so a driver's copy rebuilt (a
    sync, a rung move) does not draw it again."""
    search_space = SearchSpace.from_json(json.loads(space))
    dims = normalized_dimensions(search_space) if normalized else search_space.dimensions
    # skopt's generators replace the dimensions' transformers as a side effect: a copy.
    design_space = Space(Space(dims).dimensions)
    # A maximin Latin hypercube: the best of 100 (skopt's default 1,000 take ~0.5 s).
    options = {"criterion": "maximin", "iterations": 100} if name == "lhs" else {}
    points = cook_initial_point_generator(name, **options).generate(
        design_space.dimensions, n, random_state=seed
    )
    # Some generators (skopt's Lhs over mixed dimensions) return every value as a string.
    return [[_cast(d, v) for d, v in zip(dims, p, strict=True)] for p in points]


def _cast(dim: Any, value: Any) -> Any:
    """``value`` as ``dim``'s own type (a category as the category itself)."""
    if isinstance(dim, SkCategorical):
        return next(c for c in dim.categories if c == value or str(c) == str(value))
    if isinstance(dim, SkInteger):
        return round(float(value))
    return float(value)


class PendingAwareOptimizer:
    """Suggests points for an asynchronous parallel search, in batches of any size.

    Parameters
    ----------
    space
        The search space.
    settings
        How points are picked (:class:`~dtune.optimizer.OptimizerSettings`).

    Notes
    -----
    Not thread-safe: one thread at a time may call it. Only the function returned by
    :meth:`prepare_fit` may run in another thread meanwhile (it works on a snapshot).

    Examples
    --------
    >>> from dtune.space import Real
    >>> opt = PendingAwareOptimizer(SearchSpace({"x": Real(-2.0, 2.0)}),
    ...                             OptimizerSettings(n_initial_points=3, random_state=0))
    >>> first = opt.ask_batch([], 3)
    >>> opt.tell(first, [x[0] ** 2 for x in first])
    >>> a, b = opt.ask_batch([], 2)
    >>> a != b
    True
    """

    def __init__(self, space: SearchSpace, settings: OptimizerSettings | None = None) -> None:
        self.space = space
        self.settings = settings = settings or OptimizerSettings()
        self._rng = check_random_state(settings.random_state)
        # resource_model="joint": one more input, the resource of each result (0 to 1 on
        # a log scale); every suggestion is made at the full resource (1).
        self._joint = settings.resource_model == "joint"
        self._n_dims = len(space)
        self._extra = [SkReal(0.0, 1.0, name="resource")] if self._joint else []
        normalized = Space(normalized_dimensions(space) + self._extra)  # the GP's space
        self._estimator = self._cook_estimator(settings.base_estimator, normalized)
        self._gp = isinstance(self._estimator, GaussianProcessRegressor)
        chosen = settings.acq_optimizer if self._gp else "sampling"
        self._acq_optimizer = "sampling" if chosen == "sampling" else "local"
        # How many results before the best candidates are polished (None: never).
        self._polish_after = {"lbfgs": 0, "auto": POLISH_AFTER}.get(chosen)
        # skopt samples 10,000; with the local search after it, 2,000 find as good
        # points at a fifth of the cost (scripts/bench_optimizer.py, docs/PERFORMANCE.md).
        self._n_points = int(settings.acq_optimizer_kwargs.get("n_points", 2000))
        self._n_restarts = int(settings.acq_optimizer_kwargs.get("n_restarts_optimizer", 5))
        self._skspace = normalized if self._gp else Space(space.dimensions + self._extra)
        # The configuration's own columns (the trust region's and restart searches' space).
        self._xspace = Space(self._skspace.dimensions[:-1]) if self._joint else self._skspace
        self._sampler = CandidateSampler(self._skspace, self._rng)
        if self._joint:
            self._pin_resource()
        self._polisher = Polisher(self._skspace, self._sampler, pinned_last=self._joint)
        self._restarts: Restarts | None = None  # made at the first stall past POLISH_AFTER
        self._trust_region: TrustRegion | None = None  # likewise
        self._restricted = False  # a trust region's search: points in a box only
        self._turn = 0  # points shared out since the first stall (see _restart_points)
        self._refit_due = False  # a restart search found a new best: refit the kernel
        self._fit_searches_here = True  # False: the caller fits them (defer_search_fits)
        self._initial_spec = self._initial_design(settings.initial_point_generator)
        self._initial_points: list[Point] | None = None
        self._X: list[Point] = []
        self._y: list[float] = []
        # Each result's own noise variance, in the values' units, on top of the learned
        # one: a pruned trial's imputed value is an estimate (0: a measured value).
        self._noise: list[float] = []
        self._full: list[int] = []  # which results are at the full resource (joint)
        self._Xt = np.empty((0, self._skspace.transformed_n_dims))  # _X transformed
        self._told: set[tuple[Any, ...]] = set()
        # Each configuration's latest result at the full resource, by key (for retell).
        self._full_row: dict[tuple[Any, ...], int] = {}
        self._model: Any = None
        self._model_n_told = 0
        self._n_asked = 0
        self._gains = np.zeros(len(HEDGE))
        self._last_candidates: list[np.ndarray] | None = None

    # -- set-up ---------------------------------------------------------------------------

    def _cook_estimator(self, base_estimator: Any, normalized: Space) -> Any:
        if not isinstance(base_estimator, str):
            return base_estimator
        if base_estimator.upper() == "DUMMY":
            return None
        estimator = cook_estimator(
            base_estimator.upper(),
            space=self.space.dimensions + self._extra,
            random_state=self._rng.randint(0, np.iinfo(np.int32).max),
        )
        if not isinstance(estimator, GaussianProcessRegressor):
            return estimator
        # skopt's kernel: ConstantKernel * Matern (HammingKernel if every dimension is
        # categorical, left as it is)
        amplitude, kernel = estimator.kernel.k1, estimator.kernel.k2
        columns = tuple(dim.transformed_size for dim in normalized.dimensions)
        if self.settings.categorical_kernel and max(columns) > 1 and type(kernel) is Matern:
            estimator.set_params(
                kernel=amplitude
                * CategoricalMatern(
                    length_scale=np.ones(len(columns)),
                    length_scale_bounds=(0.01, 100.0),
                    nu=2.5,
                    columns=columns,
                )
            )
        if self.settings.gp_priors:
            return PriorGaussianProcess(**estimator.get_params(deep=False))
        return estimator

    def _initial_design(self, name: str) -> tuple[str, bool, str, int, int] | None:
        """What the initial design is drawn from (its seed taken from the optimizer's
        stream now); the points are drawn when first needed (the suggestion process
        draws no initial point) and kept for a rebuilt copy (see :func:`_draw_design`)."""
        n_initial = self.settings.n_initial_points
        if cook_initial_point_generator(name) is None or n_initial == 0:
            return None
        seed = self._rng.randint(0, np.iinfo(np.int32).max)
        space = json.dumps(self.space.to_json())  # in dimension order
        return space, self._gp, name, n_initial, seed

    def draw_initial_design(self) -> None:
        """Draw the initial design now (else at the first ask that needs it: tens of ms
        for a Latin hypercube, better spent before a search than on its refill path)."""
        if self._n_asked < self.settings.n_initial_points:
            self._initial  # noqa: B018 (drawn and kept by the property)

    @property
    def _initial(self) -> list[Point] | None:
        if self._initial_points is None and self._initial_spec is not None:
            self._initial_points = _draw_design(*self._initial_spec)
        return self._initial_points

    # -- state ----------------------------------------------------------------------------

    @property
    def n_told(self) -> int:
        """How many results the optimizer has been told."""
        return len(self._y)

    @property
    def history(self) -> tuple[list[Point], list[float]]:
        """Copies of the told points and their values, in the order told."""
        return [list(p) for p in self._X], list(self._y)

    @property
    def told_noise(self) -> list[float]:
        """A copy of each told value's own noise variance, in :attr:`history`'s order."""
        return list(self._noise)

    def has_told(self, key: tuple[Any, ...]) -> bool:
        """True if a point of this :func:`~dtune.space.point_key` was told."""
        return key in self._told

    @property
    def needs_fit(self) -> bool:
        """True when enough results arrived since the surrogate's hyperparameters were last
        fit: at least one, and at least ``refit_growth`` times the results it was fit on.

        Past ``FIT_MAX_POINTS`` results, a refit waits for them to double, or for a
        restart search to find a new best value (:mod:`.restarts`).

        Between refits every result is still used: :meth:`ask_batch` conditions the last
        fitted kernel on all of them. Only the kernel's hyperparameters wait, which keeps
        the refit cost (cubic in the history) from growing per result on long searches.
        """
        if self._estimator is None or self.n_told < 2:
            return False
        if self._refit_due:
            return True
        new = self.n_told - self._model_n_told
        growth = self.settings.refit_growth
        if self._model_n_told >= FIT_MAX_POINTS:
            # A refit then sees a sample of FIT_MAX_POINTS results however many there
            # are: refit when they double (400, 800, 1,600...), not every 10% (26 refits
            # of ~5 s each between 400 and 5,000 results, a core's worth at 256 workers).
            growth = max(growth, 1.0)
        return new >= max(1, math.ceil(growth * self._model_n_told))

    @property
    def model(self) -> Any:
        """The last fitted surrogate (None before the first fit). Do not modify it."""
        return self._model

    @property
    def transformed_space(self) -> Space:
        """The skopt ``Space`` the surrogate works in (normalized for a GP)."""
        return self._skspace

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
        """True while :meth:`ask_batch` draws from the initial design (or at random): no
        surrogate is used, so asking is cheap anywhere."""
        return (
            self._n_asked < self.settings.n_initial_points
            or self._estimator is None
            or self.n_told < 2
        )

    def restrict(self, lower: np.ndarray, upper: np.ndarray) -> None:
        """Suggest only points in the box ``lower``-``upper`` of the transformed space
        (a trust region's search, :mod:`.trust_region`); with no initial design of its
        own: until it is told enough results, its points are random in the box."""
        self._sampler.restrict(lower, upper)
        if self._joint:
            self._pin_resource()
        self._restricted = True
        self._initial_spec = self._initial_points = None

    def _pin_resource(self) -> None:
        """Candidates only at the full resource (the last column held at 1)."""
        lower, upper = self._sampler.bounds.T.copy()
        lower[-1] = upper[-1] = 1.0
        self._sampler.restrict(lower, upper)

    def skip_initial(self, n: int) -> None:
        """Count ``n`` points as already asked (a resumed study's earlier trials)."""
        self._n_asked += n

    def tell(
        self,
        points: Sequence[Point],
        values: Sequence[float],
        noise: Sequence[float] | None = None,
    ) -> None:
        """Record results. Cheap: the surrogate is refit by :meth:`fit`. ``noise``: each
        value's own noise variance, in the values' units, added to the one the surrogate
        learns (an estimated value, such as a pruned trial's imputed one, is told with
        its spread; by default every value is measured: 0)."""
        noise = [0.0] * len(points) if noise is None else list(noise)
        if not len(points) == len(values) == len(noise):
            raise ValueError(f"{len(points)} points, {len(values)} values, {len(noise)} noises")
        for point, value, var in zip(points, values, noise, strict=True):
            if not math.isfinite(value):
                raise ValueError(f"cannot tell a non-finite value {value!r} for {point!r}")
            if not (math.isfinite(var) and var >= 0.0):
                raise ValueError(f"a noise variance must be finite and >= 0, not {var!r}")
            point = self._lift(point)
            self._X.append(point)
            self._y.append(float(value))
            self._noise.append(float(var))
            x = point[: self._n_dims]
            key = point_key(x)
            self._told.add(key)
            if self._joint and point[-1] != 1.0:
                continue  # a result below the full resource: the global model's alone
            self._full.append(len(self._y) - 1)
            self._full_row[key] = len(self._y) - 1
            if self._trust_region is not None:
                self._trust_region.tell(x, float(value), float(var))
            if self._restarts is not None and self._restarts.proposed(x):
                self._restarts.tell(x, float(value), float(var))
                # A new basin: length scales fitted in the old one may not hold there.
                self._refit_due = self._refit_due or value < min(self._y[:-1])

    def retell(self, point: Point, value: float, noise: float = 0.0, refit: bool = True) -> bool:
        """Replace the value told last for ``point`` at the full resource (an estimate,
        such as a paused trial's imputed value, now measured or estimated again) with
        ``value`` and its own noise variance, here and in the trust region's and restart
        search that were told it; False if ``point`` was never told. The points, their
        transformed rows and the fitted kernel stay; with ``refit``, a refit of the
        kernel's hyperparameters is due (the suggestion process runs it in the
        background); every batch conditions on the new value from now on.

        >>> from dtune.space import Real
        >>> opt = PendingAwareOptimizer(SearchSpace({"x": Real(0.0, 1.0)}))
        >>> opt.tell([[0.2], [0.4]], [1.0, 2.0], [0.5, 0.0])
        >>> opt.retell([0.2], 0.3), opt.retell([0.9], 0.3)
        (True, False)
        >>> opt.history[1], opt.told_noise
        ([0.3, 2.0], [0.0, 0.0])
        """
        if not math.isfinite(value):
            raise ValueError(f"cannot tell a non-finite value {value!r} for {point!r}")
        if not (math.isfinite(noise) and noise >= 0.0):
            raise ValueError(f"a noise variance must be finite and >= 0, not {noise!r}")
        x = list(point)[: self._n_dims]
        i = self._full_row.get(point_key(x))
        if i is None:
            return False
        self._y[i], self._noise[i] = float(value), float(noise)
        self._refit_due = self._refit_due or refit
        for part in (self._trust_region, self._restarts):
            if part is not None:
                part.retell(x, value, noise, refit)
        return True

    def retell_rows(
        self, results: Sequence[tuple[Point, float, float]], refit: bool = True
    ) -> None:
        """:meth:`retell` (point, value, noise) rows; a point never told here (a
        suggestion process started after its estimate) is told as a new result."""
        self.tell_rows([row for row in results if not self.retell(*row, refit=refit)])

    def tell_rows(self, results: Sequence[tuple[Point, float, float]]) -> None:
        """:meth:`tell` results given as (point, value, its own noise variance) rows."""
        if results:
            points, values, noise = zip(*results, strict=True)
            self.tell(points, values, noise)

    def defer_search_fits(self) -> None:
        """Leave the refits of the trust region's and the restart searches' surrogates
        to the caller (:meth:`search_fit`), as the suggestion process runs them in a
        thread: a batch never waits for one. Until a new search has its first model, it
        proposes nothing and the global model takes its share of the points."""
        self._fit_searches_here = False
        for part in (self._trust_region, self._restarts):
            if part is not None:
                part.fit_here = False

    @property
    def search_to_fit(self) -> PendingAwareOptimizer | None:
        """The trust region's or restart search that needs a refit, if one does."""
        for part in (self._trust_region, self._restarts):
            search = part.search if part is not None else None
            if search is not None and search.needs_fit:
                return search
        return None

    def search_fit(self) -> tuple[PendingAwareOptimizer, Callable[[], tuple[Any, int]]] | None:
        """:attr:`search_to_fit` and its refit (see :meth:`prepare_fit`; pass its result
        to that search's :meth:`adopt_fit`), or None when no search needs one."""
        search = self.search_to_fit
        return None if search is None else (search, search.prepare_fit())

    def ready_to_ask(self, fit_here: bool) -> bool:
        """Refit when due if ``fit_here``; whether :meth:`ask_batch` can run without a
        fit: the surrogate exists or is not needed yet (a trust region's or restart
        search whose refits run elsewhere waits for its first model)."""
        if fit_here:
            self.fit()
            return True
        return self.has_model or self.in_initial_design

    def fit(self, force: bool = False) -> None:
        """Refit the surrogate, hyperparameters included, when :attr:`needs_fit` (or,
        with ``force``, whenever there are new results)."""
        fresh = self._estimator is not None and self.n_told >= 2
        if self.needs_fit or (force and fresh and self._model_n_told != self.n_told):
            self.adopt_fit(self.prepare_fit()())

    def prepare_fit(self) -> Callable[[], tuple[Any, int]]:
        """A fit of the surrogate on a snapshot of the results, to run in any thread;
        pass what it returns to :meth:`adopt_fit`. Results told meanwhile are kept.

        Past ``FIT_MAX_POINTS`` results the best half of that many and a random sample
        of the others fit the hyperparameters (so that the length scales are those
        near the best values, as the suggestions' conditioning set is).
        """
        # The transformed history is replaced, never changed in place: safe to share.
        Xt, yt, n_told = self._transformed_told(), np.asarray(self._y), self.n_told
        noise = np.asarray(self._noise)
        estimator = clone(self._estimator)
        self._refit_due = False
        if n_told > FIT_MAX_POINTS:
            order = np.argsort(yt, kind="stable")
            best = FIT_MAX_POINTS // 2
            others = self._rng.choice(order[best:], FIT_MAX_POINTS - best, replace=False)
            subset = np.concatenate([order[:best], others])
            Xt, yt, noise = Xt[subset], yt[subset], noise[subset]
        alpha = getattr(estimator, "alpha", None)
        if alpha is not None and noise.any():
            # The fit's values are standardized (normalize_y): so is their own noise.
            estimator.set_params(alpha=alpha + noise / (float(yt.var()) or 1.0))

        def fit() -> tuple[Any, int]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                estimator.fit(Xt, yt)
            if alpha is not None:
                estimator.set_params(alpha=alpha)  # the learned noise's floor, as before
            return estimator, n_told

        return fit

    def adopt_fit(self, fitted: tuple[Any, int]) -> None:
        """Use a surrogate fitted by :meth:`prepare_fit`'s function."""
        model, n_told = fitted
        if self.settings.acq_func == "gp_hedge" and self._last_candidates is not None:
            self._gains -= model.predict(np.vstack(self._last_candidates))
        self._model = model
        self._model_n_told = n_told

    # -- suggestions ----------------------------------------------------------------------

    def ask(self, pending: Sequence[Point]) -> Point:
        """One new point: :meth:`ask_batch` of one."""
        return self.ask_batch(pending, 1)[0]

    def ask_batch(self, pending: Sequence[Point], n: int) -> list[Point]:
        """``n`` new points at once, each accounting for the ones before it as pending.

        Initial-design points come first; then the surrogate, conditioned on the
        ``pending`` points, picks points by the acquisition function that are neither
        told nor pending (unless the space has none left). With a Gaussian process, the
        batch costs one posterior over the candidates and a rank-one update per point,
        not one refit per point.

        Examples
        --------
        >>> from dtune.space import Real
        >>> opt = PendingAwareOptimizer(SearchSpace({"x": Real(-2.0, 2.0)}),
        ...                             OptimizerSettings(n_initial_points=4, random_state=0))
        >>> first = opt.ask_batch([], 4)
        >>> opt.tell(first, [x[0] ** 2 for x in first])
        >>> batch = opt.ask_batch(pending=[], n=3)
        >>> len({tuple(p) for p in batch + first})
        7
        """
        seen = self._told | {point_key(p) for p in pending}
        points: list[Point] = []
        while len(points) < n and self.in_initial_design:
            points.append(self._next_initial(seen))
            seen.add(point_key(points[-1]))
            self._n_asked += 1
        if len(points) == n:
            return points
        if self._model is None:
            self.fit(force=True)
        busy = [*pending, *points]
        if self._gp:
            batch = self._restart_points(busy, seen, n - len(points))
            if len(batch) < n - len(points):
                more = self._next_batch_gp([*busy, *batch], seen, n - len(points) - len(batch))
                batch += more
        else:
            batch = []
            for _ in range(n - len(points)):
                batch.append(self._next_from_model([*busy, *batch], seen))
                seen.add(point_key(batch[-1]))
        self._n_asked += len(batch)
        return points + batch

    def explore(self, pending: Sequence[Point]) -> Point:
        """A point chosen without the model: of random candidates, the farthest from every
        told and pending point. What the driver hands out while its suggestion process
        is not serving (starting, or slow to answer): about a millisecond, where a fit
        and an acquisition search would hold the refill path for 0.1-1 s.

        Examples
        --------
        >>> from dtune.space import Real
        >>> opt = PendingAwareOptimizer(SearchSpace({"x": Real(0.0, 1.0)}),
        ...                             OptimizerSettings(random_state=0))
        >>> opt.tell([[0.0], [0.4]], [1.0, 2.0])
        >>> x = opt.explore(pending=[[0.9]])[0]  # the middle of the widest gap, 0.4-0.9
        >>> 0.6 < x < 0.7
        True
        """
        seen = self._told | {point_key(p) for p in pending}
        Kt = np.vstack([self._transformed_told(), self.transform(pending)])
        for _ in range(3):
            point = self._to_point(self._sampler.farthest(Kt))
            if point_key(point) not in seen:
                return point
        return self._random_unseen(seen)

    def _next_initial(self, seen: set[tuple[Any, ...]]) -> Point:
        if self._initial is not None and self._n_asked < len(self._initial):
            point = list(self._initial[self._n_asked])  # the design is shared
            if point_key(point) not in seen:
                return point
        return self._random_unseen(seen)

    def _random_unseen(self, seen: set[tuple[Any, ...]]) -> Point:
        if self._restricted or self._joint:  # transformed back as needed: the first is new
            candidates = map(self._to_point, self._sampler.sample(100))
        else:
            candidates = iter(self._skspace.rvs(n_samples=100, random_state=self._rng))
        first: Point = []
        for point in candidates:
            first = first or list(point)
            if point_key(point) not in seen:
                return list(point)
        return first  # a small discrete space, every point evaluated

    def _lie(self) -> float:
        """The constant liar's value (for "believer", the mean: RF and ET)."""
        ys = np.asarray(self._y)
        if self.settings.liar == "cl_min":
            return float(ys.min())
        return float(ys.max() if self.settings.liar == "cl_max" else ys.mean())

    @property
    def _acquisition_funcs(self) -> tuple[str, ...]:
        """The acquisition functions a choice indexes (gp_hedge's three, or the one)."""
        func = self.settings.acq_func
        return HEDGE if func == "gp_hedge" else (func,)

    def _acquisitions(self, mu: np.ndarray, std: np.ndarray, y_opt: float) -> list[np.ndarray]:
        kwargs = self.settings.acq_func_kwargs
        return [acquisition(f, mu, std, y_opt, kwargs) for f in self._acquisition_funcs]

    def _incumbents(self) -> np.ndarray:
        """The told results the search improves on: those at the full resource once
        there is one, and measured (an estimate told with its noise is no result to
        improve on) once one is."""
        if self._joint and self._full:
            return np.asarray(self._full, dtype=int)
        return measured(np.asarray(self._noise))

    def _y_opt(self) -> float:
        """The best value to improve on, without a posterior: the lowest of
        :meth:`_incumbents`."""
        return float(np.min(np.asarray(self._y)[self._incumbents()]))

    def _incumbent(self, posterior: Posterior, kept: np.ndarray) -> float:
        """The value to improve on with a GP: its lowest mean at the :meth:`_incumbents`
        it conditions on (the "plug-in" incumbent). With noise-free results the mean
        there is the value told; with noisy ones (a learning curve's last epoch, a
        validation split) a lucky low value would stand as a bar no mean reaches, and
        expected improvement would then look for it where the model knows least."""
        at = np.isin(kept, self._incumbents())
        if not at.any():
            return self._y_opt()
        return float(np.min(posterior.observed_mean()[at]))

    def _hedge_choice(self) -> int:
        """Which acquisition function to follow (gp_hedge draws one by past gains)."""
        if self.settings.acq_func != "gp_hedge":
            return 0
        logits = self._gains - self._gains.max()
        probs = np.exp(self.settings.acq_func_kwargs.get("eta", 1.0) * logits)
        return int(np.argmax(self._rng.multinomial(1, probs / probs.sum())))

    def transform(self, points: Sequence[Point]) -> np.ndarray:
        """``points`` as rows of :attr:`transformed_space` (none: an empty array).

        >>> from dtune.space import Real
        >>> opt = PendingAwareOptimizer(SearchSpace({"x": Real(-2.0, 2.0)}))
        >>> opt.transform([[0.0], [2.0]]).ravel().tolist(), opt.transform([]).shape
        ([0.5, 1.0], (0, 1))
        """
        if not points:
            return np.empty((0, self._skspace.transformed_n_dims))
        return np.asarray(self._skspace.transform([self._lift(p) for p in points]), float)

    def _lift(self, point: Point) -> Point:
        """``point`` with its resource (the full one, 1, unless it has its own) when the
        model is joint; else as it is."""
        if self._joint and len(point) == self._n_dims:
            return [*point, 1.0]
        return list(point)

    def _transform_x(self, points: Sequence[Point]) -> np.ndarray:
        """The configurations of ``points`` as rows of the configuration's own space."""
        if not self._joint:
            return self.transform(points)
        if not points:
            return np.empty((0, self._xspace.transformed_n_dims))
        rows = [list(p)[: self._n_dims] for p in points]
        return np.asarray(self._xspace.transform(rows), float)

    def _transformed_told(self) -> np.ndarray:
        """Every told point, transformed (each point once, as it is first needed)."""
        if len(self._Xt) < len(self._X):
            self._Xt = np.vstack([self._Xt, self.transform(self._X[len(self._Xt) :])])
        return self._Xt

    def _conditioning(self) -> np.ndarray:
        """Which told results a suggestion conditions on: all of them, or past
        ``CONDITION_MAX_POINTS`` the best half of that many and a random sample of the
        others (the model keeps the whole space's shape, and the detail near the best)."""
        n = self.n_told
        if n <= CONDITION_MAX_POINTS:
            return np.arange(n)
        order = np.argsort(self._y, kind="stable")
        best = CONDITION_MAX_POINTS // 2
        others = self._rng.choice(order[best:], CONDITION_MAX_POINTS - best, replace=False)
        return np.sort(np.concatenate([order[:best], others]))

    def _to_point(self, x: np.ndarray) -> Point:
        """A transformed row as a point of the search space (its resource dropped)."""
        return list(self._skspace.inverse_transform(x.reshape(1, -1))[0])[: self._n_dims]

    def _next_batch_gp(
        self, pending: Sequence[Point], seen: set[tuple[Any, ...]], n: int
    ) -> list[Point]:
        kept = self._conditioning()
        told_X, told_y = self._transformed_told()[kept], np.asarray(self._y)[kept]
        posterior = Posterior(self._model, told_X, told_y, np.asarray(self._noise)[kept])
        y_opt = self._incumbent(posterior, kept)
        believer = self.settings.liar == "believer"
        if pending:  # each believed at the model's mean, or at the constant liar's value
            Xp = self.transform(pending)
            lies = posterior.mean(Xp) if believer else np.full(len(pending), self._lie())
            posterior = posterior.extend(Xp, lies)
        budget = int(_CANDIDATE_FLOPS / max(1, len(kept) + len(pending)) ** 2)
        candidates = self._sampler.sample(min(self._n_points, max(_MIN_CANDIDATES, budget)))
        values = self._acquisitions(*posterior.add_candidates(candidates), y_opt)
        self._last_candidates = [candidates[np.argmin(v)] for v in values]
        choice = self._hedge_choice()
        if self._acq_optimizer != "sampling":
            best = np.argsort(values[choice])[: self._n_restarts]
            self._sampler.local_search(
                posterior.C[best],
                values[choice][best],
                lambda local: self._acquisitions(*posterior.add_candidates(local), y_opt)[choice],
            )
        if self._polish_after is not None and self.n_told >= self._polish_after:
            # A start costs up to ~320 gradient steps of O(n^2): fewer starts as the
            # history grows, and none past ~600 points (256 workers: docs/PERFORMANCE.md).
            size = len(kept) + len(pending)
            n_starts = min(self._n_restarts, int(_POLISH_FLOPS / (320 * size**2)))
            if n_starts:
                scores = self._acquisitions(*posterior.mean_std(), y_opt)[choice]
                starts = posterior.C[np.argsort(scores)[:n_starts]]
                func = self._acquisition_funcs[choice]
                posterior.add_candidates(self._polish(posterior, starts, func, y_opt))
        batch: list[Point] = []
        taken: list[int] = []
        for k in range(n):
            if k:
                choice = self._hedge_choice()
            acq = self._acquisitions(*posterior.mean_std(), y_opt)[choice]
            acq[taken] = np.inf
            point = None
            for i in np.argsort(acq)[:100]:
                candidate = self._to_point(posterior.C[i])
                if point_key(candidate) not in seen:
                    point = candidate
                    break
            if point is None:
                point = self._random_unseen(seen)
            else:
                taken.append(int(i))
                if k + 1 < n:
                    believed = posterior.mean_std()[0][i] if believer else self._lie()
                    posterior.fantasize(int(i), float(believed))
            batch.append(point)
            seen.add(point_key(point))
        return batch

    def _restart_points(
        self, pending: Sequence[Point], seen: set[tuple[Any, ...]], n: int
    ) -> list[Point]:
        """Shares of ``n`` points from a trust region and a restart search, past
        ``POLISH_AFTER`` results with ``acq_optimizer="auto"`` or ``"lbfgs"``: from the
        first stall on, every third point comes from a trust region around the best
        result (:mod:`.trust_region`), and while the search is stalled, another third
        from a restart search (:mod:`.restarts`). The points are added to ``seen``."""
        if self._polish_after is None or self.n_told < POLISH_AFTER:
            return []
        # With a joint model, these searches see the results at the full resource only.
        full = np.asarray(self._full, dtype=int) if self._joint else None
        ys = self._y if full is None else [self._y[i] for i in full]
        if len(ys) < 2:
            return []
        is_stalled = stalled(ys, len(self.space))
        if not is_stalled and self._restarts is not None:
            self._restarts.drop()
        if is_stalled and self._restarts is None:
            seed = int(self._rng.randint(0, np.iinfo(np.int32).max))
            n_dims = len(self.space)
            self._restarts = Restarts(self._restart_search, n_dims, seed=seed)
            self._restarts.fit_here = self._fit_searches_here
            if self.settings.trust_region:
                self._trust_region = TrustRegion(
                    self._restart_search, self._transform_x, n_dims, seed=seed + 1
                )
                self._trust_region.fit_here = self._fit_searches_here
        if not (is_stalled or self._trust_region is not None):
            return []
        turns = [(self._turn + k) % _SHARE for k in range(1, n + 1)]
        self._turn += n
        points: list[Point] = []
        if self._trust_region is not None and turns.count(1):
            X, Xt, noise = self._X, self._transformed_told(), np.asarray(self._noise)
            if full is not None:  # the configurations' own columns
                X, Xt = [X[i][: self._n_dims] for i in full], Xt[full][:, :-1]
                noise = noise[full]
            y = np.asarray(ys)
            points += self._trust_region.ask(X, Xt, y, pending, turns.count(1), seen, noise)
            seen.update(point_key(p) for p in points)
        if is_stalled and self._restarts is not None and turns.count(0):
            more = self._restarts.ask([*pending, *points], turns.count(0), seen)
            seen.update(point_key(p) for p in more)
            points += more
        return points

    def _restart_search(self, seed: int) -> PendingAwareOptimizer:
        """A search of the same space and settings that knows no result yet (no polish,
        no restarts of its own), over the configuration alone."""
        settings = dataclasses.replace(
            self.settings, acq_optimizer="local", random_state=seed, resource_model="rung"
        )
        return PendingAwareOptimizer(self.space, settings)

    def _polish(
        self, posterior: Posterior, starts: np.ndarray, func: str, y_opt: float
    ) -> np.ndarray:
        """``starts`` refined by ``func`` on ``posterior`` (see :mod:`.polish`), improving
        on ``y_opt``."""
        kwargs = self.settings.acq_func_kwargs

        def values(C: np.ndarray) -> np.ndarray:
            return acquisition(func, *posterior.predict(C), y_opt, kwargs)

        def value_gradient(x: np.ndarray) -> tuple[float, np.ndarray]:
            mu, std, d_mu, d_std = posterior.predict_gradient(x)
            value, by_mu, by_std = acquisition_slopes(
                func, np.array([mu]), np.array([std]), y_opt, kwargs
            )
            return float(value[0]), by_mu[0] * d_mu + by_std[0] * d_std

        return self._polisher.polish(starts, values, value_gradient)

    def _next_from_model(self, pending: Sequence[Point], seen: set[tuple[Any, ...]]) -> Point:
        """One point from a surrogate without a posterior covariance (RF, ET): refit
        (hyperparameters fixed) on told + pending points at the liar's value."""
        model = clone(self._model)
        X = np.vstack([self._transformed_told(), self.transform(pending)])
        y = np.concatenate([self._y, np.full(len(pending), self._lie())])
        candidates = self._sampler.sample(self._n_points)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(X, y)
            mu, std = model.predict(candidates, return_std=True)
        values = self._acquisitions(mu, std, self._y_opt())
        self._last_candidates = [candidates[np.argmin(v)] for v in values]
        for x in candidates[np.argsort(values[self._hedge_choice()])]:
            point = self._to_point(x)
            if point_key(point) not in seen:
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
