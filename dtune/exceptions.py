"""dtune's exceptions: one root, narrow subclasses.

Validation errors are plain ``ValueError``/``TypeError`` (they name the bad value);
the classes here are for conditions of a running search or a store.
"""

from __future__ import annotations

__all__ = [
    "DtuneError",
    "SchedulerLostError",
    "StorageError",
    "StudyInUseError",
    "StudyNotFoundError",
    "TooManyFailuresError",
    "TrialAbandoned",
    "TrialPaused",
    "TrialPruned",
]


class DtuneError(Exception):
    """Root of every exception dtune raises on its own account."""


class StorageError(DtuneError):
    """A store cannot be opened, read or written."""


class StudyNotFoundError(DtuneError, KeyError):
    """``load_study`` was asked for a study name that the store does not hold."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class StudyInUseError(DtuneError):
    """Another driver is running a search on this study right now."""


class TooManyFailuresError(DtuneError):
    """The search stopped: more trials failed than ``max_failures`` or
    ``max_consecutive_failures`` allow. The message ends with the last traceback."""


class SchedulerLostError(DtuneError):
    """The driver lost its Dask scheduler; every finished trial is in the store."""


class TrialPruned(DtuneError):
    """Raised by :func:`dtune.report` in a trial the study's pruner stopped. Let it
    propagate (the trial ends ``PRUNED`` with its last reported value), or catch it to
    clean up or save a checkpoint first; a trial told to stop ends ``PRUNED`` whatever
    its objective then returns."""


class TrialAbandoned(TrialPruned):
    """Raised by :func:`dtune.report` in a trial whose search is gone: its driver
    stopped or died, and Dask cancelled its task, so nothing will record its result.
    The trial runs again, under its number, when the study resumes
    (:func:`dtune.current_trial`): keep its checkpoint. A subclass of
    :class:`TrialPruned`, so code that catches that one to clean up still stops; catch
    this one first to tell them apart."""


class TrialPaused(TrialPruned):
    """Raised by :func:`dtune.report` in a trial that a promotion-type
    :class:`~dtune.ASHA` paused at a rung: the trial ends ``PAUSED``, and runs again
    under its number, from the step after, if it is promoted (:func:`dtune.current_trial`).
    Keep its checkpoint (:func:`dtune.checkpoint_file` does). A subclass of
    :class:`TrialPruned`, so code that catches that one to clean up still stops."""
