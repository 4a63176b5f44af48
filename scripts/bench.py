"""dtune against the usual ways of driving a Bayesian search over Dask, in one run.

A ``dask scheduler`` and single-threaded ``dask worker`` processes run on 127.0.0.1. Each
search runs in a fresh Python process of its own (so its CPU time and peak memory are
its own), one after another, seed by seed, with the loops interleaved so that the
machine's noise falls on all of them alike. The objectives sleep for a time that varies
5x across the space (0.3-1.5 s by default, ``--scale`` multiplies it) and return a
known test function:

- ``branin``: Branin on [-5, 10] x [0, 15];
- ``hartmann6``: Hartmann's 6-dimensional function on [0, 1]^6;
- ``mixed``: a deep-learning-like space (log-uniform learning rate, dropout, integer
  layers and units, categorical activation and optimizer) with a known minimum of 0.

Loops (all with BLAS on one thread in the driver):

- ``dtune``: ``Study.optimize`` with its defaults, a SQLite store, on the cluster;
- ``dtune-hedge``: the same with ``acq_func="gp_hedge"`` (skopt's default);
- ``random``: random points on an ``as_completed`` loop (no model: Dask's ceiling);
- ``sync-batch``: skopt ``ask(n_points=W)``, wait for all W, ``tell`` (the classic recipe);
- ``naive``: ``as_completed``, skopt ``tell`` then ``ask()`` per result, no pending points;
- ``liar-copy``: ``as_completed``, ``tell``, then a constant liar by telling the pending
  points to a copy of the optimizer and asking it;
- ``sequential``: skopt ``ask``/``tell`` one point at a time with no sleeping (the search
  quality reference: regret only).

It prints Markdown tables of medians over seeds. ``--long`` runs the long-history case
instead: 1,000 trials on one worker process with 32 threads sleeping 1-3 s; with
``--trials 5000 --workers 256 --processes 4 --scale 2`` it is issue 13's scale run, 256
threads over 4 worker processes sleeping 2-6 s.

    python scripts/bench.py                           # 8 workers, 48 trials, 3 seeds
    python scripts/bench.py --loops dtune,random,liar-copy     # liar-copy is opt-in
    python scripts/bench.py --scale 10 --loops dtune,random --seeds 2
    python scripts/bench.py --long
    python scripts/bench.py --long --trials 5000 --workers 256 --processes 4 --scale 2
    python scripts/bench.py --fresh --loops dtune,random   # each search on a new cluster
    python scripts/bench.py --smoke                   # a minute; checks it all works
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import itertools
import json
import logging
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOOPS = ("dtune", "dtune-hedge", "random", "sync-batch", "naive", "liar-copy", "sequential")
# liar-copy refits a copy for every suggestion: the slowest loop by far, run on request.
DEFAULT_LOOPS = tuple(loop for loop in LOOPS if loop != "liar-copy")
PROBLEMS = ("branin", "hartmann6", "mixed")
# Harder ones, on request (--problems): 10 dimensions, and Hartmann6 observed with noise.
HARDER = ("ackley10", "hartmann6-noisy")
NOISE_SD = 0.1  # of hartmann6-noisy's observations (the function spans about 3.3)
_noise = random.Random(0)
REGRET_AT_N = (16, 32, 48)

# -- the objectives -----------------------------------------------------------------------

_HARTMANN_A = [
    [10, 3, 17, 3.5, 1.7, 8],
    [0.05, 10, 17, 0.1, 8, 14],
    [3, 3.5, 1.7, 10, 17, 8],
    [17, 8, 0.05, 10, 0.1, 14],
]
_HARTMANN_P = [
    [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
    [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
    [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
    [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
]
_HARTMANN_ALPHA = [1.0, 1.2, 3.0, 3.2]
_ACTIVATION = {"relu": 0.0, "elu": 0.05, "tanh": 0.3}
_OPTIMIZER = {"adam": 0.0, "rmsprop": 0.1, "sgd": 0.4}


def evaluate(problem: str, params: dict[str, Any]) -> tuple[float, float]:
    """(value, duration fraction in [0, 1]) of ``problem`` at ``params``."""
    if problem == "branin":
        x1, x2 = params["x1"], params["x2"]
        b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
        value = (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10
        return value, (x1 + 5) / 15
    if problem == "hartmann6":
        x = [params[f"x{i}"] for i in range(6)]
        value = -sum(
            alpha * math.exp(-sum(a * (xi - p) ** 2 for a, xi, p in zip(row, x, ps, strict=True)))
            for alpha, row, ps in zip(_HARTMANN_ALPHA, _HARTMANN_A, _HARTMANN_P, strict=True)
        )
        return value, x[0]
    if problem == "ackley10":
        x = [params[f"x{i}"] for i in range(10)]
        value = (
            -20 * math.exp(-0.2 * math.sqrt(sum(xi * xi for xi in x) / 10))
            - math.exp(sum(math.cos(2 * math.pi * xi) for xi in x) / 10)
            + 20
            + math.e
        )
        return value, (x[0] + 5) / 15
    if problem == "hartmann6-noisy":
        value, fraction = evaluate("hartmann6", params)
        return value + _noise.gauss(0.0, NOISE_SD), fraction
    if problem == "mixed":
        lr, layers, units = math.log10(params["learning_rate"]), params["layers"], params["units"]
        value = (
            (lr + 3 + 0.3 * (layers - 3)) ** 2
            + 4 * (params["dropout"] - 0.3) ** 2
            + 0.1 * (layers - 3) ** 2
            + 0.05 * (math.log2(units) - 7) ** 2
            + _ACTIVATION[params["activation"]]
            + _OPTIMIZER[params["optimizer"]]
        )
        return value, 0.5 * (layers - 1) / 5 + 0.5 * (math.log2(units) - 4) / 5
    raise ValueError(f"unknown problem {problem!r}; choose from {PROBLEMS + HARDER}")


def true_value(problem: str, params: dict[str, Any]) -> float:
    """``problem``'s value at ``params`` without observation noise (for regret)."""
    return evaluate(problem.removesuffix("-noisy"), params)[0]


MINIMUM = {
    "branin": 0.397887,
    "hartmann6": -3.32237,
    "hartmann6-noisy": -3.32237,
    "mixed": 0.0,
    "ackley10": 0.0,
}


def space_of(problem: str) -> dict[str, Any]:
    import dtune

    if problem == "branin":
        return {"x1": dtune.Real(-5.0, 10.0), "x2": dtune.Real(0.0, 15.0)}
    if problem in ("hartmann6", "hartmann6-noisy"):
        return {f"x{i}": dtune.Real(0.0, 1.0) for i in range(6)}
    if problem == "ackley10":  # the minimum, at 0, a third of the way along each axis
        return {f"x{i}": dtune.Real(-5.0, 10.0) for i in range(10)}
    return {
        "learning_rate": dtune.Real(1e-5, 1e-1, prior="log-uniform"),
        "dropout": dtune.Real(0.0, 0.7),
        "layers": dtune.Integer(1, 6),
        "units": dtune.Integer(16, 512, prior="log-uniform"),
        "activation": dtune.Categorical(list(_ACTIVATION)),
        "optimizer": dtune.Categorical(list(_OPTIMIZER)),
    }


def sleep_for(fraction: float, low: float, high: float) -> None:
    time.sleep(low + (high - low) * min(max(fraction, 0.0), 1.0))


def dtune_objective(problem: str, low: float, high: float, **params: Any) -> float:
    value, fraction = evaluate(problem, params)
    sleep_for(fraction, low, high)
    return value


def timed_objective(problem: str, low: float, high: float, params: dict[str, Any]) -> dict:
    """For the hand-written loops: the value and when and where it ran."""
    from distributed import get_worker

    started = time.time()
    value, fraction = evaluate(problem, params)
    sleep_for(fraction, low, high)
    return {
        "value": value,
        "started": started,
        "finished": time.time(),
        "worker": get_worker().address,
    }


# -- one search, in its own process -------------------------------------------------------


@dataclass
class Job:
    loop: str
    problem: str
    seed: int
    n_trials: int
    low: float
    high: float
    scheduler: str | None


def run_job(job: Job) -> dict[str, Any]:
    """Run one search; its trials as (started, finished, worker, value, params)."""
    # Imported before the clock starts.
    import skopt  # noqa: F401
    from threadpoolctl import threadpool_limits

    import dtune  # noqa: F401

    with threadpool_limits(limits=1):
        if job.loop == "sequential":
            started = time.perf_counter()
            trials = sequential(job)
            return {"wall_s": time.perf_counter() - started, "trials": trials}
        from distributed import Client

        with Client(job.scheduler) as client:
            n_workers = sum(client.nthreads().values())
            runner = {
                "dtune": run_dtune,
                "dtune-hedge": functools.partial(run_dtune, acq_func="gp_hedge"),
                "random": run_random,
                "sync-batch": run_sync_batch,
                "naive": run_naive,
                "liar-copy": run_liar_copy,
            }[job.loop]
            extra: dict[str, Any] = {}
            started, began = time.perf_counter(), time.time()
            trials = runner(job, client, n_workers, extra)
            return {
                "wall_s": time.perf_counter() - started,
                "began": began,
                "workers": n_workers,
                "trials": trials,
                **extra,
            }


class _SuggestStats(logging.Handler):
    """Catches the suggestion engine's summary that the driver logs at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.stats: dict[str, Any] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.stats.update(getattr(record, "dtune_suggest", {}))


@contextlib.contextmanager
def suggest_stats() -> Iterator[dict[str, Any]]:
    """A dict that, once the block ends, holds the summary of the suggestion process
    that a search in the block logged (empty if none did: an in-process suggester)."""
    handler = _SuggestStats()
    logger = logging.getLogger("dtune")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.stats
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def run_dtune(job: Job, client: Any, n_workers: int, extra: dict, **options: Any) -> list:
    import dtune

    with tempfile.TemporaryDirectory() as tmp, suggest_stats() as stats:
        study = dtune.Study(
            space_of(job.problem),
            storage=str(Path(tmp) / "bench.db"),
            random_state=job.seed,
            **options,
        )
        objective = functools.partial(dtune_objective, job.problem, job.low, job.high)
        study.optimize(objective, job.n_trials, client=client, progress=False)
        trials = study.trials
        extra["child_shared_mb"] = _shared_with_driver_mb(study)
        if study._process is not None:  # stopped and reaped: its CPU counts in the job's
            study._process.close()
    extra.update(stats)
    return [
        (t.started, t.finished, t.worker, t.value, list(t.params.values()))
        for t in trials
        if t.value is not None
    ]


def _shared_with_driver_mb(study: Any) -> float:
    """The suggestion process's resident pages that are not its own: a forked process
    shares the driver's until either writes them, and its peak RSS counts them again."""
    import psutil

    process = study._process
    if process is None or process.pid is None:
        return 0.0
    try:
        memory = psutil.Process(process.pid).memory_full_info()
    except psutil.Error:
        return 0.0
    return (memory.rss - memory.uss) / 2**20


def _skopt_space(problem: str) -> list[Any]:
    return list(space_of(problem).values())


def _params(problem: str, point: list[Any]) -> dict[str, Any]:
    return dict(zip(space_of(problem), point, strict=True))


def _plain(point: list[Any]) -> list[Any]:
    return [v.item() if hasattr(v, "item") else v for v in point]


def _row(result: dict, point: list[Any]) -> tuple:
    return (result["started"], result["finished"], result["worker"], result["value"], point)


def _as_completed_loop(
    job: Job, client: Any, n_workers: int, next_point: Callable[[dict], list[Any]]
) -> list:
    """Keep every worker busy; ``next_point(pending)`` is called once per submission,
    after the finished results were handed to ``on_result`` (set as an attribute)."""
    from distributed import as_completed

    rows: list[tuple] = []
    pending: dict[Any, list[Any]] = {}
    ac = as_completed()

    def submit() -> None:
        point = _plain(next_point(pending))
        future = client.submit(
            timed_objective, job.problem, job.low, job.high, _params(job.problem, point), pure=False
        )
        pending[future] = point
        ac.add(future)

    for _ in range(min(n_workers, job.n_trials)):
        submit()
    submitted = len(pending)
    for future in ac:
        point = pending.pop(future)
        result = future.result()
        rows.append(_row(result, point))
        next_point.on_result(point, result["value"])  # type: ignore[attr-defined]
        if submitted < job.n_trials:
            submit()
            submitted += 1
    return rows


def _skopt_optimizer(job: Job) -> Any:
    from skopt import Optimizer

    return Optimizer(_skopt_space(job.problem), random_state=job.seed)


def run_random(job: Job, client: Any, n_workers: int, extra: dict) -> list:
    from skopt.space import Space

    space = Space(_skopt_space(job.problem))
    rng = __import__("numpy").random.RandomState(job.seed)

    def next_point(pending: dict) -> list[Any]:
        return space.rvs(random_state=rng)[0]

    next_point.on_result = lambda point, value: None  # type: ignore[attr-defined]
    return _as_completed_loop(job, client, n_workers, next_point)


def run_naive(job: Job, client: Any, n_workers: int, extra: dict) -> list:
    opt = _skopt_optimizer(job)

    def next_point(pending: dict) -> list[Any]:
        return opt.ask()

    next_point.on_result = lambda point, value: opt.tell(point, value)  # type: ignore[attr-defined]
    return _as_completed_loop(job, client, n_workers, next_point)


def run_liar_copy(job: Job, client: Any, n_workers: int, extra: dict) -> list:
    opt = _skopt_optimizer(job)

    def next_point(pending: dict) -> list[Any]:
        if not pending or opt._n_initial_points > 0:  # random initial points: no model yet
            return opt.ask()
        liar = copy.deepcopy(opt)
        points = list(pending.values())
        liar.tell(points, [min(opt.yi)] * len(points))
        return liar.ask()

    next_point.on_result = lambda point, value: opt.tell(point, value)  # type: ignore[attr-defined]
    return _as_completed_loop(job, client, n_workers, next_point)


def run_sync_batch(job: Job, client: Any, n_workers: int, extra: dict) -> list:
    opt = _skopt_optimizer(job)
    rows: list[tuple] = []
    while len(rows) < job.n_trials:
        points = [_plain(p) for p in opt.ask(n_points=min(n_workers, job.n_trials - len(rows)))]
        futures = [
            client.submit(
                timed_objective, job.problem, job.low, job.high, _params(job.problem, p), pure=False
            )
            for p in points
        ]
        results = client.gather(futures)
        rows.extend(_row(r, p) for r, p in zip(results, points, strict=True))
        opt.tell(points, [r["value"] for r in results])
    return rows


def sequential(job: Job) -> list:
    opt = _skopt_optimizer(job)
    rows: list[tuple] = []
    for i in range(job.n_trials):
        point = _plain(opt.ask())
        value, _ = evaluate(job.problem, _params(job.problem, point))
        opt.tell(point, value)
        rows.append((float(i), float(i), "sequential", value, point))
    return rows


# -- figures ------------------------------------------------------------------------------


def figures(job: Job, result: dict) -> dict[str, float]:
    """Utilization, refill latency, regret, duplicates... of one search."""
    rows = sorted(result["trials"], key=lambda r: r[1])  # by finish
    minimum = MINIMUM[job.problem]
    best = list(itertools.accumulate((r[3] for r in rows), min))
    out: dict[str, float] = {"wall_s": result["wall_s"]}
    for n in REGRET_AT_N:
        if n <= len(best):
            out[f"regret@{n}"] = best[n - 1] - minimum
    if len(best) > REGRET_AT_N[-1]:  # a long search: its regret@n and @s stop early
        out["regret_final"] = best[-1] - minimum
    keys = [json.dumps(r[4]) for r in rows]
    out["duplicates"] = len(keys) - len(set(keys))
    if job.loop == "sequential":
        return out
    start = min(r[0] for r in rows)
    span = max(r[1] for r in rows) - start
    out["first_start_s"] = start - result["began"]  # set-up before the first trial runs
    busy = sum(r[1] - r[0] for r in rows)
    out["utilization"] = busy / (result["workers"] * span)
    # Until the last trial starts, every idle moment is the loop's; after it, workers
    # idle only because the budget is spent (the tail of long trials).
    last_start = max(r[0] for r in rows)
    if last_start > start:
        busy_before = sum(max(0.0, min(r[1], last_start) - r[0]) for r in rows)
        out["util_to_last_start"] = busy_before / (result["workers"] * (last_start - start))
    # As a user feels it: from the optimize call to the last result.
    out["util_from_call"] = busy / (result["workers"] * (max(r[1] for r in rows) - result["began"]))
    firsts: dict[str, float] = {}
    for r in rows:
        firsts[r[2]] = min(firsts.get(r[2], math.inf), r[0])
    out["last_first_start_s"] = max(firsts.values()) - result["began"]  # every worker busy
    gaps = refill_gaps(rows)
    out["refill_ms"] = 1000 * statistics.median(gaps) if gaps else math.nan
    out["refill_p90_ms"] = 1000 * percentile(gaps, 0.9) if gaps else math.nan
    out["gap_mean_ms"] = 1000 * statistics.mean(gaps) if gaps else math.nan
    out["gap_p99_ms"] = 1000 * percentile(gaps, 0.99) if gaps else math.nan
    out["cpu_ms_per_trial"] = 1000 * result["cpu_s"] / len(rows)
    # of which the suggestion process's (the rest is the driver's)
    out["process_cpu_ms_per_trial"] = 1000 * result["process_cpu_s"] / len(rows)
    out["peak_mb"] = result["peak_mb"]
    for t in (5, 10, 20):
        seconds = t * job.high / 1.5
        finished = [r[3] for r in rows if r[1] - start <= seconds]
        out[f"regret@{seconds:g}s"] = (min(finished) - minimum) if finished else math.nan
    stats = (
        "ask_max_ms",
        "ask_median_ms",
        "wait_max_ms",
        "wait_total_s",
        "waits",
        "fit_max_s",
        "search_fits",
        "search_fit_max_s",
        "ask_cpu_s",
        "fit_cpu_s",
        "search_fit_cpu_s",
        "asks",
        "drawn_in_driver",
        "drawn_while_starting",
    )
    for key in stats:
        if key in result:
            out[key] = result[key]
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def refill_gaps(rows: list[tuple]) -> list[float]:
    """Each worker's gaps between trials (dtune.stats.refill_latencies on the rows)."""
    from dtune import Trial, TrialState
    from dtune.stats import refill_latencies

    return refill_latencies(
        Trial(i, TrialState.COMPLETE, {}, worker=row[2], started=row[0], finished=row[1])
        for i, row in enumerate(rows)
    )


def window_utilization(rows: list[tuple], slots: int, size: int = 100) -> list[float]:
    """Worker utilization between the starts of trial k*size and (k+1)*size."""
    starts = sorted(r[0] for r in rows)
    out = []
    for k in range(0, len(starts) - size + 1, size):
        lo, hi = starts[k], starts[min(k + size, len(starts) - 1)]
        busy = sum(max(0.0, min(r[1], hi) - max(r[0], lo)) for r in rows)
        out.append(busy / (slots * (hi - lo)))
    return out


# -- the cluster and the runs -------------------------------------------------------------


@contextlib.contextmanager
def dask_cluster(n_workers: int, nthreads: int, warm: bool = True) -> Iterator[str]:
    """A ``dask scheduler`` and ``n_workers`` single-process workers on 127.0.0.1;
    ``warm``: after one small search, as a long-lived cluster would be."""
    from distributed import Client

    with tempfile.TemporaryDirectory() as tmp:
        scheduler_file = str(Path(tmp) / "scheduler.json")
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                 "--port", "0", "--dashboard-address", ":0", "--scheduler-file", scheduler_file],
                **quiet,
            )
        ]  # fmt: skip
        try:
            while not Path(scheduler_file).exists():
                time.sleep(0.1)
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
                     scheduler_file, "--nworkers", str(n_workers), "--nthreads", str(nthreads),
                     "--host", "127.0.0.1", "--no-dashboard", "--memory-limit", "0"],
                    **quiet,
                )
            )  # fmt: skip
            with Client(scheduler_file=scheduler_file) as client:
                client.wait_for_workers(n_workers, timeout=120)
                address = client.scheduler.address
            # The workers' first trials pay for imports and first deserializations: one
            # small search first, as on a long-lived cluster, unless that is measured.
            if warm:
                job = Job("dtune", "branin", 0, 2 * n_workers * nthreads, 0, 0, address)
                run_in_subprocess(job)
            yield address
        finally:
            for proc in reversed(procs):
                proc.terminate()
            for proc in reversed(procs):
                proc.wait(timeout=60)


def run_in_subprocess(job: Job) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--job", json.dumps(job.__dict__)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if out.returncode != 0:
        raise RuntimeError(f"{job} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def job_main(spec: str) -> None:
    job = Job(**json.loads(spec))
    result = run_job(job)
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the suggestion process
    result["cpu_s"] = me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime
    result["process_cpu_s"] = children.ru_utime + children.ru_stime
    # Pages a forked suggestion process shares with the driver are counted once.
    shared = result.pop("child_shared_mb", 0.0)
    result["peak_mb"] = (me.ru_maxrss + children.ru_maxrss) / 1024 - shared
    print(json.dumps(result))


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = [k for k in runs[0] if all(k in r for r in runs)]
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def print_table(title: str, rows: list[tuple[str, dict[str, float]]]) -> None:
    keys: list[str] = []
    for _, m in rows:
        keys.extend(k for k in m if k not in keys)
    print(f"\n{title}\n")
    print("| loop | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, m in rows:
        cells = [f"{m[k]:.3g}" if k in m and not math.isnan(m[k]) else "—" for k in keys]
        print(f"| {name} | " + " | ".join(cells) + " |")


def compare(args: argparse.Namespace) -> dict[str, Any]:
    loops = args.loops.split(",")
    problems = args.problems.split(",")
    for name in loops:
        if name not in LOOPS:
            raise SystemExit(f"unknown loop {name!r}; choose from {', '.join(LOOPS)}")
    for name in problems:
        if name not in PROBLEMS:
            raise SystemExit(
                f"unknown problem {name!r}; choose from {', '.join(PROBLEMS + HARDER)}"
            )
    low, high = 0.3 * args.scale, 1.5 * args.scale
    raw: dict[str, dict[str, list]] = {p: {loop: [] for loop in loops} for p in problems}
    trial_rows: dict[str, dict[str, list]] = {p: {loop: [] for loop in loops} for p in problems}
    with contextlib.ExitStack() as stack:
        # --fresh: every search gets a cluster of its own, just started (workers up and
        # connected, no task run yet), as `optimize` without a client gives a new user.
        shared = None if args.fresh else stack.enter_context(dask_cluster(args.workers, 1))
        for seed in range(args.seeds):
            for problem in problems:
                for loop in loops:
                    with contextlib.ExitStack() as own:
                        address = shared or own.enter_context(
                            dask_cluster(args.workers, 1, warm=False)
                        )
                        job = Job(loop, problem, seed, args.trials, low, high, address)
                        result = run_in_subprocess(job)
                    raw[problem][loop].append(figures(job, result))
                    trial_rows[problem][loop].append(result["trials"])
                    print(
                        f"seed {seed} {problem:<9} {loop:<10} {json.dumps(raw[problem][loop][-1])}",
                        file=sys.stderr,
                        flush=True,
                    )
    summary: dict[str, Any] = {}
    print(
        f"\n{args.workers} workers, {args.trials} trials, trials sleep {low:g}-{high:g} s, "
        f"medians of {args.seeds} seeds"
    )
    for problem in problems:
        rows = [(loop, medians(raw[problem][loop])) for loop in loops]
        print_table(f"### {problem}", rows)
        summary[problem] = dict(rows)
        table = dict(rows)
        if "dtune" in table and "random" in table:
            ratio = table["dtune"]["utilization"] / table["random"]["utilization"]
            print(f"\nutilization, dtune / random points: {ratio:.3f}")
    return {"raw": raw, "summary": summary, "trials": trial_rows}


def long_history(args: argparse.Namespace) -> dict[str, Any]:
    n_trials, slots = args.trials, args.workers
    job_results = {}
    processes = args.processes
    if slots % processes:
        raise SystemExit(f"--workers {slots} threads do not split over --processes {processes}")
    with dask_cluster(processes, slots // processes) as address:
        for loop in args.loops.split(","):
            job = Job(loop, args.problems.split(",")[0], 0, n_trials, args.scale, 3 * args.scale,
                      address)  # fmt: skip
            result = run_in_subprocess(job)
            rows = result["trials"]
            windows = window_utilization(rows, slots, size=max(10, n_trials // 10))
            fig = figures(job, result)
            durations = [r[1] - r[0] for r in rows]
            fig["median_trial_s"] = statistics.median(durations)
            fig["min_window_util"] = min(windows)
            # threads of one worker share its name: gaps per worker mean nothing here
            for key in ("refill_ms", "refill_p90_ms", "gap_mean_ms", "gap_p99_ms"):
                fig.pop(key, None)
            print_table(f"### long history: {loop}", [(loop, fig)])
            print("\nutilization per window of trials:", " ".join(f"{u:.3f}" for u in windows))
            job_results[loop] = {"figures": fig, "windows": windows, "trials": rows}
    return job_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--trials", type=int, default=48)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies trial durations")
    parser.add_argument("--loops", default=",".join(DEFAULT_LOOPS), help=f"from {LOOPS}")
    parser.add_argument("--problems", default=",".join(PROBLEMS))
    parser.add_argument("--long", action="store_true", help="the long-history case")
    parser.add_argument(
        "--processes", type=int, default=1, help="--long: worker processes sharing the threads"
    )
    parser.add_argument(
        "--fresh", action="store_true", help="each search on a cluster just started (no warm-up)"
    )
    parser.add_argument("--json", help="also write the raw figures here")
    parser.add_argument("--smoke", action="store_true", help="a small run that checks it works")
    args = parser.parse_args()
    if args.job:
        job_main(args.job)
        return
    if args.smoke:
        args.workers, args.trials, args.seeds, args.scale = 2, 8, 1, 0.05
        args.loops, args.long = ",".join(LOOPS), False
    if args.long:
        if args.trials == 48:
            args.trials = 1000
        if args.workers == 8:
            args.workers = 32
        if args.loops == ",".join(DEFAULT_LOOPS):
            args.loops = "dtune"
        if args.problems == ",".join(PROBLEMS):
            args.problems = "hartmann6"
        data = long_history(args)
    else:
        data = compare(args)
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
