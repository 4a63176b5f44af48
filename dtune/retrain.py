"""Search, then fully train the best few: run the ``n`` best configurations of a study
again, in parallel, on the same kind of cluster, e.g. with more epochs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dtune.execution import TrialRun, submit_trial
from dtune.trial import Trial

if TYPE_CHECKING:
    from distributed import Client

    from dtune.study import Study

__all__ = ["Retrained", "retrain_best"]


@dataclass(frozen=True)
class Retrained:
    """One configuration trained again: the search trial it came from and the result."""

    trial: Trial
    value: float | None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def retrain_best(
    study: Study,
    objective: Callable[..., Any],
    n: int = 3,
    *,
    client: Client | str | None = None,
    n_workers: int | None = None,
    gpus_per_trial: int = 1,
) -> list[Retrained]:
    """Evaluate ``objective`` at the parameters of the ``n`` best trials, all at once.

    The results are returned, not added to the study: a longer training is a different
    objective. A run that fails is returned with its error; the others are kept.

    Parameters
    ----------
    study
        Whose :meth:`~dtune.Study.top` trials to retrain.
    objective
        Usually the search's objective with longer settings, e.g.
        ``keras_objective.with_settings(epochs=100, patience=10)``.
    client, n_workers, gpus_per_trial
        As for :meth:`~dtune.Study.optimize`.

    Examples
    --------
    >>> final = retrain_best(study, objective.with_settings(epochs=100), n=3)  # doctest: +SKIP
    >>> [(r.trial.number, r.value) for r in final]                             # doctest: +SKIP
    [(41, 0.981), (17, 0.978), (52, 0.977)]
    """
    from dtune.cluster import cluster_slots, connect

    best = study.top(n)
    if not best:
        raise ValueError(f"study {study.name!r} has no complete trial to retrain")
    with connect(client, n_workers=n_workers, announce=False) as dask_client:
        dask_client.wait_for_workers(1)
        _, use_gpus = cluster_slots(dask_client, gpus_per_trial)
        run = TrialRun(objective, study.objective_key, gpus_per_trial=gpus_per_trial)
        futures = [
            submit_trial(
                dask_client,
                run,
                trial.params,
                key=f"dtune-{study.name}-retrain-{trial.number}",
                use_gpus=use_gpus,
            )
            for trial in best
        ]
        results = []
        for trial, future in zip(best, futures, strict=True):
            try:
                outcome = future.result()
            except Exception as exc:  # the task itself failed (e.g. KilledWorker)
                results.append(Retrained(trial, None, error=f"Dask could not run it: {exc!r}"))
            else:
                results.append(Retrained(trial, outcome.value, outcome.metrics, outcome.error))
    return results
