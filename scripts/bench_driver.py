"""Benchmark of dtune's asynchronous driver: worker utilization and refill latency.

On a LocalCluster of single-threaded worker processes, a GP search over a sleep-based
Branin objective whose duration varies ~3x across the space (1-3 s by default) runs for
N trials; in the same run, the same search with random points (no model: Dask's own
ceiling) gives the reference. Medians over seeds are printed as a Markdown table.

    python scripts/bench_driver.py                      # 4 workers, 32 trials, 3 seeds
    python scripts/bench_driver.py --smoke              # seconds; checks it works
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

from distributed import Client, LocalCluster

import dtune
from dtune.stats import refill_latencies, utilization

BRANIN_MIN = 0.397887


def sleepy_branin(x1: float, x2: float, scale: float = 1.0) -> float:
    a, b, c = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi
    value = a * (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x1)
    # 1 s at x1 = -5, 3 s at x1 = 10: durations vary 3x across the space
    time.sleep(scale * (1.0 + 2.0 * (x1 + 5.0) / 15.0))
    return value + 10


def run_once(client: Client, estimator: str, seed: int, n_trials: int, scale: float) -> dict:
    study = dtune.Study(
        {"x1": dtune.Real(-5.0, 10.0), "x2": dtune.Real(0.0, 15.0)},
        base_estimator=estimator,
        random_state=seed,
    )
    started = time.perf_counter()
    study.optimize(sleepy_branin_scaled(scale), n_trials, client=client, progress=False)
    wall = time.perf_counter() - started
    trials = study.trials
    points = [tuple(t.params.values()) for t in trials]
    gaps = refill_latencies(trials)
    return {
        "wall_s": wall,
        "utilization": utilization(trials, n_workers=len(client.nthreads())),
        "refill_median_ms": 1000 * statistics.median(gaps),
        "refill_p90_ms": 1000 * sorted(gaps)[int(0.9 * (len(gaps) - 1))],
        "duplicates": len(points) - len(set(points)),
        "regret": study.best_value - BRANIN_MIN,
    }


def sleepy_branin_scaled(scale: float):
    def objective(x1: float, x2: float) -> float:
        return sleepy_branin(x1, x2, scale)

    return objective


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="duration multiplier")
    parser.add_argument("--smoke", action="store_true", help="tiny run that checks it works")
    args = parser.parse_args()
    if args.smoke:
        args.workers, args.trials, args.seeds, args.scale = 2, 6, 1, 0.05
    rows = []
    with (
        LocalCluster(
            n_workers=args.workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        for name, estimator in (("dtune GP", "GP"), ("random points", "dummy")):
            runs = [
                run_once(client, estimator, s, args.trials, args.scale) for s in range(args.seeds)
            ]
            rows.append((name, {k: statistics.median(r[k] for r in runs) for k in runs[0]}))
    print(
        f"\n{args.workers} workers, {args.trials} trials, {args.seeds} seeds, "
        f"trial durations {args.scale:g}-{3 * args.scale:g} s (medians)\n"
    )
    keys = list(rows[0][1])
    print("| loop | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, medians in rows:
        print(f"| {name} | " + " | ".join(f"{medians[k]:.3g}" for k in keys) + " |")
    ratio = rows[0][1]["utilization"] / rows[1][1]["utilization"]
    print(f"\nutilization, GP / random points: {ratio:.3f}")


if __name__ == "__main__":
    main()
