"""What refitting the GP's hyperparameters less often costs in search quality and saves
in optimizer time (`refit_growth`), on Branin with simulated asynchronous workers.

The workers are simulated (trial durations vary with x1 as in the driver tests), so the
figures measure the optimizer alone, deterministically per seed.

Usage: python scripts/bench_refit.py [--seeds 8]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).parent.parent))

from dtune.optimizer import PendingAwareOptimizer
from dtune.space import Real, SearchSpace
from tests.objectives import branin

SPACE = SearchSpace({"x1": Real(-5.0, 10.0), "x2": Real(0.0, 15.0)})
BRANIN_MIN = 0.397887


def run(seed: int, workers: int, growth: float, n: int, acq: str) -> tuple[float, float, int]:
    """(final regret, seconds spent in hyperparameter fits, number of fits)."""
    opt = PendingAwareOptimizer(SPACE, random_state=seed, acq_func=acq, refit_growth=growth)
    rng = np.random.RandomState(seed)
    pending: list[tuple[float, list[float]]] = []
    now, best, asked, fit_s, fits = 0.0, math.inf, 0, 0.0, 0
    while asked < n or pending:
        while len(pending) < workers and asked < n:
            point = opt.ask(pending=[p for _, p in pending])
            pending.append((now + 0.3 + 0.02 * (point[0] + 5) + 0.1 * rng.rand(), point))
            asked += 1
        pending.sort()
        now, point = pending.pop(0)
        value = branin(*point)
        best = min(best, value)
        opt.tell([point], [value])
        if opt.needs_fit:
            start = time.perf_counter()
            opt.fit()
            fit_s += time.perf_counter() - start
            fits += 1
    return best - BRANIN_MIN, fit_s, fits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args()
    print(
        "growth  acq       regret median  regret max  fit s median  fits   (2 workers, 40 trials)"
    )
    with threadpool_limits(limits=1):
        for growth in (0.0, 0.1, 0.25):
            for acq in ("EI", "gp_hedge"):
                runs = [run(s, 2, growth, 40, acq) for s in range(args.seeds)]
                regrets, seconds, fits = zip(*runs, strict=True)
                print(
                    f"{growth:<7} {acq:<9} {statistics.median(regrets):<14.4f} "
                    f"{max(regrets):<11.4f} {statistics.median(seconds):<13.2f} "
                    f"{statistics.median(fits):.0f}"
                )
        for growth in (0.0, 0.1):
            regret, fit_s, fits = run(0, 8, growth, 150, "EI")
            print(
                f"150 trials, 8 workers, EI, growth {growth}: regret {regret:.4f}, "
                f"{fits} fits taking {fit_s:.1f} s in all"
            )


if __name__ == "__main__":
    main()
