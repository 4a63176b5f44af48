"""One trial in a process of its own: ``python /path/to/_isolated.py RESULT_PATH
[NUMBER FD [STUDY]]``.

Run by path, not as ``-m dtune…``, so that the child imports nothing of dtune's before
the objective (and then only the light :mod:`dtune.reporting` when its trial reports, to
the worker over the inherited socket ``FD``). Reads the worker's ``sys.path`` and then
the pickled ``(objective, params)`` from stdin; writes ``(result, traceback)``.
"""

from __future__ import annotations

import pickle
import sys
import traceback
from collections.abc import Callable, Mapping
from typing import Any


def call(objective: Callable[..., Any], params: Mapping[str, Any]) -> tuple[Any, str | None]:
    """What the objective returned, or None and its traceback."""
    try:
        return objective(**params), None
    except Exception:
        return None, traceback.format_exc()


def main(
    result_path: str, number: str | None = None, fd: str | None = None, study: str | None = None
) -> None:
    sys.path[:] = pickle.load(sys.stdin.buffer)  # before unpickling what refers to modules
    objective, params = pickle.load(sys.stdin.buffer)
    if fd is None or number is None:
        raw, error = call(objective, params)
    else:
        from multiprocessing.connection import Connection

        from dtune.reporting import ChildChannel

        with ChildChannel(int(number), Connection(int(fd)), study).active():
            raw, error = call(objective, params)
    try:
        data = pickle.dumps((raw, error))
    except Exception:  # an unpicklable result is still reported, as its repr
        data = pickle.dumps((repr(raw), error))
    with open(result_path, "wb") as file:
        file.write(data)


if __name__ == "__main__":
    main(*sys.argv[1:])
