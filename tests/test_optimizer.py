"""The pending-aware optimizer, and the scikit-optimize / scikit-learn / numpy pairing."""

from __future__ import annotations

import numbers

import numpy as np
import pytest
import skopt

from dtune import Categorical, Integer, Real, SearchSpace
from dtune.optimizer import OptimizerSettings, PendingAwareOptimizer, core
from dtune.optimizer.candidates import CandidateSampler
from dtune.optimizer.core import FIT_MAX_POINTS
from dtune.optimizer.posterior import Posterior, acquisition
from dtune.optimizer.trust_region import TrustRegion
from dtune.space import point_key

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
        OptimizerSettings(
            base_estimator=estimator,
            n_initial_points=4,
            random_state=0,
            acq_optimizer_kwargs={"n_points": 500},
        ),
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
        OptimizerSettings(base_estimator="GBRT")
    assert "use 'GP', 'RF' or 'ET'" in str(info.value)


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"acq_func": "EIps"}, "acq_func='EIps'"),
        ({"liar": "cl_median"}, "liar='cl_median'"),
        ({"n_initial_points": -1}, "n_initial_points=-1"),
        ({"acq_optimizer": "lbfgs", "base_estimator": "RF"}, "acq_optimizer='sampling'"),
        ({"base_estimator": "SVR"}, "base_estimator='SVR'"),
        ({"resource_model": "mobster"}, "resource_model='mobster'"),
    ],
)
def test_bad_optimizer_options_are_named(options, needle):
    with pytest.raises((ValueError, TypeError)) as info:
        OptimizerSettings.from_options(options)
    assert needle in str(info.value)


def test_asks_with_pending_points_never_repeat_a_running_point():
    """skopt's plain ask() returns one cached point until the next tell; this must not."""
    opt = PendingAwareOptimizer(MIXED, OptimizerSettings(n_initial_points=3, random_state=1))
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
    opt = PendingAwareOptimizer(space, OptimizerSettings(n_initial_points=2, random_state=0))
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
            MIXED,
            OptimizerSettings(
                n_initial_points=4, random_state=7, acq_optimizer_kwargs={"n_points": 500}
            ),
        )
        points = []
        for _ in range(8):
            p = opt.ask(pending=[])
            opt.tell([p], [_objective(p)])
            opt.fit()
            points.append(p)
        return points

    assert run() == run()


def _refit_with_fixed_kernel(opt, X, y):
    """skopt's GP refit on (X, y) with the fitted kernel held fixed: the reference the
    posterior's own maths must match."""
    from sklearn.base import clone

    model = clone(opt.model).set_params(
        kernel=opt.model.kernel_,
        alpha=opt.model.alpha + (opt.model.noise_ or 0.0),
        noise=None,
        optimizer=None,
    )
    return model.fit(X, y)


def test_conditioning_on_a_pending_point_at_the_liars_value_keeps_the_kernel_fixed():
    space = SearchSpace({"x": Real(-2.0, 2.0)})
    # random initial points, none of them near the pending one at 0.123
    # fit by maximum likelihood: 5 points of sin(3x) give a short length scale, so the
    # model is unsure at 0.123 (the priors' smoother fit is already sure there)
    settings = OptimizerSettings(
        n_initial_points=5, random_state=0, initial_point_generator="random", gp_priors=False
    )
    opt = PendingAwareOptimizer(space, settings)
    pts = [opt.ask(pending=[]) for _ in range(5)]
    opt.tell(pts, [np.sin(3 * p[0]) for p in pts])
    opt.fit()
    told_X, told_y = opt.history
    X = opt.transformed_space.transform(told_X)
    x = opt.transformed_space.transform([[0.123]])
    lie = min(told_y)  # cl_min
    before_mean, before_std = Posterior(opt.model, X, np.asarray(told_y)).add_candidates(x)
    after_mean, after_std = Posterior(
        opt.model, np.vstack([X, x]), np.append(told_y, lie)
    ).add_candidates(x)
    # the pending point now looks evaluated, at about the liar's value
    assert after_std[0] < 0.5 * before_std[0]
    assert abs(after_mean[0] - lie) < abs(before_mean[0] - lie)


def _fitted(space, n=20, seed=0, **options):
    options.setdefault("initial_point_generator", "random")  # points as these tests expect
    opt = PendingAwareOptimizer(
        space, OptimizerSettings(n_initial_points=n, random_state=seed, **options)
    )
    points = opt.ask_batch([], n)
    opt.tell(points, [_objective(p) if len(p) == 3 else np.sin(3 * p[0]) for p in points])
    opt.fit()
    return opt


def test_candidate_posterior_matches_the_gp_conditioned_on_the_same_points():
    """dtune's own posterior over candidates is skopt's GP, numbers and all."""

    opt = _fitted(MIXED, liar="cl_mean")
    pending = opt.ask_batch([], 3)
    X = opt.transformed_space.transform(opt.history[0] + pending)
    y = np.concatenate([opt.history[1], np.full(3, np.mean(opt.history[1]))])
    candidates = CandidateSampler(opt.transformed_space, np.random.RandomState(1)).sample(300)
    mean, std = Posterior(opt.model, X, y).add_candidates(candidates)
    expected_mean, expected_std = _refit_with_fixed_kernel(opt, X, y).predict(
        candidates, return_std=True
    )
    np.testing.assert_allclose(mean, expected_mean, atol=1e-8)
    # skopt derives the deviation from an explicit inverse; dtune from the Cholesky factor
    np.testing.assert_allclose(std, expected_std, rtol=1e-3, atol=1e-4)


def test_an_estimated_value_told_with_its_spread_pulls_the_model_less():
    """A pruned trial's imputed value is told with its own noise variance: the model
    leans on measured neighbours there, and dtune's posterior is the fitted GP's."""
    space = SearchSpace({"x": Real(0.0, 1.0)})
    points = [[float(x)] for x in np.linspace(0.0, 1.0, 11)] + [[0.55]]
    values = [float(np.sin(6 * p[0])) for p in points[:-1]] + [3.0]  # sin(3.3) is -0.16
    at = np.array([[0.55]])
    error = {}
    for var in (0.0, 1.0):
        opt = PendingAwareOptimizer(space, OptimizerSettings(random_state=0))
        opt.tell(points, values, [0.0] * 11 + [var])
        opt.fit()
        assert opt.told_noise == [0.0] * 11 + [var]
        mean = opt.model.predict(at)
        posterior = Posterior(opt.model, opt.transform(points), np.asarray(values),
                              np.asarray(opt.told_noise))  # fmt: skip
        np.testing.assert_allclose(posterior.mean(at), mean, atol=1e-6)
        error[var] = abs(float(mean[0]) - np.sin(3.3))
    assert error[1.0] < 0.5 * error[0.0]
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="noise variance"):
            opt.tell([[0.3]], [0.0], [bad])


def test_a_fantasy_is_exact_gp_conditioning():
    """With a fixed output scale, conditioning on a fantasy observation by the rank-one
    update equals refitting on it."""
    from skopt.learning import GaussianProcessRegressor
    from skopt.learning.gaussian_process.kernels import Matern

    rng = np.random.RandomState(0)
    X, C = rng.uniform(size=(15, 2)), rng.uniform(size=(200, 2))
    y = np.sin(4 * X[:, 0]) + X[:, 1]
    model = GaussianProcessRegressor(Matern(0.3), alpha=1e-3, optimizer=None).fit(X, y)
    posterior = Posterior(model, X, y)
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
    assert not set(keys) & {tuple(p) for p in pending + opt.history[0]}
    # spread out, not eight copies of one optimum nudged apart
    spread = max(np.ptp([p[0] for p in batch]), np.ptp([p[1] for p in batch]))
    assert spread > 0.1


def test_believer_keeps_the_mean_at_pending_points_and_shrinks_their_uncertainty():

    space = SearchSpace({"x": Real(-2.0, 2.0)})
    opt = _fitted(space, n=6, gp_priors=False)  # unsure at 0.123, as in the test above
    told = opt.transformed_space.transform(opt._X)
    at = opt.transformed_space.transform([[0.123]])
    before = Posterior(opt.model, told, np.asarray(opt.history[1])).add_candidates(at)
    believed = before[0][0]
    after = Posterior(
        opt.model, np.vstack([told, at]), np.append(opt.history[1], believed)
    ).add_candidates(at)
    assert after[1][0] < 0.5 * before[1][0]
    assert abs(after[0][0] - believed) < 0.05 * (max(opt.history[1]) - min(opt.history[1]))


def test_candidates_are_snapped_onto_integers_and_categories():
    space = PendingAwareOptimizer(MIXED).transformed_space
    rng = np.random.RandomState(0)
    sampler = CandidateSampler(space, rng)
    raw = rng.uniform(size=(500, space.transformed_n_dims))
    expected = space.transform(space.inverse_transform(raw))
    np.testing.assert_allclose(sampler.snap(raw), expected)
    # log-uniform integers and two categories: every snapped point is a point of the space
    other = PendingAwareOptimizer(
        SearchSpace({"b": Categorical(["x", "y"]), "k": Integer(1, 1000, prior="log-uniform")})
    ).transformed_space
    snapped = CandidateSampler(other, rng).snap(rng.uniform(size=(500, other.transformed_n_dims)))
    np.testing.assert_allclose(snapped, other.transform(other.inverse_transform(snapped)))
    points = space.inverse_transform(sampler.sample(3000))
    assert {p[2] for p in points} == {"relu", "tanh", "elu"}
    assert {p[1] for p in points} == set(range(21))


def test_optimizer_settings_round_trip_through_json_and_name_unknown_options():
    settings = OptimizerSettings(acq_func="LCB", acq_func_kwargs={"kappa": 3.0}, random_state=4)
    assert OptimizerSettings.from_json(settings.to_json()) == settings
    assert OptimizerSettings.from_json(settings.to_json(), liar="cl_max").liar == "cl_max"
    with pytest.raises(TypeError, match="unknown optimizer option 'n_initial'"):
        OptimizerSettings.from_options({"n_initial": 3})
    # a regressor object cannot be stored: it must be given again
    from sklearn.ensemble import ExtraTreesRegressor

    custom = OptimizerSettings(base_estimator=ExtraTreesRegressor()).to_json()
    assert custom["base_estimator"] is None
    with pytest.raises(ValueError, match="custom base_estimator"):
        OptimizerSettings.from_json(custom)


def test_a_refit_prepared_now_runs_later_and_keeps_results_told_meanwhile():
    space = SearchSpace({"x": Real(-2.0, 2.0)})
    opt = _fitted(space, n=6)
    opt.tell([[1.5]], [0.1])
    fit = opt.prepare_fit()
    opt.tell([[1.7], [-1.1]], [0.2, 0.3])  # while the fit runs elsewhere
    opt.adopt_fit(fit())
    assert opt.n_told == 9
    assert opt.fitted_on == 7
    assert opt.model.X_train_.shape[0] == 7


def test_hyperparameter_refits_use_a_bounded_subset_of_a_long_history():
    space = SearchSpace({"x": Real(-2.0, 2.0)})
    opt = PendingAwareOptimizer(space, OptimizerSettings(n_initial_points=0, random_state=0))
    xs = np.linspace(-2, 2, FIT_MAX_POINTS + 50)
    opt.tell([[x] for x in xs], list(np.sin(3 * xs)))
    opt.fit()
    assert opt.model.X_train_.shape[0] == FIT_MAX_POINTS
    # ...while suggestions condition on every result
    point = opt.ask(pending=[])
    assert tuple(point) not in {(x,) for x in xs}


def test_past_the_cap_a_suggestion_conditions_on_the_best_results_and_a_sample(monkeypatch):
    monkeypatch.setattr(core, "CONDITION_MAX_POINTS", 40)
    space = SearchSpace({"x": Real(-2.0, 2.0)})
    opt = PendingAwareOptimizer(space, OptimizerSettings(n_initial_points=0, random_state=0))
    xs = np.random.RandomState(1).uniform(-2, 2, 100)
    values = (xs - 0.5) ** 2
    opt.tell([[x] for x in xs], list(values))
    opt.fit()
    kept = opt._conditioning()
    assert len(kept) == len(set(kept)) == 40
    assert set(np.argsort(values)[:20]) <= set(kept)
    assert len(set(opt._conditioning()) - set(kept)) > 0  # the sample is drawn anew
    (x,) = opt.ask(pending=[[0.5]])
    assert abs(x - 0.5) < 0.3  # the model still knows where the minimum is


@pytest.mark.parametrize("generator", ["lhs", "sobol", "halton", "random"])
def test_an_initial_design_over_a_mixed_space_gives_values_of_each_dimensions_type(generator):
    # skopt's Lhs returns every value of a mixed space as a string
    settings = OptimizerSettings(
        n_initial_points=6, random_state=0, initial_point_generator=generator
    )
    opt = PendingAwareOptimizer(MIXED, settings)
    opt.draw_initial_design()
    for x, n, act in opt.ask_batch([], 6):
        assert isinstance(x, numbers.Real)
        assert -2.0 <= x <= 2.0
        assert isinstance(n, numbers.Integral)
        assert 0 <= n <= 20
        assert act in ("relu", "tanh", "elu")
    # a copy rebuilt with the same settings (a sync) has the same design, drawn once
    again = PendingAwareOptimizer(MIXED, settings).ask_batch([], 6)
    assert again == PendingAwareOptimizer(MIXED, settings).ask_batch([], 6)


def test_the_priors_keep_length_scales_off_their_bounds_on_a_short_history():
    # 8 points in 6 dimensions: maximum likelihood runs length scales to the bounds
    space = SearchSpace({f"x{i}": Real(0.0, 1.0) for i in range(6)})
    X = np.random.RandomState(0).uniform(0, 1, (8, 6))
    y = list(np.sin(5 * X[:, 0]) + X[:, 1] ** 2)
    scales = {}
    for priors in (False, True):
        opt = PendingAwareOptimizer(
            space, OptimizerSettings(n_initial_points=0, random_state=0, gp_priors=priors)
        )
        opt.tell([list(x) for x in X], y)
        opt.fit()
        scales[priors] = opt.model.kernel_.k1.k2.length_scale
    at_bounds = lambda ls: int(np.sum((ls <= 0.011) | (ls >= 99)))  # noqa: E731
    assert at_bounds(scales[False]) > 0
    assert at_bounds(scales[True]) == 0
    assert np.all((scales[True] > 0.05) & (scales[True] < 20))


def test_the_priors_leave_the_amplitude_free_on_a_smooth_function():
    # Branin on 40 points: the likelihood wants a large amplitude with long length
    # scales (a nearly quadratic model); an amplitude prior of Gamma(2, 1) held it near
    # 2.3 squared, which cost Branin 3x at 8 workers (docs/PERFORMANCE.md)
    space = SearchSpace({"a": Real(0.0, 1.0), "b": Real(0.0, 1.0)})
    X = np.random.RandomState(0).uniform(0, 1, (40, 2))
    x1, x2 = 15 * X[:, 0] - 5, 15 * X[:, 1]
    y = (x2 - 5.1 / (4 * np.pi**2) * x1**2 + 5 / np.pi * x1 - 6) ** 2
    y = list(y + 10 * (1 - 1 / (8 * np.pi)) * np.cos(x1) + 10)
    amplitude = {}
    for priors in (False, True):
        opt = PendingAwareOptimizer(
            space, OptimizerSettings(n_initial_points=0, random_state=0, gp_priors=priors)
        )
        opt.tell([list(x) for x in X], y)
        opt.fit()
        amplitude[priors] = opt.model.kernel_.k1.k1.constant_value
    assert amplitude[True] > 100  # 2.3 squared is 5.3
    assert amplitude[True] > amplitude[False] / 2


def test_a_categoricals_one_hot_columns_share_one_length_scale():
    from skopt.learning.gaussian_process.kernels import Matern

    from dtune.optimizer.surrogate import CategoricalMatern

    space = SearchSpace(
        {
            "x": Real(0.0, 1.0),
            "units": Integer(1, 9),
            "activation": Categorical(["relu", "elu", "tanh", "gelu"]),
            "flag": Categorical(["on", "off"]),
        }
    )
    rng = np.random.RandomState(0)
    activations = ["relu", "elu", "tanh", "gelu"]
    points = [
        [float(rng.uniform()), int(rng.randint(1, 10)), str(rng.choice(activations)),
         str(rng.choice(["on", "off"]))]
        for _ in range(20)
    ]  # fmt: skip
    offsets = {"relu": 0.0, "elu": 0.1, "tanh": 0.3, "gelu": 0.05, "on": 0.0, "off": 0.2}
    values = [4 * (x - 0.3) ** 2 + 0.02 * (u - 5) ** 2 + offsets[a] + offsets[f]
              for x, u, a, f in points]  # fmt: skip
    kernels = {}
    for shared in (True, False):
        opt = PendingAwareOptimizer(
            space, OptimizerSettings(random_state=0, categorical_kernel=shared)
        )
        opt.tell(points, values)
        opt.fit(force=True)
        kernels[shared] = opt.model.kernel_.k1.k2
    # skopt's kernel: a length scale per column (x, units, 4 one-hot columns, flag)
    assert type(kernels[False]) is Matern
    assert len(kernels[False].length_scale) == 7
    kernel = kernels[True]
    assert isinstance(kernel, CategoricalMatern)
    assert len(kernel.length_scale) == 4
    X = opt.transform(points[:6])
    # two categories are at distance 1 in units of the categorical's length scale
    a, b = X[0].copy(), X[0].copy()
    b[2:6] = np.roll(a[2:6], 1)
    scale = kernel.length_scale[2]
    r = np.sqrt(5) / scale
    assert kernel(a[None], b[None])[0, 0] == pytest.approx((1 + r + r * r / 3) * np.exp(-r))
    # the gradient by the shared log length scales, against finite differences
    _, gradient = kernel(X, eval_gradient=True)
    h = 1e-6
    for i in range(len(kernel.theta)):
        step = h * np.eye(len(kernel.theta))[i]
        plus, minus = (
            kernel.clone_with_theta(kernel.theta + step),
            kernel.clone_with_theta(kernel.theta - step),
        )
        assert np.allclose(gradient[..., i], (plus(X) - minus(X)) / (2 * h), atol=1e-6)


@pytest.mark.parametrize(
    "space",
    [
        SearchSpace({f"x{i}": Real(0.0, 1.0) for i in range(6)}),
        MIXED,  # a CategoricalMatern
        SearchSpace({"x": Real(-2.0, 2.0)}),
        SearchSpace({"a": Categorical(["p", "q", "r"]), "b": Categorical(["u", "v"])}),
    ],
    ids=["six-reals", "mixed", "one-real", "all-categorical"],
)
def test_the_log_marginal_likelihood_and_its_gradient_are_scikit_learns(space):
    """The fitted GP's objective, computed without scikit-learn's gradient tensors,
    agrees with scikit-learn's own at hyperparameters away from the optimum."""
    from sklearn.gaussian_process import GaussianProcessRegressor

    from dtune.optimizer.surrogate import _matern_parts

    opt = PendingAwareOptimizer(space, OptimizerSettings(n_initial_points=5, random_state=0))
    points = opt.ask_batch([], 60)
    numbers_of = [[v if isinstance(v, numbers.Number) else len(v) for v in p] for p in points]
    opt.tell(points, [float(np.sin(3 * sum(p)) + 0.1 * p[0]) for p in numbers_of])
    opt.fit(force=True)
    gp = opt.model
    # skopt's all-categorical kernel (Hamming) is left to scikit-learn
    assert (_matern_parts(gp.kernel_) is None) == (space.names == ("a", "b"))
    rng = np.random.RandomState(1)
    for _ in range(5):
        theta = gp.kernel_.theta + rng.normal(0.0, 0.5, len(gp.kernel_.theta))
        theta[-1] = np.log(rng.uniform(1e-4, 0.5))  # the fitted kernel's noise is zeroed
        value, gradient = gp.log_marginal_likelihood(theta, eval_gradient=True)
        sk_value, sk_gradient = GaussianProcessRegressor.log_marginal_likelihood(
            gp, theta, eval_gradient=True
        )
        assert value == pytest.approx(sk_value, rel=1e-9)
        np.testing.assert_allclose(gradient, sk_gradient, rtol=1e-7, atol=1e-9)
        assert gp.log_marginal_likelihood(theta) == pytest.approx(sk_value, rel=1e-9)


@pytest.mark.parametrize("func", ["EI", "PI", "LCB"])
def test_the_acquisitions_gradient_matches_finite_differences(func):
    from dtune.optimizer.posterior import acquisition, acquisition_slopes

    rng = np.random.RandomState(0)
    X = rng.uniform(size=(12, 3))
    y = np.sin(4 * X).sum(axis=1)
    opt = PendingAwareOptimizer(
        SearchSpace({f"x{i}": Real(0.0, 1.0) for i in range(3)}), OptimizerSettings(random_state=0)
    )
    opt.tell([list(x) for x in X], list(y))
    opt.fit(force=True)
    posterior = Posterior(opt.model, X, y)
    for x in rng.uniform(size=(4, 3)):
        mu, std, d_mu, d_std = posterior.predict_gradient(x)
        _, by_mu, by_std = acquisition_slopes(func, np.array([mu]), np.array([std]), y.min(), {})
        gradient = by_mu[0] * d_mu + by_std[0] * d_std
        h = 1e-6
        numeric = [
            (
                acquisition(func, *posterior.predict((x + h * e)[None]), y.min(), {})[0]
                - acquisition(func, *posterior.predict((x - h * e)[None]), y.min(), {})[0]
            )
            / (2 * h)
            for e in np.eye(3)
        ]
        np.testing.assert_allclose(gradient, numeric, rtol=1e-4, atol=1e-7)


def test_polishing_finds_the_best_category_and_integer_and_refines_the_reals():
    from dtune.optimizer.polish import Polisher

    space = SearchSpace(
        {
            "x": Real(0.0, 1.0),
            "n": Integer(1, 200, prior="log-uniform"),
            "act": Categorical(["relu", "tanh", "elu"]),
            "pool": Categorical(["max", "avg"]),
        }
    )
    opt = PendingAwareOptimizer(space, OptimizerSettings(random_state=0))
    skspace = opt.transformed_space
    target = skspace.transform([[0.42, 50, "elu", "avg"]])[0]

    def values(C):
        return ((C - target) ** 2).sum(axis=1)

    def value_gradient(x):
        return float(values(x[None])[0]), 2 * (x - target)

    start = skspace.transform([[0.3, 3, "relu", "max"]])
    polisher = Polisher(skspace, CandidateSampler(skspace, np.random.RandomState(0)))
    polished = polisher.polish(start, values, value_gradient)
    x, n, act, pool = skspace.inverse_transform(polished)[0]
    assert (n, act, pool) == (50, "elu", "avg")
    assert abs(x - 0.42) < 1e-6
    assert values(polished)[0] < values(start)[0]


def test_an_lbfgs_search_of_a_mixed_space_suggests_points_of_the_space():
    opt = PendingAwareOptimizer(
        MIXED, OptimizerSettings(acq_optimizer="lbfgs", n_initial_points=5, random_state=1)
    )
    for _ in range(10):
        batch = opt.ask_batch([], 2)
        opt.tell(batch, [_objective(p) for p in batch])
    for x, n, act in opt.history[0]:
        assert -2.0 <= x <= 2.0
        assert 0 <= n <= 20
        assert isinstance(n, numbers.Integral)
        assert act in ("relu", "tanh", "elu")
    assert min(opt.history[1]) < 0.05  # the right category (0.3 for the others)


@pytest.mark.parametrize(
    ("acq_optimizer", "polished_from"), [("auto", 12), ("lbfgs", 0), ("local", None)]
)
def test_the_best_candidates_are_polished_once_enough_results_are_told(
    monkeypatch, acq_optimizer, polished_from
):
    from dtune.optimizer.polish import Polisher

    monkeypatch.setattr(core, "POLISH_AFTER", 12)
    polished_at: list[int] = []
    polish = Polisher.polish

    def counting(self, starts, values, value_gradient):
        polished_at.append(opt.n_told)
        return polish(self, starts, values, value_gradient)

    monkeypatch.setattr(Polisher, "polish", counting)
    opt = PendingAwareOptimizer(
        MIXED, OptimizerSettings(acq_optimizer=acq_optimizer, n_initial_points=4, random_state=0)
    )
    for _ in range(16):
        point = opt.ask([])
        opt.tell([point], [_objective(point)])
    if polished_from is None:
        assert polished_at == []
    else:
        assert polished_at == list(range(max(4, polished_from), 16))
    assert len(opt.ask_batch([], 3)) == 3  # polished or not, the batch asked for


@pytest.mark.parametrize("stalled", [True, False])
def test_a_stalled_search_gives_a_third_of_its_points_to_a_trust_region_and_a_third_to_a_restart(
    monkeypatch, stalled
):
    monkeypatch.setattr(core, "POLISH_AFTER", 12)
    opt = PendingAwareOptimizer(
        SearchSpace({"x": Real(0.0, 1.0), "y": Real(0.0, 1.0)}),
        OptimizerSettings(n_initial_points=4, random_state=0),
    )
    rng = np.random.RandomState(0)
    X = rng.uniform(0.0, 0.3, (70, 2)).tolist()  # every result in one corner
    if stalled:  # the best at the 10th result, none of the 60 since comes near it
        y = [1.0 - 0.01 * i for i in range(10)] + list(0.95 + 0.05 * rng.rand(60))
    else:  # still improving
        y = [1.0 - 0.01 * i for i in range(70)]
    opt.tell(X, y)
    opt.skip_initial(70)
    batch = opt.ask_batch([], 6)
    assert len({tuple(p) for p in batch}) == 6
    if not stalled:
        assert opt._restarts is None
        return
    restarts, region = opt._restarts, opt._trust_region
    assert restarts.started == 1
    assert [region.proposed(p) for p in batch] == [True, True, False, False, False, False]
    assert [restarts.proposed(p) for p in batch] == [False, False, True, True, False, False]
    opt.tell(batch, [0.5] * 6)
    search = restarts._search
    assert search.n_told == 2  # only its own results, none of the 70 before
    assert opt.n_told == 76
    # The region's search was told the results in its box (side 0.8 around the best,
    # which holds the whole corner), and then every later one in it, not only its own.
    in_box = int(region._inside(opt.transform(batch)).sum())
    assert in_box >= 2
    assert region._search.n_told == 70 + in_box


def test_a_value_retold_in_place_is_what_a_search_told_it_first_would_suggest_from():
    """A promoted trial's estimate gives way to its result in place (``retell``): the
    same suggestions as an optimizer told that result in the first place, with the same
    kernel, and a refit due (unless told none is)."""
    space = SearchSpace({"x": Real(0.0, 1.0), "y": Real(0.0, 1.0)})
    rng = np.random.RandomState(0)
    X = rng.uniform(0.0, 1.0, (12, 2)).tolist()
    y = [(a - 0.3) ** 2 + (b - 0.6) ** 2 for a, b in X]
    estimated = [*y[:-1], 2.0]  # the last one told as an estimate first
    settings = OptimizerSettings(n_initial_points=0, random_state=1)
    retold, first = PendingAwareOptimizer(space, settings), PendingAwareOptimizer(space, settings)
    retold.tell(X, estimated, [0.0] * 11 + [0.3])
    retold.fit()
    assert not retold.needs_fit
    assert retold.retell(X[-1], y[-1])
    assert not retold.retell([0.5, 0.5], 1.0)  # never told: nothing replaced
    assert retold.history == (X, y)
    assert retold.told_noise == [0.0] * 12
    assert retold.needs_fit  # the kernel was fitted on the estimate
    first.tell(X, y)
    # A running trial's estimate replaced by the next: no refit due for it.
    again = PendingAwareOptimizer(space, settings)
    again.tell(X, estimated, [0.0] * 11 + [0.3])
    again.fit()
    assert again.retell(X[-1], 1.5, 0.2, refit=False)
    assert not again.needs_fit
    assert again.history[1][-1] == 1.5
    first.adopt_fit((retold.model, retold.fitted_on))
    assert retold.ask_batch([X[0]], 3) == first.ask_batch([X[0]], 3)
    with pytest.raises(ValueError, match="non-finite"):
        retold.retell(X[0], float("nan"))


def _stalled_search(monkeypatch, *, defer_search_fits=False):
    """An optimizer told 70 results in one corner, the best at the 10th: stalled."""
    monkeypatch.setattr(core, "POLISH_AFTER", 12)
    opt = PendingAwareOptimizer(
        SearchSpace({"x": Real(0.0, 1.0), "y": Real(0.0, 1.0)}),
        OptimizerSettings(n_initial_points=4, random_state=0),
    )
    if defer_search_fits:
        opt.defer_search_fits()
    rng = np.random.RandomState(0)
    X = rng.uniform(0.0, 0.3, (70, 2)).tolist()
    opt.tell(X, [1.0 - 0.01 * i for i in range(10)] + list(0.95 + 0.05 * rng.rand(60)))
    opt.skip_initial(70)
    return opt


def test_a_retold_value_reaches_the_trust_region_and_the_restart_search_that_were_told_it(
    monkeypatch,
):
    opt = _stalled_search(monkeypatch)
    batch = opt.ask_batch([], 6)  # stalled: two for the region, two for a restart search
    region, restarts = opt._trust_region, opt._restarts
    opt.tell(batch, [0.95] * 6, [0.2] * 6)  # estimates
    by_region, by_restart = batch[0], batch[2]
    assert region.proposed(by_region) is False
    assert restarts.search.has_told(point_key(by_restart))
    opt.retell(by_region, 0.1)  # measured, and the best now
    opt.retell(by_restart, 0.97, 0.1)  # estimated again, higher
    points, values = opt.history
    assert values[points.index(by_region)] == 0.1
    assert values[points.index(by_restart)] == 0.97
    assert region._best == 0.1
    assert region.search.history[1][region.search.history[0].index(by_region)] == 0.1
    restart_points, restart_values = restarts.search.history
    assert restart_values[restart_points.index(by_restart)] == 0.97
    assert restarts.search.told_noise[restart_points.index(by_restart)] == 0.1
    assert opt.n_told == 76
    assert restarts.search.n_told == 2


def test_with_search_fits_deferred_a_batch_never_fits_and_the_caller_runs_the_refits(
    monkeypatch,
):
    opt = _stalled_search(monkeypatch, defer_search_fits=True)
    opt.fit()
    # The new box's search has 70 results and no model: it proposes nothing, and the
    # global model takes its share of the batch; the restart search draws its design.
    batch = opt.ask_batch([], 6)
    region, restarts = opt._trust_region, opt._restarts
    assert len({tuple(p) for p in batch}) == 6
    assert not any(region.proposed(p) for p in batch)
    assert sum(restarts.proposed(p) for p in batch) == 2
    assert not region.search.has_model
    search, fit = opt.search_fit()
    assert search is region.search
    search.adopt_fit(fit())
    assert search.fitted_on == 70
    batch = opt.ask_batch([], 6)
    assert sum(region.proposed(p) for p in batch) == 2
    # The restart search, told two results, is refitted by the caller too.
    opt.tell(batch, [0.5] * 6)
    search, fit = opt.search_fit()
    assert search is restarts.search
    search.adopt_fit(fit())
    assert opt.search_fit() is None


def _region_and_30_results() -> tuple[PendingAwareOptimizer, TrustRegion, list, list]:
    """An optimizer of a 2-d space, a trust region over it, and 30 random results of a
    bowl whose minimum is at (0.3, 0.6)."""
    space = SearchSpace({"x": Real(0.0, 1.0), "y": Real(0.0, 1.0)})
    opt = PendingAwareOptimizer(space, OptimizerSettings(random_state=0))

    def new_search(seed: int) -> PendingAwareOptimizer:
        return PendingAwareOptimizer(space, OptimizerSettings(random_state=seed))

    region = TrustRegion(new_search, opt.transform, 2, seed=0)
    rng = np.random.RandomState(0)
    X = rng.rand(30, 2).tolist()
    y = [(a - 0.3) ** 2 + (b - 0.6) ** 2 for a, b in X]
    return opt, region, X, y


def test_a_trust_region_shrinks_on_failures_grows_on_successes_and_follows_the_best():
    opt, region, X, y = _region_and_30_results()

    def ask(n: int) -> list[list[float]]:
        return region.ask(X, opt.transform(X), np.asarray(y), [], n, set())

    def within(points: list[list[float]], centre: list[float], half: float) -> bool:
        return all(abs(p[i] - centre[i]) <= half + 1e-9 for p in points for i in range(2))

    best = X[int(np.argmin(y))]
    points = ask(4)
    assert len(points) == 4
    assert within(points, best, 0.4)
    for point in points:  # max(4, 2 dimensions) failures in a row halve the box
        region.tell(point, 10.0)
        X.append(point), y.append(10.0)
    assert region.length == 0.4
    points = ask(3)
    assert within(points, best, 0.2)  # built again around the same best
    for k, point in enumerate(points):  # three improvements in a row double it
        region.tell(point, -1.0 - k)
        X.append(point), y.append(-1.0 - k)
    assert region.length == 0.8
    points = ask(2)  # around the new best
    assert within(points, X[int(np.argmin(y))], 0.4)
    for _ in range(7):  # halved below 1/128 of the cube: back to the initial side
        for point in ask(4):
            region.tell(point, 10.0)
            X.append(point), y.append(10.0)
    assert region.collapsed == 1
    assert region.length == 0.8


def test_a_box_search_is_told_the_result_of_a_point_it_proposes_that_has_one():
    # An integer rounded from the box's edge lands outside the box, where no result is
    # told to the box's search: proposing that point again and again, the region gave
    # the batch nothing (seen on the mixed space: the same point 144 times in a row).
    space = SearchSpace({"n": Integer(0, 4)})
    opt = PendingAwareOptimizer(space, OptimizerSettings(random_state=4))

    def new_search(seed: int) -> PendingAwareOptimizer:
        return PendingAwareOptimizer(space, OptimizerSettings(random_state=seed))

    region = TrustRegion(new_search, opt.transform, 1, seed=4)
    X, y = [[0], [1], [2], [3]], np.array([0.2, 0.5, 0.0, 1.0])
    # The box: 0.8 wide around n = 2, so 0.1-0.9 of the unit interval, holding 1, 2, 3;
    # its edge at 0.1 (n = 0.4) rounds to 0, which the search has a result for.
    points = region.ask(X, opt.transform(X), y, [], 1, {point_key(x) for x in X})
    assert region.search.has_told(point_key([0]))
    assert points == [[4]]


def test_an_estimate_is_no_best_for_the_trust_region_or_the_acquisition():
    """A pruned trial's imputed value, told with its noise, is lower than every measured
    one: the box still centres on the best measured result, the acquisition improves on
    that, and an estimate at a point the region proposed counts as its failure."""
    opt, region, X, y = _region_and_30_results()
    noise = [0.0] * len(X)
    X.append([0.95, 0.05]), y.append(-1.0), noise.append(0.04)  # far from the best
    best = X[int(np.argmin(y[:-1]))]
    points = region.ask(X, opt.transform(X), np.asarray(y), [], 4, set(), np.asarray(noise))
    assert all(abs(p[i] - best[i]) <= 0.4 + 1e-9 for p in points for i in range(2))
    for point in points[:3]:  # estimates below the best: no success
        region.tell(point, -2.0, 0.04)
    assert region.length == 0.8  # three successes would have doubled it
    region.tell(points[3], -2.0, 0.04)
    assert region.length == 0.4  # the fourth failure in a row halves it

    opt.tell(X, y, noise)
    assert opt._y_opt() == min(y[:-1])
    opt.tell([[0.31, 0.6]], [-0.5])
    assert opt._y_opt() == -0.5


# -- a joint model over configuration and resource ----------------------------------------------


def _joint(**options):
    settings = OptimizerSettings(resource_model="joint", random_state=0, **options)
    return PendingAwareOptimizer(SearchSpace({"x": Real(0.0, 1.0)}), settings)


def test_with_noisy_results_the_acquisition_improves_on_the_models_lowest_mean():
    """With noisy results (the last epoch's leftover, a validation split), the lowest
    value told is partly luck, a bar no mean of the model reaches: expected improvement
    over it, with skopt's margin of 0.01 on top, paid only where the model knew least,
    and searches of the mixed space explored far from its optimum to their end
    (docs/PERFORMANCE.md, "Run 20"). A GP's EI and PI improve on its lowest mean at a
    measured result instead, with no margin unless one is given."""
    rng = np.random.default_rng(0)
    space = SearchSpace({"x": Real(0.0, 1.0), "z": Real(0.0, 1.0)})
    opt = PendingAwareOptimizer(space, OptimizerSettings(random_state=0))
    X = rng.uniform(0.0, 1.0, (60, 2))
    y = (X[:, 0] - 0.3) ** 2 + (X[:, 1] - 0.6) ** 2 + rng.normal(0.0, 0.01, 60)
    opt.skip_initial(60)
    opt.tell(X.tolist(), y.tolist())
    opt.fit(force=True)
    Xt = opt.transform(X.tolist())
    posterior = Posterior(opt._model, Xt, y, np.zeros(60))
    incumbent = opt._incumbent(posterior, np.arange(60))
    assert incumbent == pytest.approx(posterior.mean(Xt).min())
    assert incumbent > y.min()  # the lucky draw is no bar
    assert opt._y_opt() == y.min()  # without a posterior (RF, ET): the lowest value
    level = np.array([incumbent])
    assert acquisition("EI", level, np.array([0.001]), incumbent, {})[0] < -1e-4
    assert acquisition("EI", level, np.array([0.001]), incumbent, {"xi": 0.01})[0] > -1e-20


def test_a_joint_model_suggests_at_the_full_resource_where_cheap_results_point():
    """Many results at the lowest resource (the minimum at 0.7, shifted up by 1) and
    three far from it at the full one: the next point is near 0.7, a point of the space
    (no resource), and a point told at any resource is not suggested again."""
    opt = _joint(n_initial_points=0)
    cheap = np.linspace(0.0, 1.0, 21)
    opt.tell([[x, 0.0] for x in cheap], [(x - 0.7) ** 2 + 1.0 for x in cheap])
    opt.tell([[0.1], [0.4], [0.95]], [(x - 0.7) ** 2 for x in (0.1, 0.4, 0.95)])
    assert opt.history[0][-1] == [0.95, 1.0]  # told at the full resource by default
    (x,) = opt.ask([])
    assert abs(x - 0.7) < 0.1
    assert all(not np.isclose(x, c) for c in cheap)
    # The model learned the shift: its mean at the full resource is near the curve's.
    mean = opt.model.predict(opt.transform([[0.7]]))[0]
    assert abs(mean - 0.0) < 0.2
    batch = opt.ask_batch([[x]], 4)
    assert all(len(p) == 1 and 0.0 <= p[0] <= 1.0 for p in batch)
    assert len({p[0] for p in batch} | {x}) == 5


def test_a_joint_models_trust_region_and_restarts_see_full_resource_results_only(monkeypatch):
    monkeypatch.setattr(core, "POLISH_AFTER", 12)
    opt = _joint(n_initial_points=4)
    rng = np.random.RandomState(0)
    X = rng.uniform(0.0, 0.3, 70)
    y = [1.0 - 0.01 * i for i in range(10)] + list(0.95 + 0.05 * rng.rand(60))
    opt.tell([[x] for x in X], y)  # stalled at the full resource
    # cheap results, still improving: they do not end the stall
    opt.tell([[x, 0.0] for x in X], [2.0 - 0.01 * i for i in range(70)])
    opt.skip_initial(140)
    batch = opt.ask_batch([], 6)
    assert len({tuple(p) for p in batch}) == 6
    assert all(len(p) == 1 for p in batch)
    region, restarts = opt._trust_region, opt._restarts
    assert region is not None
    assert restarts is not None
    # Its searches work on the configuration alone, told the 70 full-resource results
    # in the box (the whole corner), none of the cheap ones.
    assert region._search.n_told == 70
    assert sorted(p for (p,) in region._search.history[0]) == sorted(X)
    opt.tell([[p[0], 0.0] for p in batch], [0.1] * 6)  # a cheap result is not theirs
    assert region._search.n_told == 70
    assert restarts._search.n_told == 0
    opt.tell(batch, [0.5] * 6)
    assert restarts._search.n_told == sum(restarts._search.has_told((p[0],)) for p in batch)
