"""Search spaces are checked early, with the bad value named, and map to plain values."""

from __future__ import annotations

import numpy as np
import pytest
from skopt import space as skspace

from dtune import Categorical, Integer, Real, SearchSpace


@pytest.mark.parametrize(
    ("make", "error", "needle"),
    [
        (lambda: Real(1.0, 0.0), ValueError, "low=1.0 must be less than high=0.0"),
        (lambda: Real(1.0, 1.0), ValueError, "low=1.0"),
        (lambda: Real(0.0, 1.0, prior="log-uniform"), ValueError, "low > 0, got low=0.0"),
        (lambda: Real(-1.0, 1.0, prior="log-uniform"), ValueError, "low=-1.0"),
        (lambda: Real(0.0, float("inf")), ValueError, "high=inf must be finite"),
        (lambda: Real(0.0, 1.0, prior="normal"), ValueError, "prior='normal'"),
        (lambda: Real("0", 1.0), TypeError, "low='0' must be a number"),
        (lambda: Integer(1.5, 3), TypeError, "low=1.5 must be an int"),
        (lambda: Integer(5, 2), ValueError, "low=5 must be less than high=2"),
        (lambda: Categorical([]), ValueError, "categories=[] is empty"),
        (lambda: Categorical(["a", "a"]), ValueError, "'a' appears twice"),
        (lambda: Categorical("abc"), TypeError, "must be a list"),
        (lambda: Categorical([object()]), TypeError, "stored as JSON"),
    ],
)
def test_bad_dimensions_raise_naming_the_value(make, error, needle):
    with pytest.raises(error) as info:
        make()
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("space", "error", "needle"),
    [
        ({}, ValueError, "empty"),
        ([Real(0.0, 1.0)], TypeError, "dict of name -> dimension"),
        ({1: Real(0.0, 1.0)}, ValueError, "non-empty strings, got 1"),
        ({"": Real(0.0, 1.0)}, ValueError, "got ''"),
        ({"lr": (0.0, 1.0)}, TypeError, "dimension 'lr'"),
        # skopt's own classes are checked too, where skopt does not check them itself
        ({"n": skspace.Integer(1.5, 3)}, TypeError, "dimension 'n': Integer: low=1.5"),
        ({"c": skspace.Categorical(["a", "a"])}, ValueError, "dimension 'c'"),
    ],
)
def test_bad_spaces_raise_naming_the_dimension(space, error, needle):
    with pytest.raises(error) as info:
        SearchSpace(space)
    assert needle in str(info.value)


def test_params_are_plain_python_values():
    space = SearchSpace(
        {
            "lr": Real(1e-4, 1.0, prior="log-uniform"),
            "n": Integer(1, 5),
            "p": Categorical(["a", "b"]),
        }
    )
    params = space.to_params([np.float64(0.01), np.int64(3), np.str_("b")])
    assert params == {"lr": 0.01, "n": 3, "p": "b"}
    assert [type(v) for v in params.values()] == [float, int, str]
    assert space.to_point(params) == [0.01, 3, "b"]


def test_to_point_rejects_values_outside_the_space():
    space = SearchSpace({"n": Integer(1, 5)})
    with pytest.raises(ValueError, match="parameter 'n'=9 is outside"):
        space.to_point({"n": 9})
    with pytest.raises(ValueError, match="missing \\['n'\\], unknown \\['m'\\]"):
        space.to_point({"m": 1})


def test_json_round_trip_keeps_priors_and_categories():
    space = SearchSpace(
        {
            "lr": Real(1e-6, 10.0, prior="log-uniform"),
            "units": Integer(16, 256, prior="log-uniform", base=2),
            "act": Categorical(["relu", "tanh"]),
            "flag": Categorical([True, False]),
        }
    )
    again = SearchSpace.from_json(space.to_json())
    assert again == space
    assert again.dimensions[0].prior == "log-uniform"
    assert again.dimensions[1].base == 2
    assert space != SearchSpace({"lr": Real(1e-6, 1.0, prior="log-uniform")})
