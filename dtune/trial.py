"""The record of one evaluation of the objective: :class:`Trial`, :class:`TrialState`,
and the intermediate results it reported (:class:`Report`)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Report", "Trial", "TrialState"]


class TrialState(str, enum.Enum):
    """Where a trial stands.

    ``RUNNING`` trials have been handed to a worker; ``COMPLETE`` ones returned a value
    the optimizer was told; ``PRUNED`` ones were stopped early by the study's pruner
    (their value is the last one they reported); ``PAUSED`` ones were stopped at a rung
    by a promotion-type :class:`~dtune.ASHA` and go on from there if they rank high
    enough (their value is the last one they reported); ``FAILED`` ones raised or
    returned something unusable (see :attr:`Trial.error`); ``INTERRUPTED`` ones were
    running when their driver stopped, and their points are evaluated again first when
    the study resumes.
    """

    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    PRUNED = "PRUNED"
    PAUSED = "PAUSED"
    FAILED = "FAILED"
    INTERRUPTED = "INTERRUPTED"

    def is_finished(self) -> bool:
        """True for COMPLETE, PRUNED and FAILED: states that will not change any more (an
        INTERRUPTED trial runs again when its study resumes, a PAUSED one when it is
        promoted)."""
        return self in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAILED)

    def is_stopped_early(self) -> bool:
        """True for PRUNED and PAUSED: stopped at a rung, their value an early one."""
        return self in (TrialState.PRUNED, TrialState.PAUSED)


@dataclass(frozen=True)
class Report:
    """An intermediate result a running trial reported with :func:`dtune.report`: its
    objective ``value`` after ``step`` units of resource (epochs, say), other metrics,
    and when (UNIX time, on the driver)."""

    step: int
    value: float
    metrics: dict[str, Any] = field(default_factory=dict)
    time: float | None = None


@dataclass(frozen=True)
class Trial:
    """One evaluation of the objective. Immutable: a finished trial is a new record.

    Times are UNIX timestamps; ``started`` and ``finished`` are taken on the worker
    around the objective call (its last run's), ``submitted`` on the driver.
    ``earlier_s`` holds the seconds of the runs before that one (a trial that a
    promotion-type ASHA paused and promoted runs again from where it paused).

    Examples
    --------
    >>> t = Trial(number=0, state=TrialState.COMPLETE, params={"x": 1.5}, value=0.25,
    ...           started=10.0, finished=12.5)
    >>> t.duration
    2.5
    """

    number: int
    state: TrialState
    params: dict[str, Any]
    value: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    worker: str | None = None
    host: str | None = None
    device: str | None = None
    submitted: float | None = None
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    reports: tuple[Report, ...] = ()
    earlier_s: float = 0.0

    @property
    def duration(self) -> float | None:
        """Seconds the objective ran, in all the trial's runs, or None if the trial has
        not finished on a worker."""
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started + self.earlier_s

    @property
    def intermediate(self) -> dict[int, float]:
        """The values the trial reported, by step."""
        return {r.step: r.value for r in self.reports}

    @property
    def last_step(self) -> int | None:
        """The last step the trial reported, or None if it reported none."""
        return self.reports[-1].step if self.reports else None
