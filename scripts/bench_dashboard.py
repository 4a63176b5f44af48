"""How the dashboard copes with a large study: page load and live updates at 5,000 trials.

Writes a SQLite store holding N finished trials spread over 32 workers (``--workers``)
plus as many running ones, serves the dashboard, and drives headless Chromium:

- page load: from navigation until the browser holds every trial;
- server update: the cost of one update tick (poll the store, stream/patch the changes)
  while as many trials finish and start every second, timed inside the server process;
- end-to-end: from a trial being committed to the store until the browser shows it;
- responsiveness: the slowest answer of the page to a trivial script while updates run
  (a frozen page would answer late).

Usage: python scripts/bench_dashboard.py [--trials 5000] [--seconds 15] [--workers 32]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dtune import Categorical, Integer, Real, SQLiteStorage, Study, Trial, TrialState
from dtune.dashboard import app as dashboard_app
from dtune.dashboard import serve_dashboard
from tests.conftest import headless_chromium

SPACE = {
    "lr": Real(1e-5, 1e-1, prior="log-uniform"),
    "dropout": Real(0.0, 0.6),
    "units": Integer(16, 512),
    "act": Categorical(["relu", "tanh", "gelu"]),
}
WORKERS = 32


def _placement(number: int, workers: int) -> dict[str, str]:
    """Trial ``number``'s worker and device: ``workers`` GPUs over 4 nodes."""
    return {
        "worker": f"node{number % 4}-gpu{number % workers // 4}",
        "device": str(number % workers // 4),
    }


def _trial(number: int, state: TrialState, start: float, rng: object, workers: int) -> Trial:
    import random

    assert isinstance(rng, random.Random)
    params = {
        "lr": 10 ** rng.uniform(-5, -1),
        "dropout": rng.uniform(0, 0.6),
        "units": rng.randint(16, 512),
        "act": rng.choice(["relu", "tanh", "gelu"]),
    }
    done = state is TrialState.COMPLETE
    placement = _placement(number, workers)
    return Trial(
        number=number,
        state=state,
        params=params,
        value=rng.uniform(0.05, 2.0) if done else None,
        metrics={"val_accuracy": rng.random()} if done else {},
        worker=placement["worker"],
        host=f"node{number % 4}",
        device=placement["device"] if done else None,
        submitted=start,
        started=start,
        finished=start + rng.uniform(1, 3) if done else None,
    )


def make_store(path: Path, n: int, workers: int) -> SQLiteStorage:
    import random

    rng = random.Random(0)
    Study(SPACE, name="big", storage=path)
    store = SQLiteStorage(path)
    t0 = time.time() - n / workers * 2.0
    trials = [
        _trial(i, TrialState.COMPLETE, t0 + i / workers * 2.0, rng, workers) for i in range(n)
    ] + [_trial(n + i, TrialState.RUNNING, time.time(), rng, workers) for i in range(workers)]
    store.put_trials("big", trials)
    return store


COUNT = (
    "if (!window.Bokeh || !Bokeh.documents.length) return -1;"
    "const m = Bokeh.documents[0].get_model_by_name('dtune-trials');"
    "if (!m) return -1; const d = m.data;"
    "const s = Array.from(d instanceof Map ? d.get('state') : d['state']);"
    "return s.filter(x => x === 'COMPLETE').length;"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument(
        "--workers", type=int, default=WORKERS, help="workers (and trials finishing per second)"
    )
    args = parser.parse_args()
    workers = args.workers

    # time every update tick inside the server
    ticks: list[float] = []
    update = dashboard_app._Page.update

    def timed_update(self: dashboard_app._Page) -> None:
        start = time.perf_counter()
        update(self)
        ticks.append(time.perf_counter() - start)

    dashboard_app._Page.update = timed_update  # type: ignore[method-assign]

    import random

    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "big.db"
        store = make_store(path, args.trials, workers)
        driver = headless_chromium()
        try:
            with serve_dashboard(path, "big") as server:
                started = time.perf_counter()
                driver.get(server.url)
                while (seen := driver.execute_script(COUNT)) < args.trials:
                    if time.perf_counter() - started > 300:
                        raise SystemExit(f"the page shows {seen} trials after 300 s")
                    time.sleep(0.02)
                load = time.perf_counter() - started
                first_tick = ticks[0]
                ticks.clear()

                # every second: the 32 running trials finish and 32 new ones start
                number = args.trials + workers
                running = list(range(args.trials, args.trials + workers))
                complete = args.trials
                latencies, answers = [], []
                end = time.perf_counter() + args.seconds
                while time.perf_counter() < end:
                    now = time.time()
                    finished = [
                        Trial(
                            number=n,
                            state=TrialState.COMPLETE,
                            params=_trial(n, TrialState.RUNNING, now, rng, workers).params,
                            value=rng.uniform(0.05, 2.0),
                            **_placement(n, workers),
                            submitted=now - 2,
                            started=now - 2,
                            finished=now,
                        )
                        for n in running
                    ]
                    new = [
                        _trial(number + i, TrialState.RUNNING, now, rng, workers)
                        for i in range(workers)
                    ]
                    store.put_trials("big", finished + new)
                    committed = time.perf_counter()
                    complete += len(finished)
                    running = [t.number for t in new]
                    number += workers
                    while True:
                        asked = time.perf_counter()
                        seen = driver.execute_script(COUNT)
                        answers.append(time.perf_counter() - asked)
                        if seen >= complete:
                            break
                        if time.perf_counter() - committed > 60:
                            raise SystemExit(f"the page shows {seen} of {complete} after 60 s")
                        time.sleep(0.02)
                    latencies.append(time.perf_counter() - committed)
        finally:
            driver.quit()

    print(f"trials in the store at load: {args.trials} complete + {workers} running")
    print(f"page load (navigation -> every trial in the browser): {load:.2f} s")
    print(f"first server update (reads all {args.trials + workers} trials): {first_tick:.3f} s")
    print(
        f"server update tick while {workers} trials finish and {workers} start per second: "
        f"median {statistics.median(ticks) * 1000:.1f} ms, max {max(ticks) * 1000:.1f} ms "
        f"({len(ticks)} ticks)"
    )
    print(
        f"commit -> shown in the browser: median {statistics.median(latencies):.2f} s, "
        f"max {max(latencies):.2f} s (the page polls the store once a second)"
    )
    print(
        f"page answering a script during updates: median {statistics.median(answers) * 1000:.0f}"
        f" ms, max {max(answers) * 1000:.0f} ms"
    )
    print(f"trials at the end: {complete} complete")


if __name__ == "__main__":
    main()
