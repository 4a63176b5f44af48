"""dtune: asynchronous Bayesian hyperparameter search over a Dask cluster.

``import dtune`` is cheap: the names below load their modules (scikit-optimize, Dask's
distributed) on first use, so a Dask worker that runs a trial imports none of them.

Examples
--------
>>> import dtune
>>> space = {"lr": dtune.Real(1e-4, 1e-1, prior="log-uniform"), "units": dtune.Integer(8, 64)}
>>> study = dtune.Study(space, name="demo", random_state=0)
>>> study.optimize(objective, n_trials=20)     # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dtune.exceptions import (
    DtuneError,
    StorageError,
    StudyNotFoundError,
    TrialAbandoned,
    TrialPaused,
    TrialPruned,
)
from dtune.reporting import TrialContext, checkpoint_file, current_trial, report
from dtune.trial import Report, Trial, TrialState

if TYPE_CHECKING:
    from dtune.cluster import LocalGPUCluster
    from dtune.optimizer import OptimizerSettings
    from dtune.pruners import ASHA, Hyperband, MedianStop
    from dtune.retrain import retrain_best
    from dtune.space import Categorical, Integer, Real, SearchSpace
    from dtune.storage import InMemoryStorage, SQLiteStorage
    from dtune.study import Study, load_study

__version__ = "0.1.0"

# Public names whose modules import heavy packages, loaded on first use.
_LAZY = {
    "ASHA": "dtune.pruners",
    "Hyperband": "dtune.pruners",
    "MedianStop": "dtune.pruners",
    "Categorical": "dtune.space",
    "InMemoryStorage": "dtune.storage",
    "Integer": "dtune.space",
    "LocalGPUCluster": "dtune.cluster",
    "OptimizerSettings": "dtune.optimizer",
    "Real": "dtune.space",
    "SQLiteStorage": "dtune.storage",
    "SearchSpace": "dtune.space",
    "Study": "dtune.study",
    "load_study": "dtune.study",
    "retrain_best": "dtune.retrain",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dtune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "ASHA",
    "Categorical",
    "DtuneError",
    "Hyperband",
    "InMemoryStorage",
    "Integer",
    "LocalGPUCluster",
    "MedianStop",
    "OptimizerSettings",
    "Real",
    "Report",
    "SQLiteStorage",
    "SearchSpace",
    "StorageError",
    "Study",
    "StudyNotFoundError",
    "Trial",
    "TrialAbandoned",
    "TrialContext",
    "TrialPaused",
    "TrialPruned",
    "TrialState",
    "__version__",
    "checkpoint_file",
    "current_trial",
    "load_study",
    "report",
    "retrain_best",
]
