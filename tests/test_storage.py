"""One conformance suite for every store, plus what only SQLite files promise."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from dtune import InMemoryStorage, Report, SQLiteStorage, StorageError, Trial, TrialState
from dtune.storage import StudyRecord, open_storage
from dtune.storage.sqlite import SCHEMA_VERSION


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    if request.param == "memory":
        return InMemoryStorage()
    return SQLiteStorage(tmp_path / "s.db")


def _record(name="s"):
    return StudyRecord(name, "minimize", None, {"x": {"type": "Real"}}, {"liar": "cl_min"}, 1.0)


def test_studies_are_created_once_and_listed(store):
    store.create_study(_record("a"))
    store.create_study(_record("b"))
    assert store.study_names() == ["a", "b"]
    assert store.get_study("a") == _record("a")
    assert store.get_study("missing") is None
    with pytest.raises(ValueError, match="'a' already exists"):
        store.create_study(_record("a"))


def test_trials_round_trip_and_are_replaced_by_number(store):
    store.create_study(_record())
    running = Trial(0, TrialState.RUNNING, {"x": 1.5, "act": "relu"}, submitted=5.0)
    store.put_trial("s", running)
    done = Trial(
        0,
        TrialState.COMPLETE,
        {"x": 1.5, "act": "relu"},
        value=0.25,
        metrics={"acc": 0.9, "curve": [1, 2]},
        worker="w1",
        host="h",
        device="0",
        submitted=5.0,
        started=6.0,
        finished=7.5,
    )
    failed = Trial(1, TrialState.FAILED, {"x": 2.0, "act": "tanh"}, error="Traceback ...")
    paused = Trial(2, TrialState.PAUSED, {"x": 0.5, "act": "relu"}, value=0.5, started=8.0,
                   finished=9.0, earlier_s=3.25)  # fmt: skip
    store.put_trials("s", [done, failed, paused])
    assert store.get_trials("s") == [done, failed, paused]
    assert store.get_trials("s")[2].duration == 4.25  # its last run and those before


def test_a_trials_reports_are_forgotten_from_a_step_on(store):
    store.create_study(_record())
    store.put_trial("s", Trial(0, TrialState.RUNNING, {"x": 1.5}))
    store.put_reports("s", 0, [Report(step, 1.0 / step, {"lr": 0.1}, 9.0) for step in (1, 2, 3, 5)])
    store.delete_reports("s", 0, from_step=3)  # a run resumed from its checkpoint at 2
    assert store.get_trials("s")[0].reports == (
        Report(1, 1.0, {"lr": 0.1}, 9.0),
        Report(2, 0.5, {"lr": 0.1}, 9.0),
    )
    store.delete_reports("s", 0)  # a run from the start
    assert store.get_trials("s")[0].reports == ()


def test_trials_of_studies_sharing_a_store_stay_apart(store):
    store.create_study(_record("a"))
    store.create_study(_record("b"))
    store.put_trial("a", Trial(0, TrialState.RUNNING, {"x": 1.0}))
    assert store.get_trials("b") == []


def test_sqlite_store_is_in_wal_mode_and_readable_from_another_process(tmp_path):
    path = tmp_path / "s.db"
    store = SQLiteStorage(path)
    store.create_study(_record())
    store.put_trial("s", Trial(0, TrialState.COMPLETE, {"x": 1.0}, value=3.0))
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    code = (
        "from dtune.storage import SQLiteStorage; "
        f"print(SQLiteStorage({str(path)!r}).get_trials('s')[0].value)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "3.0"


def test_bad_store_paths_are_refused_clearly(tmp_path):
    with pytest.raises(StorageError, match="does not exist"):
        SQLiteStorage(tmp_path / "no" / "such" / "dir.db")
    with pytest.raises(StorageError, match="is a folder"):
        SQLiteStorage(tmp_path)
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("hello, this is not a database " * 100)
    with pytest.raises(StorageError, match="cannot open store"):
        SQLiteStorage(not_sqlite)
    with pytest.raises(TypeError, match="storage=42"):
        open_storage(42)


def test_one_driver_at_a_time_claims_a_study(store):
    import os
    import socket

    store.create_study(_record())
    assert store.claim("s", "elsewhere:1:a", stale_after=30) is None
    assert store.claim("s", "elsewhere:1:a", stale_after=30) is None  # renewal
    assert store.claim("s", "elsewhere:2:b", stale_after=30) == "elsewhere:1:a"
    store.release("s", "elsewhere:2:b")  # not its claim: nothing happens
    assert store.claim("s", "elsewhere:2:b", stale_after=30) == "elsewhere:1:a"
    store.release("s", "elsewhere:1:a")
    assert store.claim("s", "elsewhere:2:b", stale_after=30) is None
    # a claim not renewed within stale_after is taken over
    assert store.claim("s", "elsewhere:3:c", stale_after=0.0) is None
    # so is one by a process on this host that no longer exists
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    host = socket.gethostname()
    assert store.claim("s", f"{host}:{dead}:d", stale_after=0.0) is None
    assert store.claim("s", f"{host}:{os.getpid()}:e", stale_after=30) is None
    assert store.claim("s", f"{host}:{os.getpid()}:f", stale_after=30) == f"{host}:{os.getpid()}:e"


def test_a_version_1_file_is_migrated_and_keeps_its_trials(tmp_path):
    """Files the first release wrote (schema 1) open, gain the drivers table, keep data."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE studies (name TEXT PRIMARY KEY, direction TEXT NOT NULL, "
            "objective_key TEXT, space TEXT NOT NULL, optimizer TEXT NOT NULL, "
            "created REAL NOT NULL, versions TEXT NOT NULL)"
        )
        conn.execute(
            "CREATE TABLE trials (study TEXT NOT NULL, number INTEGER NOT NULL, state TEXT "
            "NOT NULL, params TEXT NOT NULL, value REAL, metrics TEXT NOT NULL, worker TEXT, "
            "host TEXT, device TEXT, submitted REAL, started REAL, finished REAL, error TEXT, "
            "PRIMARY KEY (study, number))"
        )
        conn.execute("INSERT INTO studies VALUES ('s', 'minimize', NULL, '{}', '{}', 1.0, '{}')")
        conn.execute(
            "INSERT INTO trials VALUES ('s', 0, 'COMPLETE', '{\"x\": 1}', 0.5, '{}', "
            "NULL, NULL, NULL, 1.0, 2.0, 3.0, NULL)"
        )
        conn.execute("PRAGMA user_version=1")
    store = SQLiteStorage(path)
    assert store.get_trials("s")[0].value == 0.5
    assert store.get_trials("s")[0].earlier_s == 0.0  # a column version 4 added
    assert store.claim("s", "host:1:x", stale_after=30.0) is None
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
