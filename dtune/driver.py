"""The asynchronous search loop: submit trials as Dask futures, record and tell each
result the moment its future completes, and refill that slot at once.

For each finished future the driver commits the trial to the store, passes the result
to the suggestion process (:mod:`dtune.suggest`), takes a suggestion that process
computed ahead, records it as RUNNING, submits it and adds it to ``as_completed``. The
driver never waits for a model fit, so a worker's gap between trials is bookkeeping
plus Dask's own round trip.
"""

from __future__ import annotations

import logging
import pickle
import secrets
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from dtune.cluster import cluster_slots, connect
from dtune.suggest import SuggestionEngine
from dtune.trial import Trial, TrialState
from dtune.worker import Outcome, run_trial

if TYPE_CHECKING:
    from distributed import Client, Future, as_completed

    from dtune.study import Study

__all__ = ["Callback", "run_search"]

logger = logging.getLogger("dtune")

Callback = Callable[["Study", Trial], None]
_SLOT_REFRESH_S = 1.0


def _check_picklable(objective: Callable[..., Any]) -> None:
    import cloudpickle

    try:
        cloudpickle.dumps(objective)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise TypeError(
            f"the objective {objective!r} cannot be pickled to send it to Dask workers "
            f"({exc}). Define it at module level or in the notebook, and create things "
            "like open files, locks, clients or GPU models inside it rather than "
            "capturing them from outside."
        ) from exc


def _wait_for_completion(ac: as_completed, timeout: float) -> list[Future]:
    """Every future done so far; waits up to ``timeout`` s for the first one."""
    # as_completed notifies thread_condition after queueing each finished future.
    with ac.thread_condition:
        if not ac.has_ready():
            ac.thread_condition.wait(timeout)
    return list(ac.next_batch(block=False)) if ac.has_ready() else []


def _outcome_of(future: Future) -> Outcome:
    if future.status == "finished":
        outcome = future.result()
        if isinstance(outcome, Outcome):
            return outcome
    if future.status == "error":
        exc = future.exception()
        return Outcome(value=None, error=f"Dask could not run the trial: {exc!r}")
    return Outcome(value=None, error=f"the trial's Dask future ended as {future.status!r}")


class _Progress:
    def __init__(self, study: Study, total: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self._study = study
        self._bar = tqdm(total=total, desc=f"dtune {study.name}", unit="trial", disable=not enabled)
        self.failed = 0

    def update(self, finished: Sequence[Trial], running: int) -> None:
        self.failed += sum(t.state is TrialState.FAILED for t in finished)
        postfix: dict[str, Any] = {"running": running, "failed": self.failed}
        best = self._study._best_value_or_none()
        if best is not None:
            postfix["best"] = f"{best:.6g}"
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(len(finished))

    def close(self) -> None:
        self._bar.close()


def run_search(
    study: Study,
    objective: Callable[..., Any],
    n_trials: int,
    *,
    client: Client | str | None = None,
    n_workers: int | None = None,
    gpus_per_trial: int = 1,
    timeout: float | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
) -> None:
    """Run ``n_trials`` more trials of ``study``; see :meth:`dtune.Study.optimize`."""
    _check_picklable(objective)
    # The suggestion process starts (imports, initial design) while the cluster does.
    with (
        SuggestionEngine(study._optimizer) as engine,
        connect(client, n_workers=n_workers, announce=progress) as dask_client,
    ):
        search = _Search(
            study, objective, n_trials, dask_client, gpus_per_trial, timeout, callbacks, progress
        )
        search.run(engine)


class _Search:
    """One call of ``optimize``: owns the futures, the suggestion thread and the bar."""

    def __init__(
        self,
        study: Study,
        objective: Callable[..., Any],
        n_trials: int,
        client: Client,
        gpus_per_trial: int,
        timeout: float | None,
        callbacks: Sequence[Callback],
        progress: bool,
    ) -> None:
        self.study = study
        self.objective = objective
        self.n_trials = n_trials
        self.client = client
        self.gpus_per_trial = gpus_per_trial
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.callbacks = callbacks
        self.progress = progress
        self.running: dict[Future, Trial] = {}
        self.n_submitted = 0
        self.slots, self.use_gpus = 0, False
        self.slots_checked = -float("inf")
        # Dask treats equal keys as one task: two drivers using the same study name on
        # one cluster, or a retried trial, must not share keys.
        self.token = secrets.token_hex(3)

    def run(self, engine: SuggestionEngine) -> None:
        from distributed import as_completed

        # Points left running by a driver that died are evaluated again first.
        retry = self.study._take_interrupted()
        bar = _Progress(self.study, self.n_trials, self.progress)
        ac = as_completed(loop=self.client.loop, with_results=False)
        try:
            self._refill(ac, engine, retry)
            while self.running:
                done = _wait_for_completion(ac, _SLOT_REFRESH_S)
                finished = self._record(done, engine)
                self._refill(ac, engine, retry)
                bar.update(finished, len(self.running))
                for trial in finished:
                    for callback in self.callbacks:
                        callback(self.study, trial)
        except BaseException:
            self._interrupt()
            raise
        finally:
            bar.close()

    def _budget_left(self) -> bool:
        in_time = self.deadline is None or time.monotonic() < self.deadline
        return in_time and self.n_submitted < self.n_trials

    def _free_slots(self) -> int:
        now = time.monotonic()
        if now - self.slots_checked > _SLOT_REFRESH_S:
            self.slots, self.use_gpus = cluster_slots(self.client, self.gpus_per_trial)
            self.slots_checked = now
            if self.slots == 0 and not self.running:
                logger.info("dtune: waiting for Dask workers to join")
                self.client.wait_for_workers(1)
                self.slots, self.use_gpus = cluster_slots(self.client, self.gpus_per_trial)
        return self.slots - len(self.running)

    def _refill(self, ac: as_completed, engine: SuggestionEngine, retry: list[Trial]) -> None:
        while self._budget_left() and self._free_slots() > 0:
            if retry:
                trial = self.study._restart_trial(retry.pop(0))
                point = self.study.space.to_point(trial.params)
            else:
                point = engine.take()
                trial = self.study._start_trial(point, suggested_elsewhere=True)
            engine.submitted(trial.number, point)
            future = self.client.submit(
                run_trial,
                self.objective,
                trial.params,
                self.study.objective_key,
                key=f"dtune-{self.study.name}-{trial.number}-{self.token}",
                resources={"GPU": self.gpus_per_trial} if self.use_gpus else None,
                pure=False,
            )
            self.running[future] = trial
            self.n_submitted += 1
            ac.add(future)

    def _record(self, done: list[Future], engine: SuggestionEngine) -> list[Trial]:
        if not done:
            return []
        finished = self.study._finish_trials([(self.running.pop(f), _outcome_of(f)) for f in done])
        engine.finished(
            [
                (t.number, self.study._to_minimize(t.value) if t.value is not None else None)
                for t in finished
            ]
        )
        for trial in finished:
            if trial.state is TrialState.FAILED:
                logger.warning(
                    "dtune: trial %d failed: %s",
                    trial.number,
                    (trial.error or "").strip().splitlines()[-1:],
                )
        return finished

    def _interrupt(self) -> None:
        """Cancel what runs and mark it INTERRUPTED, so a resumed study retries it."""
        if not self.running:
            return
        futures = list(self.running)
        try:
            self.client.cancel(futures)
        except Exception:  # the scheduler may be gone; the store matters more
            logger.exception("dtune: could not cancel running trials")
        self.study._interrupt_trials(list(self.running.values()))
        self.running.clear()
