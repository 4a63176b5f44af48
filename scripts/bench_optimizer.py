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
    python scripts/bench_optimizer.py --grid trust-region --problems hartmann6,ackley10 \
        --trials 1000 --workers 32 --seeds 4 --no-reference   # long searches

``--peers`` compares dtune instead with the other optimizers on the same simulated
workers (same durations), medians of 10 seeds in issue 13's figures: scikit-optimize's
sequential ask/tell and its synchronous batch loop (``ask(n_points=workers)``), and
Optuna's GPSampler and TPE (``constant_liar``) asked the moment a worker frees, with the
running trials known to the study. GPSampler needs torch (``pip install torch``; a CPU
build is enough). Problems include the harder ``ackley10`` and ``hartmann6-noisy``.

    python scripts/bench_optimizer.py --peers --seeds 10 \
        --problems branin,hartmann6,mixed,ackley10,hartmann6-noisy
"""

from __future__ import annotations

import argparse
import functools
import heapq
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).parent))

from bench import HARDER, MINIMUM, PROBLEMS, evaluate, space_of, true_value

from dtune import Study
from dtune.sim import SimulatedCluster

GRIDS: dict[str, list[dict[str, Any]]] = {
    "defaults": [{}],
    "liar": [
        {"liar": "believer", "acq_func": "EI"},
        {"liar": "believer", "acq_func": "gp_hedge"},
        {"liar": "cl_min", "acq_func": "EI"},
        {"liar": "cl_min", "acq_func": "gp_hedge"},
        {"liar": "cl_max", "acq_func": "EI"},
    ],
    "refit": [{"refit_growth": 0.0}, {"refit_growth": 0.1}, {"refit_growth": 0.25}],
    # issue 13: candidates for better suggestions per trial
    "design": [{}, {"initial_point_generator": "random"}],
    "priors": [{"gp_priors": False}, {}],
    # a length scale per category column (skopt's kernel) or per categorical
    "kernel": [{"categorical_kernel": False}, {}],
    # long histories: does more exploration get out of a local basin?
    "acq": [{}, {"acq_func": "gp_hedge"}, {"acq_func": "LCB"}],
    "explore": [{}, {"acq_func": "gp_hedge"}, {"acq_func": "LCB"}, {"liar": "cl_min"}],
    "polish": [{"acq_optimizer": "local"}, {}, {"acq_optimizer": "lbfgs"}],
    # long searches: a trust region around the best from the first stall on
    "trust-region": [{"trust_region": False}, {}],
    "acq-search": [
        {},
        {"acq_optimizer_kwargs": {"n_points": 10000}},
        {"acq_optimizer_kwargs": {"n_restarts_optimizer": 20}},
    ],
    "quality": [
        {},
        {"initial_point_generator": "lhs"},
        {"initial_point_generator": "sobol"},
        {"n_initial_points": 6},
        {"acq_func": "gp_hedge"},
    ],
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
    cpu_s = time.process_time() - started
    trials = sorted(study.trials, key=lambda t: t.number)
    values = [true_value(problem, t.params) for t in trials if t.value is not None]
    found = int(np.argmin(values)) + 1  # the trial (in the order started) that found it
    return {"regret": min(values) - MINIMUM[problem], "cpu_s": cpu_s, "found": found}


def objective(problem: str, **params: Any) -> float:
    return evaluate(problem, params)[0]


def sequential_skopt(problem: str, seed: int, n: int) -> dict[str, float]:
    """scikit-optimize's own ask/tell, one point at a time: the per-trial reference."""
    from skopt import Optimizer

    names = list(space_of(problem))
    opt = Optimizer(list(space_of(problem).values()), random_state=seed)
    best = math.inf
    for _ in range(n):
        point = opt.ask()
        params = dict(zip(names, point, strict=True))
        opt.tell(point, evaluate(problem, params)[0])
        best = min(best, true_value(problem, params))
    return {"regret": best - MINIMUM[problem]}


def sync_batch_skopt(problem: str, seed: int, workers: int, n: int) -> dict[str, float]:
    """The synchronous batch loop: ``workers`` points at once (skopt's constant liar),
    all told before the next batch."""
    from skopt import Optimizer

    names = list(space_of(problem))
    opt = Optimizer(list(space_of(problem).values()), random_state=seed)
    best = math.inf
    while n > 0:
        batch = opt.ask(n_points=min(workers, n))
        params = [dict(zip(names, p, strict=True)) for p in batch]
        opt.tell(batch, [evaluate(problem, p)[0] for p in params])
        best = min(best, *(true_value(problem, p) for p in params))
        n -= len(batch)
    return {"regret": best - MINIMUM[problem]}


def asynchronous(
    problem: str,
    seed: int,
    workers: int,
    n: int,
    ask: Callable[[], tuple[Any, dict[str, Any]]],
    tell: Callable[[Any, float], None],
) -> dict[str, float]:
    """An ask/tell optimizer on the same simulated asynchronous workers as dtune (same
    durations): each worker asks the moment it is free; results are told in finishing
    order, while the other points still run."""
    rng = np.random.RandomState(seed)
    running: list[tuple[float, int, Any, dict[str, Any]]] = []
    clock, started, best = 0.0, 0, math.inf

    def start() -> None:
        nonlocal started
        token, params = ask()
        duration = 1 + 2 * evaluate(problem, params)[1] + 0.1 * rng.rand()
        heapq.heappush(running, (clock + duration, started, token, params))
        started += 1

    while started < min(workers, n):
        start()
    while running:
        clock, _, token, params = heapq.heappop(running)
        tell(token, evaluate(problem, params)[0])
        best = min(best, true_value(problem, params))
        if started < n:
            start()
    return {"regret": best - MINIMUM[problem]}


def optuna_async(problem: str, seed: int, workers: int, n: int, sampler: str) -> dict[str, float]:
    """Optuna through ask/tell on the simulated workers: its GPSampler (which conditions
    on running trials) or TPE with ``constant_liar``."""
    import optuna
    from bench_multifidelity import _optuna_params

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if sampler == "gp":
        chosen: Any = optuna.samplers.GPSampler(seed=seed)
    else:
        chosen = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    study = optuna.create_study(sampler=chosen)
    space = space_of(problem)

    def ask() -> tuple[Any, dict[str, Any]]:
        trial = study.ask()
        return trial, _optuna_params(trial, space)

    return asynchronous(problem, seed, workers, n, ask, study.tell)


PEERS = ("dtune", "skopt-sequential", "skopt-sync-batch", "optuna-gp", "optuna-tpe")


def peer(name: str, problem: str, seed: int, workers: int, n: int) -> dict[str, float]:
    if name == "dtune":
        return simulate(problem, seed, workers, n, {})
    if name == "skopt-sequential":
        return sequential_skopt(problem, seed, n)
    if name == "skopt-sync-batch":
        return sync_batch_skopt(problem, seed, workers, n)
    return optuna_async(problem, seed, workers, n, name.removeprefix("optuna-"))


def compare_peers(args: argparse.Namespace) -> None:
    """Every peer on every problem, medians over seeds, in one run."""
    names = args.peers.split(",")
    print("| problem | " + " | ".join(names) + " | dtune ÷ sequential |")
    print("|---|" + "---|" * (len(names) + 1))
    for problem in args.problems.split(","):
        medians = {}
        for name in names:
            started = time.perf_counter()
            regrets = [
                peer(name, problem, seed, args.workers, args.trials)["regret"]
                for seed in range(args.seeds)
            ]
            medians[name] = statistics.median(regrets)
            print(
                f"  {problem} {name}: median {medians[name]:.4g}, max {max(regrets):.4g} "
                f"({time.perf_counter() - started:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
        ratio = (
            f"{medians['dtune'] / medians['skopt-sequential']:.2f}"
            if {"dtune", "skopt-sequential"} <= medians.keys() and medians["skopt-sequential"]
            else ""
        )
        cells = " | ".join(f"{medians[name]:.3g}" for name in names)
        print(f"| {problem} | {cells} | {ratio} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", choices=sorted(GRIDS), default="liar")
    parser.add_argument(
        "--peers",
        nargs="?",
        const=",".join(PEERS),
        help=f"compare dtune with other optimizers instead of a grid (from {PEERS})",
    )
    parser.add_argument("--problems", default=",".join(PROBLEMS))
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--trials", type=int, default=48)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--no-reference", action="store_true", help="skip skopt's sequential reference"
    )
    args = parser.parse_args()
    for problem in args.problems.split(","):
        if problem not in PROBLEMS + HARDER:
            parser.error(f"unknown problem {problem!r}; choose from {PROBLEMS + HARDER}")
    if args.peers:
        print(
            f"{args.workers} simulated workers, {args.trials} trials, median regret of "
            f"{args.seeds} seeds (the best noise-free value evaluated - the minimum)\n"
        )
        with threadpool_limits(limits=1):
            compare_peers(args)
        return
    print(
        f"{args.workers} simulated workers, {args.trials} trials, medians of {args.seeds} seeds "
        "(regret: best value found - minimum)\n"
    )
    print("| problem | options | regret median | regret max | per seed | best found at | CPU s |")
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
                per_seed = " / ".join(f"{r:.3g}" for r in regrets)
                found = " / ".join(str(r["found"]) for r in runs)
                print(
                    f"| {problem} | {label} | {statistics.median(regrets):.4f} | "
                    f"{max(regrets):.4f} | {per_seed} | {found} | "
                    f"{statistics.median(r['cpu_s'] for r in runs):.1f} |",
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
