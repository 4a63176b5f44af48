"""The pending-aware Bayesian optimizer: settings (:mod:`.settings`), the GP surrogate
with priors on its kernel (:mod:`.surrogate`), the GP posterior and acquisition functions
(:mod:`.posterior`), candidates and local search (:mod:`.candidates`), the polish of the
best candidates (:mod:`.polish`), and the core that ties them to a history of results
(:mod:`.core`).
"""

from __future__ import annotations

from dtune.optimizer.core import PendingAwareOptimizer, Point
from dtune.optimizer.settings import LIARS, OptimizerSettings

__all__ = ["LIARS", "OptimizerSettings", "PendingAwareOptimizer", "Point"]
