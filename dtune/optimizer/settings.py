"""The optimizer's settings: one frozen dataclass that validates itself and round-trips
to JSON (a study's store keeps them, and ``load_study`` rebuilds the optimizer from them)."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ACQ_FUNCS",
    "ACQ_OPTIMIZERS",
    "ESTIMATORS",
    "LIARS",
    "RESOURCE_MODELS",
    "OptimizerSettings",
]

ACQ_FUNCS = ("EI", "gp_hedge", "LCB", "PI")
ACQ_OPTIMIZERS = ("auto", "local", "lbfgs", "sampling")
ESTIMATORS = ("GP", "RF", "ET", "dummy")
LIARS = ("believer", "cl_min", "cl_mean", "cl_max")
RESOURCE_MODELS = ("rung", "joint")
_INITIAL_GENERATORS = ("random", "sobol", "halton", "hammersly", "lhs", "grid")
_BROKEN_ESTIMATORS = {
    "GBRT": (
        "base_estimator='GBRT' is broken in scikit-optimize 0.10.2 with scikit-learn >= 1.6 "
        "and numpy >= 2.4 (its quantile regressor is not recognised as a regressor and calls "
        "the removed numpy.in1d); use 'GP', 'RF' or 'ET'"
    )
}


@dataclass(frozen=True)
class OptimizerSettings:
    """How the optimizer picks points. Checked when built; immutable.

    Parameters
    ----------
    base_estimator
        ``"GP"`` (default), ``"RF"``, ``"ET"``, ``"dummy"`` (random search) or a
        scikit-learn regressor whose ``predict`` accepts ``return_std``, as in skopt. A
        regressor object is not stored: ``load_study`` asks for it again.
    n_initial_points
        Points drawn from ``initial_point_generator`` before the surrogate is used.
    initial_point_generator
        ``"random"`` (default), ``"lhs"`` (a maximin Latin hypercube), ``"sobol"``,
        ``"halton"``, ``"hammersly"`` or ``"grid"`` (measured in docs/PERFORMANCE.md).
    acq_func
        ``"EI"`` (default: expected improvement), ``"gp_hedge"`` (skopt's default: EI,
        LCB or PI drawn by past gains), ``"LCB"`` or ``"PI"``.
    acq_optimizer
        ``"auto"`` (default: for a GP, ``"local"`` and, once 100 results are told,
        ``"lbfgs"``; else ``"sampling"``), ``"sampling"`` (the best of ``n_points``
        random candidates), ``"local"`` (then candidates around the best ones in
        shrinking steps), or ``"lbfgs"`` (then the best few polished: L-BFGS-B with
        exact gradients over the real dimensions near each, and every allowed value of
        each integer and categorical one in turn). Measured in docs/PERFORMANCE.md: the
        polish refines long searches, and on short ones helps mixed spaces and hurts
        real ones. With ``"auto"`` or ``"lbfgs"``, a search past 100 results that
        stalls also gives a third of its points to fresh restart searches while it is
        stalled (:mod:`dtune.optimizer.restarts`), and another to a trust region
        (``trust_region``).
    acq_func_kwargs, acq_optimizer_kwargs
        As in skopt (``xi``, ``kappa``, ``eta``; ``n_points``: random candidates per
        suggestion round, 2,000 by default; ``n_restarts_optimizer``: starts of the
        local search, 5 by default), except that ``xi`` is 0 unless given (skopt's
        0.01 is in the values' units), and that a GP's EI and PI improve on its lowest
        mean at a measured result, not on the lowest value told (the same when results
        are noise-free; measured in docs/PERFORMANCE.md, "Run 20").
    random_state
        Seed of the initial design, the candidates and the surrogate.
    liar
        The value assumed for points still being evaluated: ``"believer"`` (default:
        the surrogate's mean there), or a constant liar, ``"cl_min"``, ``"cl_mean"`` or
        ``"cl_max"``.
    refit_growth
        Refit the kernel's hyperparameters once the results grew by this fraction since
        the last fit (default 0.1); 0 refits after every result.
    gp_priors
        Fit the GP's kernel with weak priors on its length scales and noise (maximum
        a posteriori, as Optuna's GPSampler, less its amplitude prior; default), or,
        with False, by maximum likelihood as scikit-optimize does (measured in
        docs/PERFORMANCE.md).
    categorical_kernel
        On a space with a categorical of three or more categories (and a dimension
        that is not categorical), give the GP's kernel one length scale per
        categorical (a Hamming distance between categories, as Optuna's GPSampler;
        default), or, with False, one per category as scikit-optimize does (measured
        in docs/PERFORMANCE.md).
    trust_region
        With ``acq_optimizer`` ``"auto"`` or ``"lbfgs"``: from the first stall past 100
        results, give a third of the points to a trust region around the best result
        (:mod:`dtune.optimizer.trust_region`; default), or, with False, do not (the
        restart searches still run while stalled; measured in docs/PERFORMANCE.md).
    resource_model
        With a pruner, what the model makes of the reports at its rungs: ``"rung"``
        (default) fits one rung's values, the highest below the top with enough of
        them (BOHB's rule), the trials stopped below it told their value there plus
        the median gain to it; ``"joint"`` fits one GP over the configuration and the
        resource (MOBSTER's model): every rung's value of every trial is a result at
        its resource, and new points are those best at the full resource. Measured in
        docs/PERFORMANCE.md ("Early stopping", run 16): it ended lower on Branin and
        the mixed space, far higher on Hartmann6.

    Examples
    --------
    >>> s = OptimizerSettings(acq_func="LCB", random_state=3)
    >>> OptimizerSettings.from_json(s.to_json()) == s
    True
    >>> OptimizerSettings.from_options({"acq_fun": "EI"})
    Traceback (most recent call last):
    ...
    TypeError: unknown optimizer option 'acq_fun'; known: acq_func, acq_func_kwargs, ...
    """

    base_estimator: Any = "GP"
    n_initial_points: int = 10
    initial_point_generator: str = "random"
    acq_func: str = "EI"
    acq_optimizer: str = "auto"
    acq_func_kwargs: Mapping[str, Any] = field(default_factory=dict)
    acq_optimizer_kwargs: Mapping[str, Any] = field(default_factory=dict)
    random_state: Any = None
    liar: str = "believer"
    refit_growth: float = 0.1
    gp_priors: bool = True
    categorical_kernel: bool = True
    trust_region: bool = True
    resource_model: str = "rung"

    def __post_init__(self) -> None:
        estimator = self.base_estimator
        if isinstance(estimator, str):
            if estimator.upper() in _BROKEN_ESTIMATORS:
                raise ValueError(_BROKEN_ESTIMATORS[estimator.upper()])
            if estimator.upper() not in {e.upper() for e in ESTIMATORS}:
                raise ValueError(
                    f"base_estimator={estimator!r}; expected 'GP', 'RF', 'ET', 'dummy' "
                    "or a scikit-learn regressor"
                )
        elif not callable(getattr(estimator, "fit", None)):
            raise TypeError(f"base_estimator={estimator!r} is not a scikit-learn regressor")
        n = self.n_initial_points
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise ValueError(f"n_initial_points={n!r} must be an int >= 0")
        for name, value, allowed in (
            ("initial_point_generator", self.initial_point_generator, _INITIAL_GENERATORS),
            ("acq_optimizer", self.acq_optimizer, ACQ_OPTIMIZERS),
            ("liar", self.liar, LIARS),
            ("resource_model", self.resource_model, RESOURCE_MODELS),
        ):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} must be one of {allowed}")
        if self.acq_func not in ACQ_FUNCS:
            raise ValueError(
                f"acq_func={self.acq_func!r} is not supported; choose one of {ACQ_FUNCS} "
                "(skopt's per-second and MES/PVRS variants need a synchronous loop)"
            )
        growth = self.refit_growth
        if (
            isinstance(growth, bool)
            or not isinstance(growth, (int, float))
            or not 0 <= growth <= 10
        ):
            raise ValueError(f"refit_growth={growth!r} must be a number from 0 to 10")
        for name in ("acq_func_kwargs", "acq_optimizer_kwargs"):
            value = getattr(self, name)
            if value is None:
                object.__setattr__(self, name, {})
            elif not isinstance(value, Mapping):
                raise TypeError(f"{name}={value!r} must be a dict")
            else:
                object.__setattr__(self, name, dict(value))
        for key in ("n_points", "n_restarts_optimizer"):
            count = self.acq_optimizer_kwargs.get(key, 1)
            if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 1:
                raise ValueError(f"acq_optimizer_kwargs[{key!r}]={count!r} must be a positive int")
        if self.acq_optimizer == "lbfgs" and not self.uses_gp:
            raise ValueError(
                f"acq_optimizer='lbfgs' needs a Gaussian-process surrogate; "
                f"base_estimator={self.base_estimator!r} needs acq_optimizer='sampling'"
            )
        for name in ("gp_priors", "categorical_kernel", "trust_region"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name}={getattr(self, name)!r} must be True or False")
        seed = self.random_state
        if not (seed is None or isinstance(seed, numbers.Integral) or hasattr(seed, "randint")):
            raise TypeError(f"random_state={seed!r} must be an int, a RandomState or None")

    @property
    def uses_gp(self) -> bool:
        """True for the default Gaussian-process surrogate (named ``"GP"``)."""
        return isinstance(self.base_estimator, str) and self.base_estimator.upper() == "GP"

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> OptimizerSettings:
        """Settings from keyword options, naming any option that does not exist."""
        known = sorted(f.name for f in dataclasses.fields(cls))
        for name in options:
            if name not in known:
                raise TypeError(f"unknown optimizer option {name!r}; known: {', '.join(known)}")
        return cls(**options)

    def replace(self, **changes: Any) -> OptimizerSettings:
        """A copy with some settings changed (checked again)."""
        current = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return OptimizerSettings.from_options({**current, **changes})

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: a regressor object and a ``RandomState`` are stored as None."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if not isinstance(self.base_estimator, str):
            data["base_estimator"] = None
        if not isinstance(self.random_state, numbers.Integral):
            data["random_state"] = None
        else:
            data["random_state"] = int(self.random_state)
        data["acq_func_kwargs"] = dict(self.acq_func_kwargs)
        data["acq_optimizer_kwargs"] = dict(self.acq_optimizer_kwargs)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], **overrides: Any) -> OptimizerSettings:
        """Settings written by :meth:`to_json`, with ``overrides`` applied. Keys another
        dtune version wrote and this one does not know are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        options = {k: v for k, v in data.items() if k in names}
        options.update(overrides)
        if options.get("base_estimator", "GP") is None:
            raise ValueError(
                "this study was created with a custom base_estimator object, which a store "
                "cannot hold; pass it again: load_study(..., base_estimator=...)"
            )
        return cls.from_options(options)
