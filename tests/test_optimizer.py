"""The pending-aware optimizer, and the scikit-optimize / scikit-learn / numpy pairing."""

from __future__ import annotations

import numpy as np
import pytest
import skopt

from dtune import Categorical, Integer, Real, SearchSpace
from dtune.optimizer import PendingAwareOptimizer

MIXED = SearchSpace(
    {"x": Real(-2.0, 2.0), "n": Integer(0, 20), "act": Categorical(["relu", "tanh", "elu"])}
)


def _objective(point):
    x, n, act = point
    return (x - 0.5) ** 2 + 0.01 * (n - 7) ** 2 + (0.0 if act == "tanh" else 0.3)


@pytest.mark.parametrize("estimator", ["GP", "RF", "ET", "dummy"])
def test_every_supported_surrogate_runs_with_the_pinned_libraries(estimator):
    """Smoke test of skopt 0.10.x with this scikit-learn and numpy."""
    assert skopt.__version__.startswith("0.10.")
    opt = PendingAwareOptimizer(
        MIXED,
        base_estimator=estimator,
        n_initial_points=4,
        random_state=0,
        acq_optimizer_kwargs={"n_points": 500},
    )
    for _ in range(8):
        pending = [opt.ask(pending=[]) for _ in range(2)]
        opt.tell(pending, [_objective(p) for p in pending])
        opt.fit()
    result = opt.result()
    assert len(result.func_vals) == 16
    assert result.fun <= min(result.func_vals)


def test_gbrt_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"GBRT.*broken.*scikit-learn") as info:
        PendingAwareOptimizer(MIXED, base_estimator="GBRT")
    assert "use 'GP', 'RF' or 'ET'" in str(info.value)


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"acq_func": "EIps"}, "acq_func='EIps'"),
        ({"liar": "cl_median"}, "liar='cl_median'"),
        ({"n_initial_points": -1}, "n_initial_points=-1"),
        ({"acq_optimizer": "lbfgs", "base_estimator": "RF"}, "acq_optimizer='sampling'"),
        ({"base_estimator": "SVR"}, "base_estimator='SVR'"),
    ],
)
def test_bad_optimizer_options_are_named(options, needle):
    with pytest.raises((ValueError, TypeError)) as info:
        PendingAwareOptimizer(MIXED, **options)
    assert needle in str(info.value)


def test_asks_with_pending_points_never_repeat_a_running_point():
    """skopt's plain ask() returns one cached point until the next tell; this must not."""
    opt = PendingAwareOptimizer(MIXED, n_initial_points=3, random_state=1)
    first = [opt.ask(pending=[]) for _ in range(3)]
    opt.tell(first, [_objective(p) for p in first])
    opt.fit()
    pending = []
    for _ in range(6):
        pending.append(opt.ask(pending=pending))
    keys = {tuple(p) for p in pending}
    assert len(keys) == len(pending)


def test_small_discrete_space_is_covered_without_duplicates():
    space = SearchSpace({"k": Integer(0, 9)})
    opt = PendingAwareOptimizer(space, n_initial_points=2, random_state=0)
    seen, pending = [], []
    for i in range(10):
        point = opt.ask(pending=pending)
        pending.append(point)
        if len(pending) == 3 or i == 9:  # results come back while others still run
            done = pending.pop(0)
            opt.tell([done], [float((done[0] - 6) ** 2)])
            seen.append(done[0])
    seen += [p[0] for p in pending]
    assert sorted(seen) == list(range(10))


def test_same_seed_same_points_when_sequential():
    def run():
        opt = PendingAwareOptimizer(
            MIXED, n_initial_points=4, random_state=7, acq_optimizer_kwargs={"n_points": 500}
        )
        points = []
        for _ in range(8):
            p = opt.ask(pending=[])
            opt.tell([p], [_objective(p)])
            opt.fit()
            points.append(p)
        return points

    assert run() == run()


def test_conditioning_on_pending_points_keeps_the_kernel_fixed():
    space = SearchSpace({"x": Real(-2.0, 2.0)})
    opt = PendingAwareOptimizer(space, n_initial_points=5, random_state=0)
    pts = [opt.ask(pending=[]) for _ in range(5)]
    opt.tell(pts, [np.sin(3 * p[0]) for p in pts])
    opt.fit()
    conditioned = opt._conditioned_model([[0.123]])
    assert conditioned.kernel_ == opt._model.kernel_
    x = opt._skspace.transform([[0.123]])
    before_mean, before_std = opt._model.predict(x, return_std=True)
    after_mean, after_std = conditioned.predict(x, return_std=True)
    # the pending point now looks evaluated, at about the liar's value (cl_min)
    assert after_std[0] < 0.5 * before_std[0]
    assert abs(after_mean[0] - min(opt._y)) < abs(before_mean[0] - min(opt._y))
