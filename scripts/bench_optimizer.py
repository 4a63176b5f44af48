"""Search quality of dtune's optimizer options, on simulated asynchronous workers.

The workers are simulated (:class:`dtune.sim.SimulatedCluster`): each trial "takes" 1-3 s
of simulated time (varying across the space, as in scripts/bench.py), and the search is
``Study.optimize``'s own loop, ledger and suggester, with no Dask and no waiting. So the
figures measure the optimizer's choices through the code that ships, deterministically
per seed, and fast. It compares the ways of
counting running points (``liar``), the acquisition functions, and the refit schedule
(``refit_growth``), on the problems of scripts/bench.py, with scikit-optimize's own
sequential ``ask``/``tell`` (one worker) as the reference.

    python scripts/bench_optimizer.py                       # liars and acq_func, 5 seeds
    python scripts/bench_optimizer.py --grid refit          # refit_growth
    python scripts/bench_optimizer.py --grid candidates --no-reference   # n_points, local search
    python scripts/bench_optimizer.py --problems branin --seeds 2 --trials 20   # quick
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).parent))

from bench import MINIMUM, PROBLEMS, evaluate, space_of

from dtune import Study
from dtune.sim import SimulatedCluster

GRIDS: dict[str, list[dict[str, Any]]] = {
    "liar": [
        {"liar": "believer", "acq_func": "EI"},
        {"liar": "believer", "acq_func": "gp_hedge"},
        {"liar": "cl_min", "acq_func": "EI"},
        {"liar": "cl_min", "acq_func": "gp_hedge"},
        {"liar": "cl_max", "acq_func": "EI"},
    ],
    "refit": [{"refit_growth": 0.0}, {"refit_growth": 0.1}, {"refit_growth": 0.25}],
    "candidates": [
        {"acq_optimizer_kwargs": {"n_points": 2000}},
        {"acq_optimizer_kwargs": {"n_points": 10000}},
        {"acq_optimizer": "sampling", "acq_optimizer_kwargs": {"n_points": 10000}},
    ],
}


def simulate(problem: str, seed: int, workers: int, n: int, options: dict) -> dict[str, float]:
    """One asynchronous search through Study.optimize on simulated workers: its final
    regret and the CPU seconds the search took (all of it the optimizer's)."""
    rng = np.random.RandomState(seed)

    def duration(params: dict[str, Any]) -> float:
        return 1 + 2 * evaluate(problem, params)[1] + 0.1 * rng.rand()

    study = Study(space_of(problem), random_state=seed, **options)
    started = time.process_time()
    study.optimize(
        functools.partial(objective, problem),
        n,
        client=SimulatedCluster(workers, duration),
        progress=False,
    )
    return {"regret": study.best_value - MINIMUM[problem], "cpu_s": time.process_time() - started}


def objective(problem: str, **params: Any) -> float:
    return evaluate(problem, params)[0]


def sequential_skopt(problem: str, seed: int, n: int) -> dict[str, float]:
    from skopt import Optimizer

    names = list(space_of(problem))
    opt = Optimizer(list(space_of(problem).values()), random_state=seed)
    best = math.inf
    for _ in range(n):
        point = opt.ask()
        value, _ = evaluate(problem, dict(zip(names, point, strict=True)))
        opt.tell(point, value)
        best = min(best, value)
    return {"regret": best - MINIMUM[problem]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", choices=sorted(GRIDS), default="liar")
    parser.add_argument("--problems", default=",".join(PROBLEMS))
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--trials", type=int, default=48)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--no-reference", action="store_true", help="skip skopt's sequential reference"
    )
    args = parser.parse_args()
    print(
        f"{args.workers} simulated workers, {args.trials} trials, medians of {args.seeds} seeds "
        "(regret: best value found - minimum)\n"
    )
    print("| problem | options | regret median | regret max | CPU s |")
    print("|---|---|---|---|---|")
    with threadpool_limits(limits=1):
        for problem in args.problems.split(","):
            for options in GRIDS[args.grid]:
                runs = [
                    simulate(problem, seed, args.workers, args.trials, options)
                    for seed in range(args.seeds)
                ]
                regrets = [r["regret"] for r in runs]
                label = ", ".join(f"{k}={v!r}" for k, v in options.items())
                print(
                    f"| {problem} | {label} | {statistics.median(regrets):.4f} | "
                    f"{max(regrets):.4f} | {statistics.median(r['cpu_s'] for r in runs):.1f} |",
                    flush=True,
                )
            if args.no_reference:
                continue
            reference = [sequential_skopt(problem, s, args.trials) for s in range(args.seeds)]
            regrets = [r["regret"] for r in reference]
            print(
                f"| {problem} | skopt sequential (1 worker) | {statistics.median(regrets):.4f} | "
                f"{max(regrets):.4f} | |",
                flush=True,
            )


if __name__ == "__main__":
    main()
