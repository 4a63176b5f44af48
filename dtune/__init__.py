"""dtune: asynchronous Bayesian hyperparameter search over a Dask cluster.

Examples
--------
>>> import dtune
>>> space = {"lr": dtune.Real(1e-4, 1e-1, prior="log-uniform"), "units": dtune.Integer(8, 64)}
>>> study = dtune.Study(space, name="demo", random_state=0)
>>> study.optimize(objective, n_trials=20)     # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dtune.exceptions import DtuneError, StorageError, StudyNotFoundError
from dtune.space import Categorical, Integer, Real, SearchSpace
from dtune.storage import InMemoryStorage, SQLiteStorage
from dtune.study import Study, load_study
from dtune.trial import Trial, TrialState

if TYPE_CHECKING:
    from dtune.cluster import LocalGPUCluster
    from dtune.retrain import retrain_best

__version__ = "0.1.0"

# Names whose modules import heavy packages (Dask's distributed), loaded on first use.
_LAZY = {"LocalGPUCluster": "dtune.cluster", "retrain_best": "dtune.retrain"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dtune' has no attribute {name!r}")


__all__ = [
    "Categorical",
    "DtuneError",
    "InMemoryStorage",
    "Integer",
    "LocalGPUCluster",
    "Real",
    "SQLiteStorage",
    "SearchSpace",
    "StorageError",
    "Study",
    "StudyNotFoundError",
    "Trial",
    "TrialState",
    "__version__",
    "load_study",
    "retrain_best",
]
