"""Values made ready for JSON (the store) without importing numpy: numpy and TensorFlow
scalars become Python numbers, small arrays become lists, anything unknown its repr.

Workers use this on every result, so it must import nothing heavy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["jsonable"]

_SCALARS = (str, int, float, bool, type(None))
# Arrays up to this many elements are stored as lists; larger ones as their repr.
_MAX_ARRAY = 1000


def jsonable(value: Any) -> Any:
    """``value`` as plain Python: str, int, float, bool, None, lists and string-keyed dicts.

    Examples
    --------
    >>> import numpy as np
    >>> jsonable({"loss": np.float32(0.5), "curve": np.arange(3), 1: (np.int64(2), "a")})
    {'loss': 0.5, 'curve': [0, 1, 2], '1': [2, 'a']}
    >>> jsonable(object())  # doctest: +ELLIPSIS
    '<object object at ...>'
    """
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    size = getattr(value, "size", None)
    if hasattr(value, "tolist") and isinstance(size, int):  # numpy scalars and arrays
        return jsonable(value.tolist()) if size <= _MAX_ARRAY else repr(value)
    if hasattr(value, "numpy"):  # a TensorFlow or PyTorch tensor
        return jsonable(value.numpy())
    if hasattr(value, "__float__") and not hasattr(value, "__len__"):
        return float(value)
    return repr(value)
