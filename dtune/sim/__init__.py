"""The search loop on simulated workers and a simulated clock (no Dask): deterministic,
fast tests of the loop and quality benchmarks through the code that ships."""

from __future__ import annotations

from dtune.sim.backend import SimulatedBackend, SimulatedCluster

__all__ = ["SimulatedBackend", "SimulatedCluster"]
