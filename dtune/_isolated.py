"""One trial in a process of its own: ``python /path/to/_isolated.py RESULT_PATH``.

Run by path, not as ``-m dtune…``, so that the child does not import the dtune package
(and with it scikit-optimize) before the objective. Reads the worker's ``sys.path`` and
then the pickled ``(objective, params)`` from stdin; writes ``(result, traceback)``.
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


def main(result_path: str) -> None:
    sys.path[:] = pickle.load(sys.stdin.buffer)  # before unpickling what refers to modules
    objective, params = pickle.load(sys.stdin.buffer)
    raw, error = call(objective, params)
    try:
        data = pickle.dumps((raw, error))
    except Exception:  # an unpicklable result is still reported, as its repr
        data = pickle.dumps((repr(raw), error))
    with open(result_path, "wb") as file:
        file.write(data)


if __name__ == "__main__":
    main(sys.argv[1])
