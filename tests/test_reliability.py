"""Faults injected for real: SIGKILLed workers and drivers, a lost scheduler, hung and
failing trials, two drivers on one study, TLS. Each test is a row of docs/RELIABILITY.md."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import dask
import pytest
from distributed import Client, LocalCluster, Security
from distributed.comm import connect

from dtune import Real, Study, TrialState, load_study
from dtune.exceptions import SchedulerLostError, StudyInUseError, TooManyFailuresError
from tests import objectives
from tests.conftest import n_told, start_dask_scheduler, start_dask_workers

SPACE = {"x": Real(0.0, 1.0)}
SEARCH_FILE = str(Path(__file__).parent / "data" / "search_file.py")


def _states(study: Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.trials:
        counts[t.state.value] = counts.get(t.state.value, 0) + 1
    return counts


def _rows(path: Path) -> dict[int, tuple]:
    """The store's trial rows by number, read with plain sqlite3."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return {r[0]: r for r in conn.execute("SELECT number, * FROM trials")}


def _wait_until(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


def _stored_reports(path: Path) -> dict[int, list[tuple]]:
    """The store's reports by trial number, each (step, value, time), read with plain
    sqlite3; none before the driver made the file."""
    try:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            rows = conn.execute("SELECT number, step, value, time FROM reports").fetchall()
    except sqlite3.OperationalError:
        return {}
    found: dict[int, list[tuple]] = {}
    for number, *report in sorted(rows):
        found.setdefault(number, []).append(tuple(report))
    return found


def _driver(script: Path, *args: object) -> subprocess.Popen[bytes]:
    """``python script args…`` from the repository's root, as a user's driver."""
    root = str(Path(__file__).parent.parent)
    return subprocess.Popen(
        [sys.executable, str(script), *map(str, args)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": root},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


# -- workers die ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_trial_whose_worker_dies_is_recorded_failed_and_the_search_goes_on(tmp_path):
    # Dask gives up on a task after allowed-failures worker deaths: KilledWorker. With
    # worker-saturation 1.0 no second task waits on a worker (and dies with it).
    config = {
        "distributed.scheduler.allowed-failures": 0,
        "distributed.scheduler.worker-saturation": 1.0,
    }
    with (
        dask.config.set(config),
        LocalCluster(
            n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0"
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        study = Study(SPACE, storage=tmp_path / "s.db", random_state=1, n_initial_points=8)
        study.optimize(objectives.kills_its_worker, 12, client=client, progress=False)
    trials = study.trials
    assert len(trials) == 12
    killed = [t for t in trials if t.params["x"] < 0.25]
    assert killed, "no point landed where the objective kills its worker; change the seed"
    for t in killed:
        assert t.state is TrialState.FAILED
        assert "KilledWorker" in t.error
    assert all(t.state is TrialState.COMPLETE for t in trials if t.params["x"] >= 0.25)


# -- the driver dies -----------------------------------------------------------------------


def _dtune_run(scheduler: str, store: Path, trials: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dtune.cli",
            "run",
            SEARCH_FILE,
            "--trials",
            str(trials),
            "--storage",
            str(store),
            "--scheduler",
            scheduler,
            "--seed",
            "0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_killed_workers_and_a_killed_driver_lose_no_finished_trial(scheduler, tmp_path):
    store = tmp_path / "s.db"
    workers = start_dask_workers(scheduler, 3)
    try:
        with Client(scheduler, timeout=60) as client:
            client.wait_for_workers(3, timeout=120)
            driver = _dtune_run(scheduler, store, 30)

            def finished() -> int:
                try:
                    return sum(r[3] in ("COMPLETE", "FAILED") for r in _rows(store).values())
                except sqlite3.OperationalError:  # the driver has not created it yet
                    return 0

            # kill -9 a worker process twice while trials run on it (its Nanny restarts it)
            for at in (4, 8):
                _wait_until(lambda at=at: finished() >= at)
                os.kill(next(iter(client.run(os.getpid).values())), signal.SIGKILL)
                time.sleep(0.3)
            # kill -9 of the driver mid-search, while trials run
            _wait_until(
                lambda: finished() >= 12 and any(r[3] == "RUNNING" for r in _rows(store).values())
            )
            driver.kill()
            driver.wait()
            before = _rows(store)
            done_before = {n: r for n, r in before.items() if r[3] in ("COMPLETE", "FAILED")}
            assert any(r[3] == "RUNNING" for r in before.values())  # left behind

            client.wait_for_workers(3, timeout=120)
            resumed = _dtune_run(scheduler, store, 30 - len(done_before))
            _, err = resumed.communicate(timeout=300)
            assert resumed.returncode == 0, err.decode()
    finally:
        workers.terminate()
        workers.wait(timeout=60)
    after = _rows(store)
    # every result finished before the kill is still there, unchanged
    assert {n: after[n] for n in done_before} == done_before
    study = load_study(store)
    assert _states(study) == {"COMPLETE": 30}
    assert [t.number for t in study.trials] == list(range(30))


def test_ctrl_c_interrupts_running_trials_and_the_study_resumes(client, tmp_path):
    def ctrl_c(study, trial):
        if trial.number == 4:
            raise KeyboardInterrupt

    study = Study(SPACE, storage=tmp_path / "s.db", random_state=0)
    with pytest.raises(KeyboardInterrupt):
        study.optimize(objectives.nap, 20, client=client, callbacks=[ctrl_c])
    interrupted = [t for t in study.trials if t.state is TrialState.INTERRUPTED]
    assert interrupted  # the other three workers were busy
    assert not [t for t in study.trials if t.state is TrialState.RUNNING]

    resumed = load_study(tmp_path / "s.db")
    assert [t.state for t in resumed.trials] == [t.state for t in study.trials]
    resumed.optimize(objectives.nap, len(interrupted), client=client, progress=False)
    again = {t.number: t for t in resumed.trials}
    for t in interrupted:  # run again first, under their own numbers and points
        assert again[t.number].state is TrialState.COMPLETE
        assert again[t.number].params == t.params


# -- the scheduler goes away ---------------------------------------------------------------


@pytest.mark.slow
def test_a_lost_scheduler_stops_the_driver_with_a_clear_error(client, tmp_path):
    address, process = start_dask_scheduler()
    workers = start_dask_workers(address, 2)
    try:

        def kill_scheduler(study, trial):
            if _states(study).get("COMPLETE") == 4:
                process.kill()

        study = Study(SPACE, storage=tmp_path / "s.db", random_state=0)
        with Client(address, timeout=60) as remote:
            remote.wait_for_workers(2, timeout=120)
            started = time.monotonic()
            with pytest.raises(SchedulerLostError, match=address):
                study.optimize(
                    objectives.nap,
                    20,
                    client=remote,
                    callbacks=[kill_scheduler],
                    progress=False,
                )
            assert time.monotonic() - started < 60
    finally:
        process.kill()
        workers.kill()
        workers.wait()
    states = _states(load_study(tmp_path / "s.db"))
    assert states["COMPLETE"] >= 4
    assert "RUNNING" not in states
    # ... and the study resumes on another cluster
    resumed = load_study(tmp_path / "s.db")
    resumed.optimize(objectives.nap, 4, client=client, progress=False)
    assert "INTERRUPTED" not in _states(resumed)


# -- hung and failing trials ---------------------------------------------------------------


def test_a_hung_trial_is_stopped_at_trial_timeout_and_its_slot_reused(client):
    study = Study(SPACE, objective_key="loss", random_state=3, n_initial_points=10)
    pids = set(client.run(os.getpid).values())
    started = time.monotonic()
    study.optimize(objectives.hangs_below, 10, client=client, trial_timeout=3, progress=False)
    assert time.monotonic() - started < 45  # not 60 s per hung trial
    hung = [t for t in study.trials if t.params["x"] < 0.3]
    assert hung, "no point landed where the objective hangs; change the seed"
    for t in hung:
        assert t.state is TrialState.FAILED
        assert "TrialTimeout" in t.error
        assert t.duration < 10
    rest = [t for t in study.trials if t.params["x"] >= 0.3]
    assert all(t.state is TrialState.COMPLETE for t in rest)
    # each ran in a child process of its worker; the workers themselves live on
    assert not {t.metrics["pid"] for t in rest} & pids
    assert set(client.run(os.getpid).values()) == pids


def test_isolated_trials_each_run_in_a_fresh_process(client):
    study = Study(SPACE, objective_key="loss", random_state=0)
    study.optimize(
        lambda x: objectives.hangs_below(0.3 + 0.7 * x),
        6,
        client=client,
        isolate=True,
        progress=False,
    )
    pids = [t.metrics["pid"] for t in study.trials]
    assert len(set(pids)) == 6
    assert not set(pids) & set(client.run(os.getpid).values())


def test_consecutive_failures_stop_the_search_with_the_last_traceback(client, tmp_path):
    study = Study(SPACE, storage=tmp_path / "s.db", random_state=0)
    with pytest.raises(TooManyFailuresError, match=r"3 trials failed in a row") as info:
        study.optimize(
            objectives.always_fails, 50, client=client, max_consecutive_failures=3, progress=False
        )
    assert "RuntimeError: broken objective at x=" in str(info.value)
    assert "Traceback" in str(info.value)
    states = _states(load_study(tmp_path / "s.db"))
    assert states["FAILED"] >= 3
    assert sum(states.values()) < 10
    assert "RUNNING" not in states


def test_max_failures_counts_every_failure(client):
    # random points: half of them fail, never more than a few in a row
    study = Study(
        {"x": Real(0.0, 10.0)}, objective_key="val_loss", base_estimator="dummy", random_state=0
    )
    with pytest.raises(TooManyFailuresError, match=r"4 trials failed \(max_failures=4\)"):
        study.optimize(objectives.sometimes_bad, 60, client=client, max_failures=4, progress=False)
    assert _states(study)["FAILED"] >= 4


def test_failed_points_can_be_told_as_the_worst_value_seen(client, tmp_path):
    study = Study(
        {"x": Real(0.0, 10.0)},
        storage=tmp_path / "s.db",
        objective_key="val_loss",
        failure_value="worst",
        random_state=0,
        n_initial_points=8,
    )
    study.optimize(
        objectives.sometimes_bad, 16, client=client, max_consecutive_failures=None, progress=False
    )
    failed = [t for t in study.trials if t.state is TrialState.FAILED]
    assert failed
    # once a value has been seen, failed points are told too
    assert n_told(study) > len(study.trials) - len(failed)
    resumed = load_study(tmp_path / "s.db")
    assert resumed.failure_value == "worst"
    assert n_told(resumed) == len(study.trials)
    worst = max(t.value for t in study.trials if t.state is TrialState.COMPLETE)
    assert max(resumed.as_skopt_result().func_vals) == pytest.approx(worst)


@pytest.mark.parametrize(
    ("value", "error", "needle"),
    [("bad", TypeError, "failure_value='bad'"), (float("inf"), ValueError, "failure_value=inf")],
)
def test_bad_failure_values_are_refused(value, error, needle):
    with pytest.raises(error, match=needle):
        Study(SPACE, failure_value=value)


# -- two drivers, changed spaces -----------------------------------------------------------


def test_a_second_driver_on_a_running_study_is_refused(client, tmp_path):
    store = tmp_path / "s.db"
    first = Study(SPACE, name="shared", storage=store, random_state=0)
    second = Study(SPACE, name="shared", storage=store, random_state=1)
    refused: list[BaseException] = []

    def try_second(study, trial):
        if trial.number == 2 and not refused:
            try:
                second.optimize(objectives.nap, 5, client=client, progress=False)
            except StudyInUseError as exc:
                refused.append(exc)

    first.optimize(objectives.nap, 8, client=client, callbacks=[try_second], progress=False)
    assert refused
    assert f"{os.getpid()}" in str(refused[0])  # names the driver that holds it
    assert len(load_study(store, name="shared").trials) == 8
    # once the first driver is done, the study is free
    second.optimize(objectives.nap, 2, client=client, progress=False)
    assert len(load_study(store, name="shared").trials) == 10


def test_a_changed_space_is_refused_unless_allowed(tmp_path):
    store = tmp_path / "s.db"
    study = Study({"x": Real(0.0, 1.0)}, storage=store, random_state=0)
    for x in (0.2, 0.9):
        trial = study.ask()
        study.tell(trial, x)
    points = [t.params["x"] for t in study.trials]
    with pytest.raises(ValueError, match="allow_space_change=True"):
        Study({"x": Real(0.0, 0.5)}, storage=store)
    wider = Study({"x": Real(0.0, 0.5)}, storage=store, allow_space_change=True)
    inside = [x for x in points if x <= 0.5]
    assert n_told(wider) == len(inside)
    assert len(wider.trials) == 2  # nothing recorded is lost
    assert load_study(store).space == wider.space


# -- reproducibility and security ----------------------------------------------------------


def test_sequential_evaluation_with_a_seed_gives_the_same_points(tmp_path):
    def points(path):
        study = Study(SPACE, storage=path, random_state=7, n_initial_points=4)
        for _ in range(8):
            trial = study.ask()
            study.tell(trial, (trial.params["x"] - 0.3) ** 2)
        return [t.params for t in study.trials]

    assert points(tmp_path / "a.db") == points(tmp_path / "b.db")
    from dtune.storage import SQLiteStorage

    record = SQLiteStorage(tmp_path / "a.db").get_study("study")
    assert {"dtune", "scikit-optimize", "scikit-learn", "numpy"} <= set(record.versions)
    assert record.optimizer["random_state"] == 7
    assert record.optimizer["n_initial_points"] == 4


def test_a_tls_cluster_works_and_refuses_clients_without_certificates():
    security = Security.temporary()  # a CA and certificates made for this test
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=":0",
            security=security,
            protocol="tls://",
        ) as cluster,
        Client(cluster, security=security, set_as_default=False) as client,
    ):
        assert cluster.scheduler_address.startswith("tls://127.0.0.1")
        study = Study(SPACE, random_state=0)
        study.optimize(objectives.nap, 4, client=client, progress=False)
        assert _states(study) == {"COMPLETE": 4}
        # Connecting at the comm level: no Client event-loop machinery in the way.
        address = cluster.scheduler_address

        async def attempt(**connection_args):
            comm = await connect(address, timeout=3, **connection_args)
            await comm.close()

        with pytest.raises(TypeError, match="TLS"):  # no certificates at all
            asyncio.run(attempt())
        stranger = Security.temporary()  # certificates from another authority
        with pytest.raises((OSError, TimeoutError)):
            asyncio.run(attempt(**stranger.get_connection_args("client")))
        asyncio.run(attempt(**security.get_connection_args("client")))  # the right ones work


def test_the_embedded_cluster_listens_on_localhost_only():
    seen = []

    def where(study, trial):
        from distributed import default_client

        c = default_client()
        seen.append((c.scheduler.address, c.dashboard_link))

    Study(SPACE).optimize(objectives.nap, 2, n_workers=1, callbacks=[where], progress=False)
    scheduler, dashboard = seen[0]
    assert scheduler.startswith("tcp://127.0.0.1:")
    assert dashboard.startswith("http://127.0.0.1:")


def test_racing_drivers_claim_a_study_once(tmp_path):
    """Claims are one transaction each: of many drivers racing for a study, one wins."""
    from dtune.storage import SQLiteStorage

    path = tmp_path / "s.db"
    SQLiteStorage(path)
    winners = []

    def race(i):
        if SQLiteStorage(path).claim("s", f"host{i}:{i}:x", stale_after=30) is None:
            winners.append(i)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1


# -- the suggestion process ----------------------------------------------------------------

_SEARCH_SCRIPT = """
import logging, time
import dtune
from dtune import Real

logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
logging.getLogger("distributed").setLevel(logging.WARNING)


def objective(x, y):
    time.sleep(0.1)
    return (x - 0.3) ** 2 + (y - 0.7) ** 2


study = dtune.Study({"x": Real(0.0, 1.0), "y": Real(0.0, 1.0)}, storage=STORE,
                    random_state=0, n_initial_points=4)
study.optimize(objective, 24, client=ADDRESS, progress=False)
points = {tuple(t.params.values()) for t in study.trials}
print("DONE", len(study.trials), len(points), flush=True)
print("FORKED", study._process.fork, flush=True)
"""


@pytest.mark.parametrize(
    "how", ["stdin", "-c", "script without a main guard", "stdin, started by path"]
)
def test_a_search_runs_from_stdin_c_or_an_unguarded_script_on_a_remote_cluster(
    how, scheduler, tmp_path
):
    """The suggestion process never imports or re-runs the driver's __main__, forked
    (the default on Linux) or started by path (elsewhere, and after a stuck fork)."""
    code = _SEARCH_SCRIPT.replace("STORE", repr(str(tmp_path / "s.db")))
    code = code.replace("ADDRESS", repr(scheduler))
    by_path = how.endswith("by path")
    if by_path:
        code = code.replace(
            "\nstudy = ",
            "\nimport dtune.suggest.process\ndtune.suggest.process._CAN_FORK = False\nstudy = ",
            1,
        )
    workers = start_dask_workers(scheduler, 3)
    try:
        with Client(scheduler, timeout=60) as client:
            client.wait_for_workers(3, timeout=120)
        if how.startswith("stdin"):
            command, stdin = [sys.executable, "-"], code
        elif how == "-c":
            command, stdin = [sys.executable, "-c", code], None
        else:
            (tmp_path / "search.py").write_text(code)
            command, stdin = [sys.executable, str(tmp_path / "search.py")], None
        done = subprocess.run(
            command, input=stdin, capture_output=True, text=True, timeout=300, cwd=tmp_path
        )
    finally:
        workers.terminate()
        workers.wait(timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "DONE 24 24" in done.stdout  # every trial, no point twice
    assert "Traceback" not in done.stderr
    assert "0 suggestion process restarts" in done.stderr  # the process served throughout
    assert f"FORKED {not by_path}" in done.stdout


def _suggestion_processes() -> list[int]:
    """This process's suggestion processes: forked ones (its own command line) and ones
    started by path."""
    import psutil

    me = psutil.Process()
    return [
        p.pid
        for p in me.children()
        if p.cmdline() == me.cmdline() or any("_server.py" in part for part in p.cmdline())
    ]


def test_a_killed_suggestion_process_does_not_stop_the_search(client, tmp_path, caplog):
    killed: list[int] = []
    # Studies of earlier tests may keep theirs until they are collected.
    others = set(_suggestion_processes())

    def kill_it(study, trial):
        if trial.number == 10 and not killed:
            (pid,) = set(_suggestion_processes()) - others
            os.kill(pid, signal.SIGKILL)  # what the OOM killer does
            killed.append(pid)

    study = Study(SPACE, storage=tmp_path / "s.db", random_state=0, n_initial_points=4)
    with caplog.at_level(logging.WARNING, logger="dtune"):
        study.optimize(objectives.nap, 40, client=client, callbacks=[kill_it], progress=False)
    assert killed
    assert _states(study) == {"COMPLETE": 40}
    assert len({t.params["x"] for t in study.trials}) == 40
    warnings = [r.getMessage() for r in caplog.records if "suggestion process" in r.getMessage()]
    assert len(warnings) == 1
    assert "killed by signal 9" in warnings[0]
    assert "starting a new one" in warnings[0]
    (replacement,) = set(_suggestion_processes()) - others  # kept for the next call
    assert replacement != killed[0]
    del study
    gc.collect()
    _wait_until(lambda: replacement not in _suggestion_processes(), timeout=10)


def test_on_a_warm_cluster_the_model_serves_from_the_first_point_after_the_initial_design(
    client, tmp_path, caplog
):
    """The suggestion process is forked from the driver, up in milliseconds: no point
    after the initial design is drawn without the model while it starts (started by
    path, it took 2-3 s, some 8-16 of 48 sub-second trials)."""
    study = Study(SPACE, storage=tmp_path / "s.db", random_state=0, n_initial_points=4)
    with caplog.at_level(logging.INFO, logger="dtune"):
        study.optimize(objectives.nap, 16, client=client, progress=False)
    (stats,) = [r.dtune_suggest for r in caplog.records if hasattr(r, "dtune_suggest")]
    assert stats["drawn_while_starting"] == 0, stats
    assert stats["asks"] >= 1, stats  # the process's batches served the search
    assert len({t.params["x"] for t in study.trials}) == 16


def test_the_forked_suggestion_process_holds_none_of_the_drivers_sockets(tmp_path):
    """The child lets go of every inherited descriptor: once the driver closes its
    cluster, the scheduler's port is closed, though the study keeps its process."""
    import socket

    import psutil

    study = Study(SPACE, storage=tmp_path / "s.db", random_state=0, n_initial_points=4)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        study.optimize(objectives.nap, 8, client=client, progress=False)
        host, port = cluster.scheduler_address.removeprefix("tcp://").rsplit(":", 1)
        assert study._process is not None
        pid = study._process.pid
        assert pid in _suggestion_processes()
    child = psutil.Process(pid)
    assert child.net_connections(kind="inet") == []  # no Dask comm, no listening port
    open_files = [f.path for f in child.open_files()]
    assert not any(path.endswith("s.db") for path in open_files), open_files
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=5).close()
    assert study._process.up  # and it still serves the study's next call


def test_a_second_optimize_call_is_served_by_the_process_the_first_one_started(
    client, tmp_path, caplog
):
    others = set(_suggestion_processes())  # kept by earlier tests' studies
    study = Study(SPACE, storage=tmp_path / "s.db", random_state=0, n_initial_points=4)
    study.optimize(objectives.nap, 16, client=client, progress=False)
    (first,) = set(_suggestion_processes()) - others
    # Started by path, a 1-second call could end before the process was up; the second
    # call is the one this test is about.
    _wait_until(lambda: study._process is not None and study._process.up, timeout=60)
    with caplog.at_level(logging.INFO, logger="dtune"):
        study.optimize(objectives.nap, 16, client=client, progress=False)
    assert set(_suggestion_processes()) - others == {first}
    (stats,) = [r.dtune_suggest for r in caplog.records if hasattr(r, "dtune_suggest")]
    # The process was up from the call's start: the driver waited for its answer before
    # it drew a point itself (it waits for none while a process starts). It draws one
    # only when an answer takes longer than that 1 s wait: here usually ~20 ms, but a
    # loaded 2-core CI machine has taken longer than this whole 1-second call.
    assert stats["drawn_in_driver"] == 0 or stats["waits"] >= 1, stats
    assert len({t.params["x"] for t in study.trials}) == 32


# -- early stopping under faults ---------------------------------------------------------------

_PRUNING_DRIVER = """
import faulthandler
import functools
import signal
import sys
faulthandler.register(signal.SIGUSR1)  # the test asks for the stacks if the driver hangs
import dtune
from tests import objectives

study = dtune.Study({"x": dtune.Real(0.0, 1.0)}, storage=sys.argv[2], random_state=0,
                    n_initial_points=6, pruner=dtune.ASHA(1, 9, 3))
objective = functools.partial(objectives.learning_curve, nap=0.1)
study.optimize(objective, int(sys.argv[3]), client=sys.argv[1], progress=False)
"""


@pytest.mark.slow
def test_a_worker_and_the_driver_killed_mid_rung_lose_no_report(scheduler, tmp_path):
    store = tmp_path / "s.db"
    script = tmp_path / "driver.py"
    script.write_text(_PRUNING_DRIVER)

    def driver(trials: int) -> subprocess.Popen[bytes]:
        return _driver(script, scheduler, store, trials)

    def reports() -> dict[int, list[tuple]]:
        return _stored_reports(store)

    def ended() -> int:
        try:
            return sum(r[3] in ("COMPLETE", "PRUNED", "FAILED") for r in _rows(store).values())
        except sqlite3.OperationalError:
            return 0

    workers = start_dask_workers(scheduler, 3)
    try:
        with Client(scheduler, timeout=60) as client:
            client.wait_for_workers(3, timeout=120)
            first = driver(40)
            # kill -9 a worker while its trial is between rungs (its Nanny restarts it)
            _wait_until(lambda: ended() >= 4)
            os.kill(next(iter(client.run(os.getpid).values())), signal.SIGKILL)

            # kill -9 the driver while trials run and have reported
            def mid_rung() -> bool:
                return first.poll() is not None or (
                    ended() >= 12
                    and any(r[3] == "RUNNING" and reports().get(n) for n, r in _rows(store).items())
                )

            try:
                _wait_until(mid_rung)
            except AssertionError:
                first.send_signal(signal.SIGUSR1)  # its threads' stacks, to stderr
                time.sleep(2)
            if first.poll() is not None or not mid_rung():
                first.kill()
                states = [r[3] for r in _rows(store).values()]
                raise AssertionError(
                    f"never mid-rung; trials {states}, reports of {sorted(reports())}; the "
                    f"driver (exit status {first.wait()}) said:\n"
                    f"{first.stderr.read().decode()[-12000:]}"
                )
            first.kill()
            first.wait()
            before_rows, before_reports = _rows(store), reports()
            done = {n for n, r in before_rows.items() if r[3] in ("COMPLETE", "PRUNED")}
            assert any(r[3] == "RUNNING" for r in before_rows.values())

            client.wait_for_workers(3, timeout=120)
            resumed = driver(40 - len(done))
            _, err = resumed.communicate(timeout=300)
            assert resumed.returncode == 0, err.decode()
    finally:
        workers.terminate()
        workers.wait(timeout=60)
    after_rows, after_reports = _rows(store), reports()
    # every trial that ended before the kill, and its reports, are there unchanged
    assert {n: after_rows[n] for n in done} == {n: before_rows[n] for n in done}
    assert {n: after_reports.get(n) for n in done} == {n: before_reports.get(n) for n in done}
    study = load_study(store)
    assert len(study.trials) == 40
    states = _states(study)
    assert set(states) <= {"COMPLETE", "PRUNED", "FAILED"}, states
    assert states.get("PRUNED", 0) > 0
    for t in study.trials:  # rerun trials started again from step 1: no gaps, no repeats
        if t.state is not TrialState.FAILED:
            assert list(t.intermediate) == list(range(1, t.last_step + 1))


_RESUMING_DRIVER = """
import functools
import sys
import dtune
from tests import objectives

study = dtune.Study({"x": dtune.Real(0.0, 1.0)}, name="ckpt", storage=sys.argv[2],
                    objective_key="value",
                    random_state=0, n_initial_points=6, pruner=dtune.ASHA(1, 9, 3))
objective = functools.partial(objectives.resumable_curve, folder=sys.argv[4], nap=0.15)
study.optimize(objective, int(sys.argv[3]), client=sys.argv[1], progress=False)
"""


@pytest.mark.slow
def test_trials_running_when_the_driver_is_killed_resume_from_their_checkpoints(
    scheduler, tmp_path
):
    store, folder, script = tmp_path / "s.db", tmp_path / "checkpoints", tmp_path / "driver.py"
    folder.mkdir()
    script.write_text(_RESUMING_DRIVER)

    def driver(trials: int) -> subprocess.Popen[bytes]:
        return _driver(script, scheduler, store, trials, folder)

    def reports() -> dict[int, list[tuple]]:
        return _stored_reports(store)

    def states() -> dict[int, str]:
        try:
            return {n: r[3] for n, r in _rows(store).items()}
        except sqlite3.OperationalError:
            return {}

    def well_into_a_run() -> bool:  # a running trial has saved a checkpoint past step 1
        found = reports()
        return first.poll() is not None or any(
            state == "RUNNING" and len(found.get(n, ())) >= 2 for n, state in states().items()
        )

    workers = start_dask_workers(scheduler, 3)
    try:
        with Client(scheduler, timeout=60) as client:
            client.wait_for_workers(3, timeout=120)
            first = driver(16)
            _wait_until(lambda: sum(s in ("COMPLETE", "PRUNED") for s in states().values()) >= 3)
            _wait_until(well_into_a_run)
            assert first.poll() is None, first.stderr.read().decode()[-4000:]
            first.kill()
            first.wait()
            before, running = reports(), [n for n, s in states().items() if s == "RUNNING"]
            resumable = [n for n in running if len(before.get(n, ())) >= 2]
            assert resumable
            done = sum(s in ("COMPLETE", "PRUNED", "FAILED") for s in states().values())
            resumed = driver(16 - done)
            _, err = resumed.communicate(timeout=300)
            assert resumed.returncode == 0, err.decode()
    finally:
        workers.terminate()
        workers.wait(timeout=60)
    after = reports()
    study = load_study(store, "ckpt")
    assert len(study.trials) == 16
    assert set(_states(study)) <= {"COMPLETE", "PRUNED"}, _states(study)
    abandoned = {p.name.split("-abandoned-at-")[0] for p in folder.glob("*-abandoned-at-*")}
    for n in running:
        trial = study.trials[n]
        if before.get(n) and before[n][-1][0] < 9:
            # the killed driver's run of it stopped at its next report, told it was abandoned
            assert f"ckpt-{n}" in abandoned
        steps = [step for step, *_ in after[n]]
        assert steps == sorted(set(steps)), steps  # no step twice
        if n in resumable:
            # Resumed, not rerun: its first reports are the earlier run's, to the time.
            assert after[n][0] == before[n][0]
            assert trial.last_step > before[n][0][0]
            if trial.state is TrialState.COMPLETE:
                assert 1 <= trial.metrics["resumed_from"] <= len(before[n]) + 1
    # every trial ended, so every checkpoint went with it (the marks stay)
    assert [p.name for p in folder.iterdir() if "-abandoned-at-" not in p.name] == []
