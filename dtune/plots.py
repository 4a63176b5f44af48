"""Static figures of a study for reports and notebooks (matplotlib, imported lazily):
the same convergence and worker-timeline views as the live dashboard.

skopt's own plots work on a study too:
``skopt.plots.plot_objective(study.as_skopt_result())``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dtune.trial import TrialState

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from dtune.study import Study

__all__ = ["plot_convergence", "plot_timeline"]


def _axes(ax: Axes | None, size: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=size)
    return ax


def plot_convergence(study: Study, ax: Axes | None = None) -> Axes:
    """Each complete trial's value in the order trials finished, and the best so far.

    Examples
    --------
    >>> from dtune import Real, Study
    >>> study = Study({"x": Real(0.0, 1.0)}, random_state=0)
    >>> for _ in range(5):
    ...     t = study.ask(); _ = study.tell(t, t.params["x"])
    >>> plot_convergence(study).get_ylabel()
    'value'
    """
    ax = _axes(ax, (7, 3.5))
    done = sorted(
        (t for t in study.trials if t.state is TrialState.COMPLETE),
        key=lambda t: t.finished or 0.0,
    )
    values = [float(t.value) for t in done if t.value is not None]
    pick = max if study.direction == "maximize" else min
    best = [pick(values[: i + 1]) for i in range(len(values))]
    xs = range(1, len(values) + 1)
    ax.scatter(xs, values, s=14, alpha=0.6, label="trial")
    ax.step(xs, best, where="post", color="crimson", label=f"best so far ({study.direction})")
    ax.set_xlabel("complete trials, in the order they finished")
    ax.set_ylabel(study.objective_key or "value")
    ax.set_title(f"dtune · {study.name}: convergence")
    ax.legend(loc="best")
    return ax


def plot_timeline(study: Study, ax: Axes | None = None) -> Axes:
    """One row per worker, a bar per trial from its start to its finish, coloured by
    value (failed trials hatched red): idle gaps between bars are idle workers."""
    import matplotlib as mpl

    timed = [t for t in study.trials if t.started is not None and t.finished is not None]
    workers = sorted({str(t.worker) for t in timed})
    ax = _axes(ax, (9, max(2.5, 0.8 + 0.45 * len(workers))))
    if not timed:
        ax.set_title(f"dtune · {study.name}: no finished trial yet")
        return ax
    origin = min(t.started or 0.0 for t in timed)
    values = [t.value for t in timed if t.value is not None]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    norm = mpl.colors.Normalize(low, high if high > low else low + 1e-12)
    cmap = mpl.colormaps["viridis" if study.direction == "maximize" else "viridis_r"]
    for t in timed:
        start = (t.started or 0.0) - origin
        width = t.duration or 0.0
        style: dict[str, Any] = {"color": "#d9d9d9" if t.value is None else cmap(norm(t.value))}
        if t.state is TrialState.FAILED:
            style.update(hatch="xx", edgecolor="crimson")
        ax.barh(workers.index(str(t.worker)), width, left=start, height=0.7, **style)
    ax.set_yticks(range(len(workers)), workers)
    ax.set_xlabel("seconds since the first trial started")
    ax.set_title(f"dtune · {study.name}: trials per worker")
    ax.figure.colorbar(
        mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=study.objective_key or "value"
    )
    return ax
