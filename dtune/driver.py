"""The asynchronous search loop: submit trials as Dask futures, record and tell each
result the moment its future completes, and refill that slot at once.

For each finished future the driver commits the trial to the store, passes the result
to the suggestion process (:mod:`dtune.suggest`), takes a suggestion that process
computed ahead, records it as RUNNING, submits it and adds it to ``as_completed``. The
driver never waits for a model fit, so a worker's gap between trials is bookkeeping
plus Dask's own round trip.
"""

from __future__ import annotations

import contextlib
import logging
import math
import pickle
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dtune.cluster import cluster_slots, connect
from dtune.exceptions import SchedulerLostError, StudyInUseError, TooManyFailuresError
from dtune.optimizer import Point
from dtune.storage import driver_owner
from dtune.suggest import SuggestionEngine
from dtune.trial import Trial, TrialState
from dtune.worker import Outcome, run_trial

if TYPE_CHECKING:
    from distributed import Client, Future, as_completed

    from dtune.study import Study

__all__ = ["Callback", "SearchSettings", "run_search"]

logger = logging.getLogger("dtune")

Callback = Callable[["Study", Trial], None]
_SLOT_REFRESH_S = 1.0
# A driver renews its claim on the study this often; another may take over a claim
# not renewed for _CLAIM_STALE_S.
_CLAIM_RENEW_S = 5.0
_CLAIM_STALE_S = 30.0
# How long the driver waits for its client to reconnect to a scheduler that went away.
_RECONNECT_S = 10.0


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


@dataclass(frozen=True)
class SearchSettings:
    """How one ``optimize`` call runs; see :meth:`dtune.Study.optimize`."""

    n_trials: int
    gpus_per_trial: int = 1
    timeout: float | None = None
    trial_timeout: float | None = None
    isolate: bool = False
    max_failures: int | None = None
    max_consecutive_failures: int | None = 10
    callbacks: Sequence[Callback] = ()
    progress: bool = True
    dashboard: bool | int = False


def run_search(
    study: Study,
    objective: Callable[..., Any],
    settings: SearchSettings,
    *,
    client: Client | str | None = None,
    n_workers: int | None = None,
) -> None:
    """Run ``settings.n_trials`` more trials of ``study``; see :meth:`dtune.Study.optimize`."""
    _check_picklable(objective)
    owner = driver_owner()
    _claim(study, owner)
    try:
        study._sync_with_store()
        # The suggestion process starts (imports, initial design) while the cluster does.
        with (
            SuggestionEngine(study._optimizer) as engine,
            connect(client, n_workers=n_workers, announce=settings.progress) as dask_client,
            _dashboard(study, settings, dask_client),
        ):
            _Search(study, objective, settings, dask_client, owner).run(engine)
        stats = engine.summary()
        logger.info(
            "dtune: %d suggestions (median %.0f ms, max %.0f ms to compute), %d refits "
            "(%.1f s in all); the driver waited for a suggestion %d times (%.1f s in all)",
            stats["asks"], stats["ask_median_ms"], stats["ask_max_ms"], stats["fits"],
            stats["fit_total_s"], stats["waits"], stats["wait_total_s"],
            extra={"dtune_suggest": stats},
        )  # fmt: skip
    finally:
        study._storage.release(study.name, owner)


@contextlib.contextmanager
def _dashboard(study: Study, settings: SearchSettings, client: Client) -> Iterator[None]:
    """Serve dtune's dashboard for the length of the search, if asked to."""
    if settings.dashboard is False:
        yield
        return
    from dtune.dashboard import serve_dashboard

    port = 0 if settings.dashboard is True else int(settings.dashboard)
    server = serve_dashboard(
        study._storage, study.name, port=port, dask_dashboard=client.dashboard_link
    )
    _announce(server)
    try:
        yield
    finally:
        server.stop()


def _announce(server: Any) -> None:
    """Print the dashboard's URL: a clickable link in a notebook, text elsewhere."""
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None and "IPKernelApp" in get_ipython().config:
            display(server)
            return
    except ImportError:
        pass
    print(f"dtune: dashboard at {server.url}", flush=True)


def _claim(study: Study, owner: str) -> None:
    holder = study._storage.claim(study.name, owner, stale_after=_CLAIM_STALE_S)
    if holder is not None:
        raise StudyInUseError(
            f"study {study.name!r} in {study._storage!r} is being searched by another "
            f"driver ({holder}). Wait for it, stop it, or use another study name. A driver "
            f"that died gives the study up after {_CLAIM_STALE_S:g} s (at once on its own host)"
        )


class _Search:
    """One call of ``optimize``: owns the futures, the failure counts and the bar."""

    def __init__(
        self,
        study: Study,
        objective: Callable[..., Any],
        settings: SearchSettings,
        client: Client,
        owner: str,
    ) -> None:
        self.study = study
        self.objective = objective
        self.settings = settings
        self.client = client
        self.owner = owner
        self.claimed = time.monotonic()
        self.deadline = None if settings.timeout is None else time.monotonic() + settings.timeout
        self.running: dict[Future, Trial] = {}
        self.drawn: list[Point] = []  # drawn by the driver's model for free slots
        self.n_submitted = 0
        self.failures = self.consecutive_failures = 0
        self.slots, self.use_gpus = 0, False
        self.slots_checked = self.workers_noted = -float("inf")
        # Dask treats equal keys as one task: two drivers using the same study name on
        # one cluster, or a retried trial, must not share keys.
        self.token = secrets.token_hex(3)

    def run(self, engine: SuggestionEngine) -> None:
        from distributed import as_completed

        self.engine = engine
        # Points left running by a driver that died are evaluated again first.
        retry = self.study._take_interrupted()
        bar = _Progress(self.study, self.settings.n_trials, self.settings.progress)
        ac = as_completed(loop=self.client.loop, with_results=False)
        try:
            self._refill(ac, engine, retry)
            while self.running:
                done = _wait_for_completion(ac, _SLOT_REFRESH_S)
                finished = self._record(done, engine, retry)
                # A lost scheduler cancels every future: record them interrupted first.
                self._check_scheduler()
                self._check_failures(finished)
                self._refill(ac, engine, retry)
                # Bookkeeping that talks to the store or the scheduler waits until the
                # free workers have their next trials.
                self._renew_claim()
                self._note_workers()
                bar.update(finished, len(self.running))
                for trial in finished:
                    for callback in self.settings.callbacks:
                        callback(self.study, trial)
        except BaseException:
            self._interrupt()
            raise
        finally:
            bar.close()

    def _budget_left(self) -> bool:
        in_time = self.deadline is None or time.monotonic() < self.deadline
        return in_time and self.n_submitted < self.settings.n_trials

    def _note_workers(self) -> None:
        """Record which worker each new running trial went to, so that live views (the
        dashboard's timeline) can place it before it finishes; at most once a second."""
        now = time.monotonic()
        unplaced = {f.key: f for f, t in self.running.items() if t.worker is None}
        if not unplaced or now - self.workers_noted < _SLOT_REFRESH_S:
            return
        self.workers_noted = now
        names = {
            address: str(info.get("name", address))
            for address, info in self.client.scheduler_info(n_workers=-1)["workers"].items()
        }
        for address, keys in self.client.processing().items():
            for key in keys:
                future = unplaced.get(key)
                if future is not None:
                    self.running[future] = self.study._place_trial(
                        self.running[future], names.get(address, address)
                    )

    def _free_slots(self) -> int:
        now = time.monotonic()
        if now - self.slots_checked > _SLOT_REFRESH_S:
            gpus = self.settings.gpus_per_trial
            self.slots, self.use_gpus = cluster_slots(self.client, gpus)
            self.slots_checked = now
            # Enough suggestions ready for the results that arrive while the next batch
            # of them is computed.
            self.engine.set_depth(max(2, math.ceil(self.slots / 4)))
            if self.slots == 0 and not self.running:
                logger.info("dtune: waiting for Dask workers to join")
                self.client.wait_for_workers(1)
                self.slots, self.use_gpus = cluster_slots(self.client, gpus)
        return self.slots - len(self.running)

    def _refill(self, ac: as_completed, engine: SuggestionEngine, retry: list[Trial]) -> None:
        while self._budget_left() and self._free_slots() > 0:
            initial = False
            if retry:
                trial = self.study._restart_trial(retry.pop(0))
                point = self.study.space.to_point(trial.params)
            elif self.study._optimizer.in_initial_design or not engine.serving:
                point = self._draw_here(engine)
                trial = self.study._start_trial(point)
                initial = True
            else:
                point = engine.take()
                trial = self.study._start_trial(point, suggested_elsewhere=True)
            engine.submitted(trial.number, point, initial=initial)
            future = self.client.submit(
                run_trial,
                self.objective,
                trial.params,
                self.study.objective_key,
                isolate=self.settings.isolate,
                timeout=self.settings.trial_timeout,
                key=f"dtune-{self.study.name}-{trial.number}-{self.token}",
                resources={"GPU": self.settings.gpus_per_trial} if self.use_gpus else None,
                pure=False,
            )
            self.running[future] = trial
            self.n_submitted += 1
            ac.add(future)

    def _draw_here(self, engine: SuggestionEngine) -> Point:
        """A point drawn in the driver: the initial design (cheap, no model), then, until
        the suggestion process is up (it takes seconds to import scikit-optimize),
        batches from the driver's own model for every free slot at once."""
        optimizer = self.study._optimizer
        running = [self.study.space.to_point(t.params) for t in self.running.values()]
        if optimizer.in_initial_design:
            return optimizer.ask_initial(pending=running)
        if not self.drawn:
            # The first fit may have seen two results: refit each time the results have
            # doubled since (short histories this early: a fit takes tens of ms).
            if optimizer.n_told >= 2 * optimizer.fitted_on:
                optimizer.fit(force=True)
            wanted = min(self._free_slots(), self.settings.n_trials - self.n_submitted)
            self.drawn = optimizer.ask_batch(running, max(1, wanted))
        return self.drawn.pop(0)

    def _record(
        self, done: list[Future], engine: SuggestionEngine, retry: list[Trial]
    ) -> list[Trial]:
        # A future cancelled by someone else (client.cancel, a restart, a lost scheduler)
        # or whose result can no longer be fetched did not fail: its trial runs again,
        # under its own number.
        outcomes, lost = [], []
        for future in done:
            if future.status == "cancelled":
                lost.append(future)
                continue
            try:
                outcomes.append((future, _outcome_of(future)))
            except OSError:  # the connection to the scheduler went while fetching
                lost.append(future)
        if lost:
            interrupted = [self.running.pop(f) for f in lost]
            self.study._interrupt_trials(interrupted)
            engine.finished([(t.number, None) for t in interrupted])
            retry.extend(interrupted)
            self.n_submitted -= len(interrupted)
        if not outcomes:
            return []
        finished = self.study._finish_trials([(self.running.pop(f), o) for f, o in outcomes])
        done = [f for f, _ in outcomes]
        for future in done:
            # Recorded: let Dask forget the result, or it would rerun the trial to get it
            # back if the worker holding it died.
            future.release()
        engine.finished([(t.number, self.study._told_value(t)) for t in finished])
        for trial in finished:
            if trial.state is TrialState.FAILED:
                logger.warning(
                    "dtune: trial %d failed: %s",
                    trial.number,
                    (trial.error or "").strip().splitlines()[-1:],
                )
        return finished

    def _check_failures(self, finished: Sequence[Trial]) -> None:
        for trial in finished:
            if trial.state is not TrialState.FAILED:
                self.consecutive_failures = 0
                continue
            self.failures += 1
            self.consecutive_failures += 1
            for count, limit, what in (
                (self.failures, self.settings.max_failures, "trials failed"),
                (
                    self.consecutive_failures,
                    self.settings.max_consecutive_failures,
                    "trials failed in a row",
                ),
            ):
                if limit is not None and count >= limit:
                    name = "max_failures" if what == "trials failed" else "max_consecutive_failures"
                    raise TooManyFailuresError(
                        f"stopping study {self.study.name!r}: {count} {what} ({name}={limit}). "
                        f"The last one, trial {trial.number} with {trial.params}, failed "
                        f"with:\n{trial.error}"
                    )

    def _check_scheduler(self) -> None:
        """Raise SchedulerLostError unless the client is (again) connected."""
        deadline = time.monotonic() + _RECONNECT_S
        while self.client.status == "connecting" and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.client.status == "running":
            return
        address = getattr(self.client.scheduler, "address", None)
        raise SchedulerLostError(
            f"lost the Dask scheduler at {address} (the client is {self.client.status!r} "
            f"after {_RECONNECT_S:g} s). Every finished trial is in {self.study._storage!r}; "
            "the trials that were running are marked interrupted and run first when the "
            "study resumes on a new cluster"
        )

    def _renew_claim(self) -> None:
        if time.monotonic() - self.claimed < _CLAIM_RENEW_S:
            return
        holder = self.study._storage.claim(self.study.name, self.owner, _CLAIM_STALE_S)
        if holder is not None:
            raise StudyInUseError(
                f"driver {holder} took study {self.study.name!r} over while this one did "
                f"not renew its claim for over {_CLAIM_STALE_S:g} s"
            )
        self.claimed = time.monotonic()

    def _interrupt(self) -> None:
        """Cancel what runs and mark it INTERRUPTED, so a resumed study retries it."""
        if not self.running:
            return
        futures = list(self.running)
        if self.client.status == "running":
            try:
                self.client.cancel(futures)
            except Exception:  # the scheduler may be going; the store matters more
                logger.exception("dtune: could not cancel running trials")
        self.study._interrupt_trials(list(self.running.values()))
        self.running.clear()
