"""Search quality of dtune's optimizer options, on simulated asynchronous workers.

The workers are simulated: each trial "takes" 1-3 s of simulated time (varying with the
first parameter, as in scripts/bench.py), a free worker asks at once with every running
point pending, and each result is told as it comes. So the figures measure the
optimizer's choices alone, deterministically per seed, and fast. It compares the ways of
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

from dtune.optimizer import PendingAwareOptimizer
from dtune.space import SearchSpace

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
    """One asynchronous search; final regret and the optimizer's own seconds."""
    space = SearchSpace(space_of(problem))
    opt = PendingAwareOptimizer(space, random_state=seed, **options)
    rng = np.random.RandomState(seed)
    running: list[tuple[float, list[Any], float]] = []  # (finish time, point, value)
    now, best, asked, ask_s, fit_s, fits = 0.0, math.inf, 0, 0.0, 0.0, 0
    while asked < n or running:
        while len(running) < workers and asked < n:
            started = time.perf_counter()
            point = opt.ask(pending=[p for _, p, _ in running])
            ask_s += time.perf_counter() - started
            value, fraction = evaluate(problem, space.to_params(point))
            running.append((now + 1 + 2 * fraction + 0.1 * rng.rand(), point, value))
            asked += 1
        running.sort(key=lambda r: r[0])
        now, point, value = running.pop(0)
        best = min(best, value)
        opt.tell([point], [value])
        if opt.needs_fit:
            started = time.perf_counter()
            opt.fit()
            fit_s += time.perf_counter() - started
            fits += 1
    return {"regret": best - MINIMUM[problem], "ask_s": ask_s, "fit_s": fit_s, "fits": fits}


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
    print("| problem | options | regret median | regret max | ask s | fit s | fits |")
    print("|---|---|---|---|---|---|---|")
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
                    f"{max(regrets):.4f} | {statistics.median(r['ask_s'] for r in runs):.1f} | "
                    f"{statistics.median(r['fit_s'] for r in runs):.1f} | "
                    f"{statistics.median(r['fits'] for r in runs):.0f} |",
                    flush=True,
                )
            if args.no_reference:
                continue
            reference = [sequential_skopt(problem, s, args.trials) for s in range(args.seeds)]
            regrets = [r["regret"] for r in reference]
            print(
                f"| {problem} | skopt sequential (1 worker) | {statistics.median(regrets):.4f} | "
                f"{max(regrets):.4f} | | | |",
                flush=True,
            )


if __name__ == "__main__":
    main()
