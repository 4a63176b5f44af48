"""dtune's exceptions: one root, narrow subclasses.

Validation errors are plain ``ValueError``/``TypeError`` (they name the bad value);
the classes here are for conditions of a running search or a store.
"""

from __future__ import annotations

__all__ = ["DtuneError", "StorageError", "StudyNotFoundError"]


class DtuneError(Exception):
    """Root of every exception dtune raises on its own account."""


class StorageError(DtuneError):
    """A store cannot be opened, read or written."""


class StudyNotFoundError(DtuneError, KeyError):
    """``load_study`` was asked for a study name that the store does not hold."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""
