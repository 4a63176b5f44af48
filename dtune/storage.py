"""Where studies and trials live: a SQLite file (durable, shared between processes) or
memory (tests and throwaway runs). The store is the record of truth; the optimizer is
rebuilt from it.

Both stores are safe to call from several threads of one process. A SQLite file may be
read by other processes (the dashboard, ``dtune show``) while a driver writes to it: it
runs in WAL mode, and every write is one committed, synced transaction.
"""

from __future__ import annotations

import abc
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dtune.exceptions import StorageError
from dtune.trial import Trial, TrialState

__all__ = [
    "BaseStorage",
    "InMemoryStorage",
    "SQLiteStorage",
    "StudyRecord",
    "driver_owner",
    "open_storage",
]

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class StudyRecord:
    """What a store keeps about a study besides its trials."""

    name: str
    direction: str
    objective_key: str | None
    space: dict[str, Any]
    optimizer: dict[str, Any]
    created: float
    versions: dict[str, str] = field(default_factory=dict)


class BaseStorage(abc.ABC):
    """The interface every store implements; one conformance suite tests them all."""

    @abc.abstractmethod
    def create_study(self, record: StudyRecord) -> None:
        """Add a study; ``ValueError`` if one of that name exists."""

    @abc.abstractmethod
    def update_study(self, record: StudyRecord) -> None:
        """Replace the record of an existing study (its trials stay as they are)."""

    @abc.abstractmethod
    def get_study(self, name: str) -> StudyRecord | None:
        """The study of that name, or None."""

    @abc.abstractmethod
    def study_names(self) -> list[str]:
        """Names of all studies in the store, oldest first."""

    @abc.abstractmethod
    def put_trials(self, study: str, trials: Iterable[Trial]) -> None:
        """Insert or replace trials (by number) in one transaction, committed on return."""

    @abc.abstractmethod
    def get_trials(self, study: str, from_number: int = 0) -> list[Trial]:
        """The trials of a study numbered ``from_number`` or more, by number (a reader
        that polls asks only for what may have changed since it last looked)."""

    def put_trial(self, study: str, trial: Trial) -> None:
        """Insert or replace one trial, committed on return."""
        self.put_trials(study, [trial])

    @abc.abstractmethod
    def claim(self, study: str, owner: str, stale_after: float) -> str | None:
        """Make ``owner`` the one driver of ``study``, or renew its claim.

        Returns None on success, or the other owner when a live driver holds the study:
        one that renewed its claim within ``stale_after`` seconds and, on this host, whose
        process still exists.
        """

    @abc.abstractmethod
    def release(self, study: str, owner: str) -> None:
        """Drop ``owner``'s claim on ``study`` (nothing if it holds none)."""

    def close(self) -> None:  # noqa: B027 (stores without resources need nothing)
        """Release the store's resources."""


def driver_owner() -> str:
    """This driver's name in claims: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


def _holds(owner: str, heartbeat: float, stale_after: float) -> bool:
    """Whether a claim by ``owner`` renewed at ``heartbeat`` is still live."""
    if time.time() - heartbeat > stale_after:
        return False
    host, pid, _ = owner.rsplit(":", 2)
    if host == socket.gethostname():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False  # a driver on this host that died (kill -9, a crashed kernel)
        except PermissionError:
            return True
    return True


class InMemoryStorage(BaseStorage):
    """A store that lives as long as the process: for tests and throwaway searches."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._studies: dict[str, StudyRecord] = {}
        self._trials: dict[str, dict[int, Trial]] = {}
        self._claims: dict[str, tuple[str, float]] = {}

    def __repr__(self) -> str:
        return "InMemoryStorage()"

    def create_study(self, record: StudyRecord) -> None:
        with self._lock:
            if record.name in self._studies:
                raise ValueError(f"a study named {record.name!r} already exists")
            self._studies[record.name] = record
            self._trials[record.name] = {}

    def update_study(self, record: StudyRecord) -> None:
        with self._lock:
            if record.name not in self._studies:
                raise ValueError(f"no study named {record.name!r}")
            self._studies[record.name] = record

    def get_study(self, name: str) -> StudyRecord | None:
        with self._lock:
            return self._studies.get(name)

    def study_names(self) -> list[str]:
        with self._lock:
            return list(self._studies)

    def put_trials(self, study: str, trials: Iterable[Trial]) -> None:
        with self._lock:
            table = self._trials[study]
            for trial in trials:
                # Own copies, so a caller mutating its dicts cannot rewrite history.
                table[trial.number] = replace(
                    trial, params=dict(trial.params), metrics=dict(trial.metrics)
                )

    def get_trials(self, study: str, from_number: int = 0) -> list[Trial]:
        with self._lock:
            table = self._trials.get(study, {})
            return [table[n] for n in sorted(table) if n >= from_number]

    def claim(self, study: str, owner: str, stale_after: float) -> str | None:
        with self._lock:
            holder = self._claims.get(study)
            if holder and holder[0] != owner and _holds(*holder, stale_after):
                return holder[0]
            self._claims[study] = (owner, time.time())
            return None

    def release(self, study: str, owner: str) -> None:
        with self._lock:
            if self._claims.get(study, ("",))[0] == owner:
                del self._claims[study]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    name TEXT PRIMARY KEY,
    direction TEXT NOT NULL,
    objective_key TEXT,
    space TEXT NOT NULL,
    optimizer TEXT NOT NULL,
    created REAL NOT NULL,
    versions TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS trials (
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
);
"""
# Added after schema version 1 shipped; created in older files when they are opened.
_DRIVERS_TABLE = """
CREATE TABLE IF NOT EXISTS drivers (
    study TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    heartbeat REAL NOT NULL
)
"""
_TRIAL_COLUMNS = (
    "number, state, params, value, metrics, worker, host, device, submitted, started, "
    "finished, error"
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
                if version == 0:
                    # One statement at a time: executescript() would commit early.
                    for statement in _SCHEMA.split(";"):
                        self._conn.execute(statement)
                self._conn.execute(_DRIVERS_TABLE)
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
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        return [_row_trial(r) for r in rows]

    def claim(self, study: str, owner: str, stale_after: float) -> str | None:
        try:
            with self._lock, self._transaction():
                row = self._conn.execute(
                    "SELECT owner, heartbeat FROM drivers WHERE study = ?", (study,)
                ).fetchone()
                if row and row[0] != owner and _holds(row[0], row[1], stale_after):
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
    )


def _row_trial(row: Sequence[Any]) -> Trial:
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
    )


def open_storage(storage: str | os.PathLike[str] | BaseStorage | None) -> BaseStorage:
    """A store for what a user passes as ``storage=``: None (memory), a path, or a store."""
    if storage is None:
        return InMemoryStorage()
    if isinstance(storage, BaseStorage):
        return storage
    if isinstance(storage, (str, os.PathLike)):
        return SQLiteStorage(storage)
    raise TypeError(
        f"storage={storage!r} is a {type(storage).__name__}; expected None, a file path "
        "or a dtune store"
    )
