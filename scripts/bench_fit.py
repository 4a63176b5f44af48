"""The GP's hyperparameter fit: dtune's log marginal likelihood against scikit-learn's.

Fits the same points with the same seed twice, once with
``PriorGaussianProcess.log_marginal_likelihood`` (no (n, n, d) gradient arrays) and
once with scikit-learn's own, on one BLAS thread, and prints the times, the speed-up
and whether both reached the same optimum; then times one evaluation of each at a few
history sizes. Figures in docs/PERFORMANCE.md ("Faster fits, and the objective pickled
once")::

    python scripts/bench_fit.py
    python scripts/bench_fit.py --sizes 50,200 --problems hartmann6
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.gaussian_process import GaussianProcessRegressor
from threadpoolctl import threadpool_limits

from dtune import Categorical, Integer, Real, SearchSpace
from dtune.optimizer import OptimizerSettings, PendingAwareOptimizer, surrogate

SPACES = {
    "branin": SearchSpace({"x1": Real(-5.0, 10.0), "x2": Real(0.0, 15.0)}),
    "hartmann6": SearchSpace({f"x{i}": Real(0.0, 1.0) for i in range(6)}),
    "ackley10": SearchSpace({f"x{i}": Real(-5.0, 10.0) for i in range(10)}),
    "mixed": SearchSpace(
        {
            "x": Real(-2.0, 2.0),
            "n": Integer(0, 20),
            "act": Categorical(["relu", "tanh", "elu"]),
            "lr": Real(1e-4, 1e-1, prior="log-uniform"),
        }
    ),
}
FAST = surrogate.PriorGaussianProcess.log_marginal_likelihood


def _told(problem: str, n: int) -> PendingAwareOptimizer:
    """An optimizer told ``n`` initial-design points of a wavy function."""
    opt = PendingAwareOptimizer(SPACES[problem], OptimizerSettings(random_state=0))
    points = opt.ask_batch([], n)
    as_numbers = [[v if not isinstance(v, str) else len(v) for v in p] for p in points]
    opt.tell(points, [float(np.sin(3 * sum(p))) for p in as_numbers])
    return opt


def _fit(problem: str, n: int, likelihood: Callable[..., Any]) -> tuple[float, Any]:
    surrogate.PriorGaussianProcess.log_marginal_likelihood = likelihood  # type: ignore[method-assign]
    try:
        opt = _told(problem, n)
        started = time.perf_counter()
        opt.fit(force=True)
        return time.perf_counter() - started, opt.model
    finally:
        surrogate.PriorGaussianProcess.log_marginal_likelihood = FAST  # type: ignore[method-assign]


def _per_evaluation(problem: str, n: int, repeats: int) -> tuple[float, float]:
    opt = _told(problem, n)
    opt.fit(force=True)
    gp = opt.model
    theta = gp.kernel_.theta.copy()
    theta[-1] = np.log(0.01)  # the fitted kernel's noise is zeroed

    def ours(t: np.ndarray) -> Any:
        return gp.log_marginal_likelihood(t, eval_gradient=True)

    def theirs(t: np.ndarray) -> Any:
        return GaussianProcessRegressor.log_marginal_likelihood(gp, t, eval_gradient=True)

    seconds = []
    for call in (ours, theirs):
        call(theta)
        started = time.perf_counter()
        for _ in range(repeats):
            call(theta)
        seconds.append((time.perf_counter() - started) / repeats)
    return seconds[0], seconds[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", default="hartmann6,ackley10,mixed")
    parser.add_argument("--sizes", default="50,200,400", help="results per fit")
    parser.add_argument("--evaluations", default="16,48,100", help="results per timed evaluation")
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    with threadpool_limits(limits=1):
        print("| problem | results | scikit-learn's | dtune's | speed-up | same optimum |")
        print("|---|---|---|---|---|---|")
        for problem in args.problems.split(","):
            for n in map(int, args.sizes.split(",")):
                fast, fast_model = _fit(problem, n, FAST)
                slow, slow_model = _fit(
                    problem, n, GaussianProcessRegressor.log_marginal_likelihood
                )
                same = np.allclose(fast_model.kernel_.theta, slow_model.kernel_.theta, atol=1e-6)
                lml = np.isclose(
                    fast_model.log_marginal_likelihood_value_,
                    slow_model.log_marginal_likelihood_value_,
                    rtol=1e-6,
                )
                verdict = "yes" if same else "same likelihood" if lml else "no"
                cells = [problem, n, f"{slow:.3f} s", f"{fast:.3f} s", f"{slow / fast:.1f}x"]
                print("| " + " | ".join(map(str, [*cells, verdict])) + " |")
        print("\n| problem | results | dtune's evaluation | scikit-learn's |")
        print("|---|---|---|---|")
        for problem in args.problems.split(","):
            for n in map(int, args.evaluations.split(",")):
                fast, slow = _per_evaluation(problem, n, args.repeats)
                print(f"| {problem} | {n} | {1e3 * fast:.3f} ms | {1e3 * slow:.3f} ms |")


if __name__ == "__main__":
    main()
