"""Where studies and trials live: a SQLite file (durable, shared between processes) or
memory (tests and throwaway runs). The store is the record of truth; the optimizer is
rebuilt from it."""

from __future__ import annotations

import os

from dtune.storage.base import BaseStorage, StudyRecord, driver_owner
from dtune.storage.memory import InMemoryStorage
from dtune.storage.sqlite import SCHEMA_VERSION, SQLiteStorage

__all__ = [
    "SCHEMA_VERSION",
    "BaseStorage",
    "InMemoryStorage",
    "SQLiteStorage",
    "StudyRecord",
    "driver_owner",
    "open_storage",
]


def open_storage(storage: str | os.PathLike[str] | BaseStorage | None) -> BaseStorage:
    """A store for what a user passes as ``storage=``: None (memory), a path, or a store.

    Examples
    --------
    >>> open_storage(None)
    InMemoryStorage()
    """
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
