"""Search spaces: named scikit-optimize dimensions, checked early, and the mapping between
a user's parameters (plain Python values) and the optimizer's points.

``Real``, ``Integer`` and ``Categorical`` are skopt's own dimension classes with their
arguments checked at construction, so a mistake surfaces where it is written, with the
bad value in the message. skopt's classes are accepted too, and checked when a
:class:`SearchSpace` is built from them.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from skopt import space as skspace

from dtune.jsonable import jsonable

__all__ = [
    "Categorical",
    "Integer",
    "Real",
    "SearchSpace",
    "normalized_dimensions",
    "point_key",
]

Params = dict[str, Any]
_PRIORS = ("uniform", "log-uniform")
_JSON_SCALARS = (str, int, float, bool, type(None))


def _check_bounds(kind: str, low: Any, high: Any, prior: str) -> None:
    for which, bound in (("low", low), ("high", high)):
        if isinstance(bound, bool) or not isinstance(bound, numbers.Real):
            raise TypeError(f"{kind}: {which}={bound!r} must be a number")
        if not math.isfinite(bound):
            raise ValueError(f"{kind}: {which}={bound!r} must be finite")
        if kind == "Integer" and not isinstance(bound, numbers.Integral):
            raise TypeError(f"Integer: {which}={bound!r} must be an int (use Real for floats)")
    if not low < high:
        raise ValueError(f"{kind}: low={low!r} must be less than high={high!r}")
    if prior not in _PRIORS:
        raise ValueError(f"{kind}: prior={prior!r} must be one of {_PRIORS}")
    if prior == "log-uniform" and low <= 0:
        raise ValueError(f"{kind}: prior='log-uniform' needs low > 0, got low={low!r}")


def _check_categories(categories: Any) -> None:
    if isinstance(categories, (str, bytes)) or not isinstance(categories, Iterable):
        raise TypeError(f"Categorical: categories={categories!r} must be a list of values")
    values = list(categories)
    if not values:
        raise ValueError("Categorical: categories=[] is empty; give at least one category")
    for value in values:
        if not isinstance(value, _JSON_SCALARS):
            raise TypeError(
                f"Categorical: category {value!r} is a {type(value).__name__}; categories "
                "must be str, int, float, bool or None (they are stored as JSON)"
            )
    seen: list[Any] = []
    for value in values:
        if any(value == s and type(value) is type(s) for s in seen):
            raise ValueError(f"Categorical: category {value!r} appears twice in {values!r}")
        seen.append(value)


class Real(skspace.Real):
    """A continuous dimension: skopt's ``Real``, checked at construction.

    Examples
    --------
    >>> Real(1e-5, 1e-1, prior="log-uniform")
    Real(low=1e-05, high=0.1, prior='log-uniform', transform='identity')
    """

    def __init__(
        self, low: float, high: float, prior: str = "uniform", *args: Any, **kwargs: Any
    ) -> None:
        _check_bounds("Real", low, high, prior)
        super().__init__(low, high, prior, *args, **kwargs)


class Integer(skspace.Integer):
    """An integer dimension, bounds included: skopt's ``Integer``, checked at construction.

    Examples
    --------
    >>> Integer(16, 256, prior="log-uniform")
    Integer(low=16, high=256, prior='log-uniform', transform='identity')
    """

    def __init__(
        self, low: int, high: int, prior: str = "uniform", *args: Any, **kwargs: Any
    ) -> None:
        _check_bounds("Integer", low, high, prior)
        super().__init__(low, high, prior, *args, **kwargs)


class Categorical(skspace.Categorical):
    """A dimension of unordered choices: skopt's ``Categorical``, checked at construction.

    Examples
    --------
    >>> Categorical(["relu", "tanh"])
    Categorical(categories=('relu', 'tanh'), prior=None)
    """

    def __init__(self, categories: Sequence[Any], *args: Any, **kwargs: Any) -> None:
        _check_categories(categories)
        super().__init__(categories, *args, **kwargs)


def _check_dimension(name: Any, dim: Any) -> skspace.Dimension:
    if not isinstance(name, str) or not name:
        raise ValueError(f"parameter names must be non-empty strings, got {name!r}")
    try:
        if isinstance(dim, skspace.Real):
            _check_bounds("Real", dim.low, dim.high, dim.prior)
        elif isinstance(dim, skspace.Integer):
            _check_bounds("Integer", dim.low, dim.high, dim.prior)
        elif isinstance(dim, skspace.Categorical):
            _check_categories(dim.categories)
        else:
            raise TypeError(
                f"{dim!r} is a {type(dim).__name__}; expected dtune.Real, dtune.Integer "
                "or dtune.Categorical"
            )
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"dimension {name!r}: {exc}") from None
    return dim


def point_key(point: Sequence[Any]) -> tuple[Any, ...]:
    """A hashable key for an optimizer point, equal for equal values whether they are
    numpy or Python scalars.

    Examples
    --------
    >>> import numpy as np
    >>> point_key([np.float64(0.5), "relu"]) == point_key([0.5, np.str_("relu")])
    True
    """
    return tuple(jsonable(v) for v in point)


def normalized_dimensions(space: SearchSpace) -> list[skspace.Dimension]:
    """The dimensions scaled to the unit cube, as skopt's Gaussian process expects."""
    from skopt.utils import normalize_dimensions

    return list(normalize_dimensions(space.dimensions))


class SearchSpace:
    """A validated, ordered mapping of parameter names to dimensions. Immutable.

    Parameters
    ----------
    dimensions
        ``{name: Real | Integer | Categorical}``; the order of the mapping is the order
        of the optimizer's point coordinates.

    Examples
    --------
    >>> import numpy as np
    >>> space = SearchSpace({"lr": Real(1e-4, 1.0, prior="log-uniform"),
    ...                      "pool": Categorical(["max", "avg"])})
    >>> space.to_params([np.float64(0.01), np.str_("avg")])
    {'lr': 0.01, 'pool': 'avg'}
    """

    def __init__(self, dimensions: Mapping[str, skspace.Dimension]) -> None:
        if isinstance(dimensions, SearchSpace):
            dimensions = dict(zip(dimensions.names, dimensions.dimensions, strict=True))
        if not isinstance(dimensions, Mapping):
            raise TypeError(
                f"a search space is a dict of name -> dimension, got {type(dimensions).__name__}"
            )
        if not dimensions:
            raise ValueError("the search space is empty; give at least one dimension")
        self._dims = {name: _check_dimension(name, dim) for name, dim in dimensions.items()}

    @property
    def names(self) -> tuple[str, ...]:
        """Parameter names, in point order."""
        return tuple(self._dims)

    @property
    def dimensions(self) -> list[skspace.Dimension]:
        """The skopt dimensions, in point order."""
        return list(self._dims.values())

    def __len__(self) -> int:
        return len(self._dims)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(repr(self.to_json()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{n!r}: {d!r}" for n, d in self._dims.items())
        return f"SearchSpace({{{inner}}})"

    def to_params(self, point: Sequence[Any]) -> Params:
        """Named plain Python values (float, int, str…) for an optimizer point."""
        params: Params = {}
        for (name, dim), value in zip(self._dims.items(), point, strict=True):
            if isinstance(dim, skspace.Categorical):
                params[name] = dim.categories[list(dim.categories).index(value)]
            elif isinstance(dim, skspace.Integer):
                params[name] = int(value)
            else:
                params[name] = float(value)
        return params

    def to_point(self, params: Mapping[str, Any]) -> list[Any]:
        """The optimizer point for named values; raises if a value is outside its dimension."""
        if set(params) != set(self._dims):
            missing = sorted(set(self._dims) - set(params))
            extra = sorted(set(params) - set(self._dims))
            raise ValueError(f"params do not match the space: missing {missing}, unknown {extra}")
        point = [jsonable(params[name]) for name in self._dims]
        for (name, dim), value in zip(self._dims.items(), point, strict=True):
            if value not in dim:
                raise ValueError(f"parameter {name!r}={value!r} is outside {dim!r}")
        return point

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready description, stored with a study and compared on resume."""
        out: dict[str, Any] = {}
        for name, dim in self._dims.items():
            if isinstance(dim, skspace.Categorical):
                out[name] = {"type": "Categorical", "categories": list(dim.categories)}
            else:
                kind = "Integer" if isinstance(dim, skspace.Integer) else "Real"
                out[name] = {
                    "type": kind,
                    "low": jsonable(dim.low),
                    "high": jsonable(dim.high),
                    "prior": dim.prior,
                    "base": jsonable(dim.base),
                }
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SearchSpace:
        """Rebuild a space written by :meth:`to_json`."""
        dims: dict[str, skspace.Dimension] = {}
        for name, spec in data.items():
            kind = spec["type"]
            if kind == "Categorical":
                dims[name] = Categorical(spec["categories"])
            elif kind in ("Real", "Integer"):
                dim_cls = Real if kind == "Real" else Integer
                dims[name] = dim_cls(spec["low"], spec["high"], spec["prior"], base=spec["base"])
            else:
                raise ValueError(f"dimension {name!r}: unknown stored type {kind!r}")
        return cls(dims)
