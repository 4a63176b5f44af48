"""The interface every store implements, and the study record it keeps besides trials."""

from __future__ import annotations

import abc
import os
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dtune.trial import Report, Trial

__all__ = ["BaseStorage", "StudyRecord", "claim_is_live", "driver_owner"]


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
    """The interface every store implements; one conformance suite tests them all.

    Every method is safe to call from several threads of one process.
    """

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
        """Insert or replace trials (by number) in one transaction, committed on return.
        Their reports are not written here (see :meth:`put_reports`)."""

    @abc.abstractmethod
    def get_trials(self, study: str, from_number: int = 0) -> list[Trial]:
        """The trials of a study numbered ``from_number`` or more, by number (a reader
        that polls asks only for what may have changed since it last looked)."""

    @abc.abstractmethod
    def put_reports(self, study: str, number: int, reports: Iterable[Report]) -> None:
        """Add trial ``number``'s intermediate reports (by step), committed on return.
        :meth:`get_trials` returns each trial with its reports, by step."""

    def put_many_reports(self, study: str, reports: Mapping[int, Sequence[Report]]) -> None:
        """Add several trials' reports (trial number → its new reports), committed on
        return; a store that can writes them in one transaction (one fsync)."""
        for number, added in reports.items():
            self.put_reports(study, number, added)

    @abc.abstractmethod
    def delete_reports(self, study: str, number: int, from_step: int = 0) -> None:
        """Forget trial ``number``'s reports at ``from_step`` and after (it runs again
        from there: from the start, or from a checkpoint)."""

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


def claim_is_live(owner: str, heartbeat: float, stale_after: float) -> bool:
    """Whether a claim by ``owner`` renewed at ``heartbeat`` still holds."""
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
