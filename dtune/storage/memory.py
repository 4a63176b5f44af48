"""A store in memory, for tests and throwaway searches."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import replace

from dtune.storage.base import BaseStorage, StudyRecord, claim_is_live
from dtune.trial import Report, Trial

__all__ = ["InMemoryStorage"]


class InMemoryStorage(BaseStorage):
    """A store that lives as long as the process: for tests and throwaway searches.

    Examples
    --------
    >>> InMemoryStorage().study_names()
    []
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._studies: dict[str, StudyRecord] = {}
        self._trials: dict[str, dict[int, Trial]] = {}
        self._reports: dict[str, dict[int, dict[int, Report]]] = {}
        self._claims: dict[str, tuple[str, float]] = {}

    def __repr__(self) -> str:
        return "InMemoryStorage()"

    def create_study(self, record: StudyRecord) -> None:
        with self._lock:
            if record.name in self._studies:
                raise ValueError(f"a study named {record.name!r} already exists")
            self._studies[record.name] = record
            self._trials[record.name] = {}
            self._reports[record.name] = {}

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
            reports = self._reports.get(study, {})
            return [
                replace(table[n], reports=tuple(r for _, r in sorted(reports.get(n, {}).items())))
                for n in sorted(table)
                if n >= from_number
            ]

    def put_reports(self, study: str, number: int, reports: Iterable[Report]) -> None:
        with self._lock:
            table = self._reports[study].setdefault(number, {})
            for report in reports:
                table[report.step] = replace(report, metrics=dict(report.metrics))

    def delete_reports(self, study: str, number: int, from_step: int = 0) -> None:
        with self._lock:
            table = self._reports[study].get(number, {})
            for step in [s for s in table if s >= from_step]:
                del table[step]

    def claim(self, study: str, owner: str, stale_after: float) -> str | None:
        with self._lock:
            holder = self._claims.get(study)
            if holder and holder[0] != owner and claim_is_live(*holder, stale_after):
                return holder[0]
            self._claims[study] = (owner, time.time())
            return None

    def release(self, study: str, owner: str) -> None:
        with self._lock:
            if self._claims.get(study, ("",))[0] == owner:
                del self._claims[study]
