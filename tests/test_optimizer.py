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


def _fitted(space, n=20, seed=0, **options):
    opt = PendingAwareOptimizer(space, n_initial_points=n, random_state=seed, **options)
    points = opt.ask_batch([], n)
    opt.tell(points, [_objective(p) if len(p) == 3 else np.sin(3 * p[0]) for p in points])
    opt.fit()
    return opt


def test_candidate_posterior_matches_the_gp_conditioned_on_the_same_points():
    """dtune's own posterior over candidates is skopt's GP, numbers and all."""
    from dtune.optimizer import _Posterior

    opt = _fitted(MIXED, liar="cl_mean")
    pending = opt.ask_batch([], 3)
    X = opt._skspace.transform(opt._X + pending)
    y = np.concatenate([opt._y, np.full(3, np.mean(opt._y))])
    candidates = opt._candidates(300)
    mean, std = _Posterior(opt._model, X, y).add_candidates(candidates)
    expected_mean, expected_std = opt._conditioned_model(pending).predict(
        candidates, return_std=True
    )
    np.testing.assert_allclose(mean, expected_mean, atol=1e-8)
    # skopt derives the deviation from an explicit inverse; dtune from the Cholesky factor
    np.testing.assert_allclose(std, expected_std, rtol=1e-3, atol=1e-4)


def test_a_fantasy_is_exact_gp_conditioning():
    """With a fixed output scale, conditioning on a fantasy observation by the rank-one
    update equals refitting on it."""
    from skopt.learning import GaussianProcessRegressor
    from skopt.learning.gaussian_process.kernels import Matern

    from dtune.optimizer import _Posterior

    rng = np.random.RandomState(0)
    X, C = rng.uniform(size=(15, 2)), rng.uniform(size=(200, 2))
    y = np.sin(4 * X[:, 0]) + X[:, 1]
    model = GaussianProcessRegressor(Matern(0.3), alpha=1e-3, optimizer=None).fit(X, y)
    posterior = _Posterior(model, X, y)
    posterior.add_candidates(C)
    posterior.fantasize(7, 0.5)
    posterior.fantasize(42, -0.2)
    X2, y2 = np.vstack([X, C[[7, 42]]]), np.concatenate([y, [0.5, -0.2]])
    refit = GaussianProcessRegressor(Matern(0.3), alpha=1e-3, optimizer=None).fit(X2, y2)
    mean, std = posterior.mean_std()
    expected_mean, expected_std = refit.predict(C, return_std=True)
    np.testing.assert_allclose(mean, expected_mean, atol=1e-6)
    np.testing.assert_allclose(std, expected_std, atol=1e-5)


@pytest.mark.parametrize("liar", ["believer", "cl_min"])
def test_a_batch_is_distinct_and_avoids_told_and_pending_points(liar):
    space = SearchSpace({"x": Real(-2.0, 2.0), "y": Real(-2.0, 2.0)})
    opt = _fitted(space, liar=liar)
    pending = opt.ask_batch([], 4)
    batch = opt.ask_batch(pending, 8)
    keys = [tuple(p) for p in batch]
    assert len(set(keys)) == 8
    assert not set(keys) & {tuple(p) for p in pending + opt._X}
    # spread out, not eight copies of one optimum nudged apart
    spread = max(np.ptp([p[0] for p in batch]), np.ptp([p[1] for p in batch]))
    assert spread > 0.1


def test_believer_keeps_the_mean_at_pending_points_and_shrinks_their_uncertainty():
    from dtune.optimizer import _Posterior

    space = SearchSpace({"x": Real(-2.0, 2.0)})
    opt = _fitted(space, n=6)
    told = opt._skspace.transform(opt._X)
    at = opt._skspace.transform([[0.123]])
    before = _Posterior(opt._model, told, np.asarray(opt._y)).add_candidates(at)
    believed = before[0][0]
    after = _Posterior(
        opt._model, np.vstack([told, at]), np.append(opt._y, believed)
    ).add_candidates(at)
    assert after[1][0] < 0.5 * before[1][0]
    assert abs(after[0][0] - believed) < 0.05 * (max(opt._y) - min(opt._y))


def test_candidates_are_snapped_onto_integers_and_categories():
    opt = PendingAwareOptimizer(MIXED, random_state=0)
    raw = opt._rng.uniform(size=(500, opt._skspace.transformed_n_dims))
    expected = opt._skspace.transform(opt._skspace.inverse_transform(raw))
    np.testing.assert_allclose(opt._snap(raw), expected)
    # log-uniform integers and two categories: every snapped point is a point of the space
    other = PendingAwareOptimizer(
        SearchSpace({"b": Categorical(["x", "y"]), "k": Integer(1, 1000, prior="log-uniform")}),
        random_state=0,
    )
    snapped = other._snap(other._rng.uniform(size=(500, other._skspace.transformed_n_dims)))
    again = other._skspace.transform(other._skspace.inverse_transform(snapped))
    np.testing.assert_allclose(snapped, again)
    points = opt._skspace.inverse_transform(opt._candidates(3000))
    assert {p[2] for p in points} == {"relu", "tanh", "elu"}
    assert {p[1] for p in points} == set(range(21))


def test_a_refit_prepared_now_runs_later_and_keeps_results_told_meanwhile():
    space = SearchSpace({"x": Real(-2.0, 2.0)})
    opt = _fitted(space, n=6)
    opt.tell([[1.5]], [0.1])
    fit = opt.prepare_fit()
    opt.tell([[1.7], [-1.1]], [0.2, 0.3])  # while the fit runs elsewhere
    opt.adopt_fit(fit())
    assert opt.n_told == 9
    assert opt._model_n_told == 7
    assert opt._model.X_train_.shape[0] == 7


def test_hyperparameter_refits_use_a_bounded_subset_of_a_long_history():
    from dtune import optimizer as module

    space = SearchSpace({"x": Real(-2.0, 2.0)})
    opt = PendingAwareOptimizer(space, n_initial_points=0, random_state=0)
    xs = np.linspace(-2, 2, module._FIT_MAX_POINTS + 50)
    opt.tell([[x] for x in xs], list(np.sin(3 * xs)))
    opt.fit()
    assert opt._model.X_train_.shape[0] == module._FIT_MAX_POINTS
    # ...while suggestions condition on every result
    point = opt.ask(pending=[])
    assert tuple(point) not in {(x,) for x in xs}
