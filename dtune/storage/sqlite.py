"""A SQLite file holding any number of studies: durable, and shared between processes.

Safe to call from several threads of one process. Other processes (the dashboard,
``dtune show``) may read the file while a driver writes to it: it runs in WAL mode, and
every write is one committed, synced transaction.

The schema is versioned (``PRAGMA user_version``) and migrated forward when a file is
opened: each entry of ``_MIGRATIONS`` takes a file from one version to the next.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dtune.exceptions import StorageError
from dtune.storage.base import BaseStorage, StudyRecord, claim_is_live
from dtune.trial import Report, Trial, TrialState

__all__ = ["SCHEMA_VERSION", "SQLiteStorage"]

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # version 1: studies and their trials
    (
        """CREATE TABLE IF NOT EXISTS studies (
            name TEXT PRIMARY KEY,
            direction TEXT NOT NULL,
            objective_key TEXT,
            space TEXT NOT NULL,
            optimizer TEXT NOT NULL,
            created REAL NOT NULL,
            versions TEXT NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS trials (
            study TEXT NOT NULL REFERENCES studies(name),
            number INTEGER NOT NULL,
            state TEXT NOT NULL,
            params TEXT NOT NULL,
            value REAL,
            metrics TEXT NOT NULL,
            worker TEXT,
            host TEXT,
            device TEXT,
            submitted REAL,
            started REAL,
            finished REAL,
            error TEXT,
            PRIMARY KEY (study, number)
        )""",
    ),
    # version 2: one driver per study. The first release created this table in
    # version-1 files when it opened them, hence IF NOT EXISTS.
    (
        """CREATE TABLE IF NOT EXISTS drivers (
            study TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            heartbeat REAL NOT NULL
        )""",
    ),
    # version 3: the intermediate results trials report (learning curves, pruning)
    (
        """CREATE TABLE IF NOT EXISTS reports (
            study TEXT NOT NULL,
            number INTEGER NOT NULL,
            step INTEGER NOT NULL,
            value REAL NOT NULL,
            metrics TEXT NOT NULL,
            time REAL,
            PRIMARY KEY (study, number, step)
        )""",
    ),
    # version 4: the seconds of a paused trial's earlier runs (promotion-type ASHA)
    ("ALTER TABLE trials ADD COLUMN earlier_s REAL NOT NULL DEFAULT 0",),
)
SCHEMA_VERSION = len(_MIGRATIONS)
_TRIAL_COLUMNS = (
    "number, state, params, value, metrics, worker, host, device, submitted, started, "
    "finished, error, earlier_s"
)


class SQLiteStorage(BaseStorage):
    """A SQLite file holding any number of studies.

    Parameters
    ----------
    path
        The file; created with its schema if missing. Its folder must exist.

    Examples
    --------
    >>> import tempfile, os
    >>> store = SQLiteStorage(os.path.join(tempfile.mkdtemp(), "s.db"))
    >>> store.study_names()
    []
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise StorageError(f"store path {str(self.path)!r} is a folder; give a file name")
        if not self.path.parent.is_dir():
            raise StorageError(
                f"cannot create store {str(self.path)!r}: folder {str(self.path.parent)!r} "
                "does not exist"
            )
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a trial the driver has told the optimizer survives a power cut too.
            self._conn.execute("PRAGMA synchronous=FULL")
            with self._transaction():
                version = self._conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise StorageError(
                        f"store {str(self.path)!r} has schema version {version}; this dtune "
                        f"reads up to {SCHEMA_VERSION}: upgrade dtune"
                    )
                # One statement at a time: executescript() would commit early.
                for statements in _MIGRATIONS[version:]:
                    for statement in statements:
                        self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open store {str(self.path)!r}: {exc}") from exc

    def __repr__(self) -> str:
        return f"SQLiteStorage({str(self.path)!r})"

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)

    def create_study(self, record: StudyRecord) -> None:
        self._write_study(record, exists=False)

    def update_study(self, record: StudyRecord) -> None:
        self._write_study(record, exists=True)

    def _write_study(self, record: StudyRecord, exists: bool) -> None:
        with self._lock, self._transaction():
            found = self._conn.execute(
                "SELECT 1 FROM studies WHERE name = ?", (record.name,)
            ).fetchone()
            if bool(found) != exists:
                state = "already exists" if found else "does not exist"
                raise ValueError(f"a study named {record.name!r} {state} in {self!r}")
            self._conn.execute(
                "INSERT OR REPLACE INTO studies VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record.name,
                    record.direction,
                    record.objective_key,
                    json.dumps(record.space),
                    json.dumps(record.optimizer),
                    record.created,
                    json.dumps(record.versions),
                ),
            )

    def get_study(self, name: str) -> StudyRecord | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT name, direction, objective_key, space, optimizer, created, versions "
                "FROM studies WHERE name = ?",
                (name,),
            ).fetchone()
        if row is None:
            return None
        return StudyRecord(
            name=row[0],
            direction=row[1],
            objective_key=row[2],
            space=json.loads(row[3]),
            optimizer=json.loads(row[4]),
            created=row[5],
            versions=json.loads(row[6]),
        )

    def study_names(self) -> list[str]:
        with self._lock:
            rows = self._conn.execute("SELECT name FROM studies ORDER BY created").fetchall()
        return [r[0] for r in rows]

    def put_trials(self, study: str, trials: Iterable[Trial]) -> None:
        rows = [_trial_row(study, t) for t in trials]
        try:
            with self._lock, self._transaction():
                self._conn.executemany(
                    f"INSERT OR REPLACE INTO trials (study, {_TRIAL_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
        except sqlite3.Error as exc:
            raise StorageError(f"cannot write trials to {self!r}: {exc}") from exc

    def get_trials(self, study: str, from_number: int = 0) -> list[Trial]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_TRIAL_COLUMNS} FROM trials WHERE study = ? AND number >= ? "
                "ORDER BY number",
                (study, from_number),
            ).fetchall()
            report_rows = self._conn.execute(
                "SELECT number, step, value, metrics, time FROM reports "
                "WHERE study = ? AND number >= ? ORDER BY number, step",
                (study, from_number),
            ).fetchall()
        reports: dict[int, list[Report]] = {}
        for number, step, value, metrics, at in report_rows:
            reports.setdefault(number, []).append(Report(step, value, json.loads(metrics), at))
        return [_row_trial(r, tuple(reports.get(r[0], ()))) for r in rows]

    def put_reports(self, study: str, number: int, reports: Iterable[Report]) -> None:
        self.put_many_reports(study, {number: list(reports)})

    def put_many_reports(self, study: str, reports: Mapping[int, Sequence[Report]]) -> None:
        rows = [
            (study, number, r.step, r.value, json.dumps(r.metrics), r.time)
            for number, added in reports.items()
            for r in added
        ]
        try:
            with self._lock, self._transaction():
                self._conn.executemany(
                    "INSERT OR REPLACE INTO reports VALUES (?, ?, ?, ?, ?, ?)", rows
                )
        except sqlite3.Error as exc:
            raise StorageError(f"cannot write reports to {self!r}: {exc}") from exc

    def delete_reports(self, study: str, number: int, from_step: int = 0) -> None:
        with self._lock, self._transaction():
            self._conn.execute(
                "DELETE FROM reports WHERE study = ? AND number = ? AND step >= ?",
                (study, number, from_step),
            )

    def claim(self, study: str, owner: str, stale_after: float) -> str | None:
        try:
            with self._lock, self._transaction():
                row = self._conn.execute(
                    "SELECT owner, heartbeat FROM drivers WHERE study = ?", (study,)
                ).fetchone()
                if row and row[0] != owner and claim_is_live(row[0], row[1], stale_after):
                    return str(row[0])
                self._conn.execute(
                    "INSERT OR REPLACE INTO drivers VALUES (?, ?, ?)", (study, owner, time.time())
                )
                return None
        except sqlite3.Error as exc:
            raise StorageError(f"cannot claim study {study!r} in {self!r}: {exc}") from exc

    def release(self, study: str, owner: str) -> None:
        with self._lock, self._transaction():
            self._conn.execute("DELETE FROM drivers WHERE study = ? AND owner = ?", (study, owner))

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, or ``ROLLBACK`` on error."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._conn.execute("ROLLBACK" if exc_type else "COMMIT")


def _trial_row(study: str, t: Trial) -> Sequence[Any]:
    return (
        study,
        t.number,
        t.state.value,
        json.dumps(t.params),
        t.value,
        json.dumps(t.metrics),
        t.worker,
        t.host,
        t.device,
        t.submitted,
        t.started,
        t.finished,
        t.error,
        t.earlier_s,
    )


def _row_trial(row: Sequence[Any], reports: tuple[Report, ...] = ()) -> Trial:
    return Trial(
        number=row[0],
        state=TrialState(row[1]),
        params=json.loads(row[2]),
        value=row[3],
        metrics=json.loads(row[4]),
        worker=row[5],
        host=row[6],
        device=row[7],
        submitted=row[8],
        started=row[9],
        finished=row[10],
        error=row[11],
        earlier_s=row[12],
        reports=reports,
    )
