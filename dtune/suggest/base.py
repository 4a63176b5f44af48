"""The suggester interface: where the search loop gets its points.

A suggester holds the optimizer copies (the initial design's included);
the loop only asks it for points. It listens to the :class:`~dtune.ledger.Ledger`, so it
is told of every trial that starts or ends the moment the store has it.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dtune.ledger import ModelState
from dtune.optimizer import Point

__all__ = ["Suggester"]


class Suggester(abc.ABC):
    """Points for free slots, accounting for every running trial.

    :meth:`start` starts whatever it runs (a process) if it is not running, and
    :meth:`close` stops it; as a context manager it does both. Used from the thread that
    runs the search (the ledger tells it under its lock).
    """

    @abc.abstractmethod
    def suggest(self, free: int = 1, while_waiting: Callable[[], None] | None = None) -> Point:
        """A point for a free slot; ``free`` slots are free now (a batch may be made for
        all of them at once). A suggester that waits for its point (from a process)
        calls ``while_waiting`` every few milliseconds meanwhile: the driver answers its
        trials' reports there."""

    def ready_now(self) -> bool:
        """Whether :meth:`suggest` would answer without waiting."""
        return True

    @abc.abstractmethod
    def started(self, number: int, point: Point) -> None:
        """Trial ``number`` now runs at ``point``."""

    @abc.abstractmethod
    def finished(
        self,
        results: Sequence[tuple[int, Point, float | None]],
        noise: Mapping[int, float] | None = None,
    ) -> None:
        """Trials ended; a value (to minimize) is told to the model, None is not.
        ``noise``: by trial number, an estimated value's own noise variance."""

    @abc.abstractmethod
    def observed(self, results: Sequence[tuple[Point, float]]) -> None:
        """Results of trials that still run (points with their resource, for a joint
        model), told to the model; the trials stay pending."""

    @abc.abstractmethod
    def retold(self, results: Sequence[tuple[Point, float, float]], refit: bool = True) -> None:
        """Values told before for these points replaced by these (point, value, its own
        noise variance): a promoted trial's estimate by what it did next, or a running
        trial's by its next rung's; ``refit``: a refit of the kernel is due."""

    @abc.abstractmethod
    def reset(self, state: ModelState) -> None:
        """Start over from ``state``."""

    def set_slots(self, slots: int) -> None:  # noqa: B027 (a hint some suggesters ignore)
        """How many trials run at once (suggesters that compute ahead keep more ready)."""

    def set_patience(self, seconds: float) -> None:  # noqa: B027 (a hint, as set_slots)
        """How long a free slot may wait for a model point (from a process) before a
        point without the model is handed out instead."""

    def summary(self) -> dict[str, Any]:
        """Figures about the suggestions made since the last summary (the driver's log)."""
        return {}

    def start(self) -> None:  # noqa: B027 (suggesters without a process need nothing)
        """Start serving, if not serving already."""

    def close(self) -> None:  # noqa: B027
        """Stop serving and release what it holds."""

    def __enter__(self) -> Suggester:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
