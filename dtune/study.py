"""A :class:`Study`: a search space, an objective's direction, a store of trials and a
pending-aware optimizer rebuilt from that store. :func:`load_study` resumes one."""

from __future__ import annotations

import logging
import math
import os
import platform
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dtune.exceptions import StudyNotFoundError
from dtune.optimizer import PendingAwareOptimizer, Point
from dtune.space import SearchSpace
from dtune.storage import BaseStorage, StudyRecord, open_storage
from dtune.trial import Trial, TrialState
from dtune.worker import Outcome, parse_result

if TYPE_CHECKING:
    import pandas as pd
    from distributed import Client
    from skopt.space import Dimension

    from dtune.driver import Callback

__all__ = ["Study", "load_study"]

logger = logging.getLogger("dtune")
_DIRECTIONS = ("minimize", "maximize")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("dtune", "scikit-optimize", "scikit-learn", "numpy", "scipy", "distributed"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "unknown"
    return found


class Study:
    """A hyperparameter search: its space, its trials, and the optimizer that picks points.

    Parameters
    ----------
    space
        ``{name: Real | Integer | Categorical}``.
    name
        The study's name in its store; several studies may share one file.
    storage
        A SQLite file path (created if missing; WAL mode), a store object, or None for
        a store in memory. If the store already holds a study of this name with the same
        space, direction and objective key, this study *continues* it.
    direction
        ``"minimize"`` or ``"maximize"`` the objective.
    objective_key
        When the objective returns a dict of metrics, the one to optimize.
    liar
        How running points are accounted for when picking new ones: ``"believer"``
        (default: each is believed to score the surrogate's mean there), or a constant
        liar, ``"cl_min"``, ``"cl_mean"`` or ``"cl_max"``.
    failure_value
        What the optimizer is told about a failed trial's point. None (default): nothing,
        so the point may be tried again nearby; ``"worst"``: the worst value seen so far,
        so the model learns to avoid regions that crash; or a number (in the objective's
        own units). Failed trials are recorded either way.
    allow_space_change
        When the store already holds this study with another space: False (default)
        refuses; True adopts the new space, and the earlier complete trials whose
        parameters lie inside it are told to the optimizer (all stay in the store).
    **optimizer_options
        Passed through to the scikit-optimize machinery: ``base_estimator``,
        ``n_initial_points``, ``initial_point_generator``, ``acq_func``, ``acq_optimizer``,
        ``acq_func_kwargs``, ``acq_optimizer_kwargs``, ``random_state``; and
        ``refit_growth`` (how often the GP's hyperparameters are refit, see
        :class:`~dtune.optimizer.PendingAwareOptimizer`).

    Notes
    -----
    Trials are written to the store before the optimizer is told of them. Reading
    properties is safe while :meth:`optimize` runs in another thread.

    Examples
    --------
    >>> from dtune import Real
    >>> study = Study({"x": Real(-2.0, 2.0)}, random_state=0)
    >>> for _ in range(12):
    ...     trial = study.ask()
    ...     _ = study.tell(trial, (trial.params["x"] - 0.5) ** 2)
    >>> abs(study.best_params["x"] - 0.5) < 0.1
    True
    """

    def __init__(
        self,
        space: Mapping[str, Dimension] | SearchSpace,
        *,
        name: str = "study",
        storage: str | os.PathLike[str] | BaseStorage | None = None,
        direction: str = "minimize",
        objective_key: str | None = None,
        liar: str = "believer",
        failure_value: str | float | None = None,
        allow_space_change: bool = False,
        **optimizer_options: Any,
    ) -> None:
        if failure_value is not None and failure_value != "worst":
            if isinstance(failure_value, bool) or not isinstance(failure_value, (int, float)):
                raise TypeError(
                    f"failure_value={failure_value!r} must be None, 'worst' or a number"
                )
            if not math.isfinite(failure_value):
                raise ValueError(f"failure_value={failure_value!r} must be finite")
        if not isinstance(name, str) or not name:
            raise ValueError(f"name={name!r} must be a non-empty string")
        if direction not in _DIRECTIONS:
            raise ValueError(f"direction={direction!r} must be 'minimize' or 'maximize'")
        if objective_key is not None and not isinstance(objective_key, str):
            raise TypeError(f"objective_key={objective_key!r} must be a string or None")
        self.space = space if isinstance(space, SearchSpace) else SearchSpace(space)
        self.name = name
        self.direction = direction
        self.objective_key = objective_key
        self.failure_value = failure_value
        self._optimizer_options = {"liar": liar, **optimizer_options}
        try:
            self._optimizer = PendingAwareOptimizer(self.space, **self._optimizer_options)
        except TypeError as exc:
            raise TypeError(f"unknown optimizer option: {exc}") from None
        self._storage = open_storage(storage)
        self._lock = threading.RLock()
        self._create_or_check(allow_space_change)
        self._trials: dict[int, Trial] = {t.number: t for t in self._storage.get_trials(name)}
        self._next_number = max(self._trials, default=-1) + 1
        self._rebuild_optimizer()

    def _create_or_check(self, allow_space_change: bool) -> None:
        record = self._storage.get_study(self.name)
        if record is None:
            self._storage.create_study(
                StudyRecord(
                    name=self.name,
                    direction=self.direction,
                    objective_key=self.objective_key,
                    space=self.space.to_json(),
                    optimizer={**self._optimizer.settings, "failure_value": self.failure_value},
                    created=time.time(),
                    versions=_versions(),
                )
            )
            return
        stored_space = SearchSpace.from_json(record.space)
        if stored_space != self.space:
            if not allow_space_change:
                raise ValueError(
                    f"study {self.name!r} in {self._storage!r} has a different space: stored "
                    f"{stored_space!r}, given {self.space!r}. Use another name (or store) "
                    "for a new search, or pass allow_space_change=True to adopt the new space"
                )
            logger.warning(
                "dtune: study %r now searches %r (was %r)", self.name, self.space, stored_space
            )
            self._storage.update_study(replace(record, space=self.space.to_json()))
        for what, stored, given in (
            ("direction", record.direction, self.direction),
            ("objective_key", record.objective_key, self.objective_key),
        ):
            if stored != given:
                raise ValueError(
                    f"study {self.name!r} in {self._storage!r} has {what}={stored!r}, not {given!r}"
                )
        logger.info("dtune: continuing study %r from %r", self.name, self._storage)

    def _rebuild_optimizer(self) -> None:
        self._optimizer.skip_initial(len(self._trials))
        self._tell_optimizer(self._trials.values())

    def _sync_with_store(self) -> None:
        """Catch up with trials another driver (or Study object) wrote to the store since
        this one read it: the store, not this object, is the record of truth."""
        with self._lock:
            stored = {t.number: t for t in self._storage.get_trials(self.name)}
            if stored == self._trials:
                return
            self._trials = stored
            self._next_number = max(stored, default=-1) + 1
            self._optimizer = PendingAwareOptimizer(self.space, **self._optimizer_options)
            self._rebuild_optimizer()

    def _tell_optimizer(self, trials: Iterable[Trial]) -> None:
        """Tell the optimizer what it should know of these finished trials."""
        told = []
        for trial in trials:
            value = self._told_value(trial)
            if value is None:
                continue
            try:
                told.append((self.space.to_point(trial.params), value))
            except ValueError:  # outside a space changed since (allow_space_change)
                continue
        if told:
            self._optimizer.tell([p for p, _ in told], [v for _, v in told])

    def _told_value(self, trial: Trial) -> float | None:
        """What the optimizer (which minimizes) is told about a trial, if anything."""
        if trial.state is TrialState.COMPLETE:
            return self._to_minimize(trial.value)
        if trial.state is not TrialState.FAILED or self.failure_value is None:
            return None
        if self.failure_value == "worst":
            seen = [self._to_minimize(t.value) for t in self._complete()]
            return max(seen) if seen else None
        return self._to_minimize(float(self.failure_value))

    def __repr__(self) -> str:
        return (
            f"Study(name={self.name!r}, direction={self.direction!r}, "
            f"trials={len(self._trials)}, storage={self._storage!r})"
        )

    # -- running a search -----------------------------------------------------------------

    def optimize(
        self,
        objective: Callable[..., Any],
        n_trials: int,
        *,
        client: Client | str | None = None,
        n_workers: int | None = None,
        gpus_per_trial: int = 1,
        timeout: float | None = None,
        trial_timeout: float | None = None,
        isolate: bool = False,
        max_failures: int | None = None,
        max_consecutive_failures: int | None = 10,
        callbacks: Sequence[Callback] = (),
        progress: bool = True,
        dashboard: bool | int = False,
    ) -> None:
        """Run ``n_trials`` more trials on a Dask cluster, as workers free up.

        Each result is written to the store and told to the optimizer the moment its
        future completes, and that worker gets a new point at once. New points account
        for the ones still running. A trial whose objective raises, or returns None,
        NaN, inf, a string or a dict without ``objective_key``, is recorded ``FAILED``
        with its traceback or the bad value, and the search goes on.

        Parameters
        ----------
        objective
            Called on a worker as ``objective(**params)`` with plain Python values;
            returns a float or a dict of metrics holding ``objective_key``.
        n_trials
            Trials to start in this call (failed ones count).
        client
            A ``distributed.Client``, a scheduler address, or None: the client in use,
            else an embedded ``LocalCluster`` for this call (its dashboard link printed).
        n_workers
            Workers of the embedded cluster (default: one per core).
        gpus_per_trial
            GPUs each trial needs when workers advertise a ``GPU`` resource.
        timeout
            Stop starting trials after this many seconds; running ones finish.
        trial_timeout
            Stop any trial after this many seconds: it is recorded ``FAILED`` with a
            ``TrialTimeout`` error and its worker takes the next trial. Implies
            ``isolate`` (a thread cannot be stopped; a process can).
        isolate
            Run each trial in a fresh child process of its worker, which exits after it:
            memory the objective held (TensorFlow's GPU memory included) is freed, and a
            crash of the objective's native code fails only that trial. Costs a Python
            start-up (and the objective's imports) per trial.
        max_failures
            Stop the search with :class:`~dtune.exceptions.TooManyFailuresError` once
            more than this many trials of this call have failed (None: no limit).
        max_consecutive_failures
            The same, for failures in a row (default 10): a broken objective stops the
            search early, with its last traceback, instead of burning the budget.
        callbacks
            ``callback(study, trial)`` after each finished trial has been recorded.
        progress
            Show a ``tqdm`` progress bar (a widget in notebooks).
        dashboard
            Serve dtune's live dashboard while the search runs: True on a free port, or
            the port to use (on 127.0.0.1). Its URL is printed (a link in notebooks).
            ``dtune dashboard FILE`` serves it from another process at any time.

        Raises
        ------
        ValueError, TypeError
            Before anything runs, for a bad argument or an objective that cannot be
            pickled.
        StudyInUseError
            Before anything runs, when another driver is searching this study.
        TooManyFailuresError
            When failures pass ``max_failures`` or ``max_consecutive_failures``.
        SchedulerLostError
            When the Dask scheduler goes away; finished trials are in the store and the
            study resumes on a new cluster.

        Trials still running when the search stops for any reason (Ctrl-C included) are
        cancelled and marked ``INTERRUPTED``; the next ``optimize`` runs them first.
        """
        from dtune.driver import SearchSettings, run_search

        for what, number in (
            ("n_trials", n_trials),
            ("gpus_per_trial", gpus_per_trial),
            ("max_failures", max_failures),
            ("max_consecutive_failures", max_consecutive_failures),
        ):
            if number is None and what.startswith("max_"):
                continue
            if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                raise ValueError(f"{what}={number!r} must be a positive int")
        if not callable(objective):
            raise TypeError(f"objective={objective!r} is not callable")
        if not isinstance(dashboard, (bool, int)) or (
            not isinstance(dashboard, bool) and not 0 < dashboard < 65536
        ):
            raise ValueError(f"dashboard={dashboard!r} must be True, False or a port number")
        for what, seconds in (("timeout", timeout), ("trial_timeout", trial_timeout)):
            if seconds is not None and (isinstance(seconds, bool) or not seconds > 0):
                raise ValueError(f"{what}={seconds!r} must be a positive number of seconds")
        settings = SearchSettings(
            n_trials=n_trials,
            gpus_per_trial=gpus_per_trial,
            timeout=timeout,
            trial_timeout=trial_timeout,
            isolate=isolate,
            max_failures=max_failures,
            max_consecutive_failures=max_consecutive_failures,
            callbacks=tuple(callbacks),
            progress=progress,
            dashboard=dashboard,
        )
        run_search(self, objective, settings, client=client, n_workers=n_workers)

    def ask(self) -> Trial:
        """Start a trial at a new point, for users who evaluate the objective themselves.

        The point accounts for every trial still ``RUNNING``; finish each with
        :meth:`tell`.
        """
        with self._lock:
            pending = [
                self.space.to_point(t.params)
                for t in self._trials.values()
                if t.state is TrialState.RUNNING
            ]
            self._optimizer.fit()
            point = self._optimizer.ask(pending=pending)
            return self._start_trial(point)

    def tell(self, trial: Trial | int, value: Any = None, *, error: str | None = None) -> Trial:
        """Finish a trial started by :meth:`ask` with what the objective returned.

        ``value`` is a float or a dict of metrics holding ``objective_key``; give
        ``value=None`` (and optionally ``error=``) for a trial that failed. A bad value
        raises ``ValueError``/``TypeError`` and leaves the trial running.
        """
        with self._lock:
            number = trial.number if isinstance(trial, Trial) else trial
            current = self._trials.get(number)
            if current is None:
                raise ValueError(f"trial {number!r} is not in study {self.name!r}")
            if current.state is not TrialState.RUNNING:
                raise ValueError(f"trial {number} is already {current.state.value}")
            result, metrics = (
                (None, {}) if value is None else parse_result(value, self.objective_key)
            )
            outcome = Outcome(
                value=result,
                metrics=metrics,
                error=(error or "told as failed") if value is None else None,
                started=current.submitted,
                finished=time.time(),
            )
            (finished,) = self._finish_trials([(current, outcome)])
            return finished

    # -- bookkeeping used by the driver (all under the lock, store first) -----------------

    def _to_minimize(self, value: float | None) -> float:
        """The value as the optimizer sees it (it minimizes); failed trials have none."""
        if value is None:
            raise ValueError("a trial without a value cannot be told to the optimizer")
        return -value if self.direction == "maximize" else value

    def _start_trial(self, point: Point, *, suggested_elsewhere: bool = False) -> Trial:
        with self._lock:
            if suggested_elsewhere:  # by the suggestion process: keep our copy in step
                self._optimizer.skip_initial(1)
            trial = Trial(
                number=self._next_number,
                state=TrialState.RUNNING,
                params=self.space.to_params(point),
                submitted=time.time(),
            )
            self._storage.put_trial(self.name, trial)
            self._trials[trial.number] = trial
            self._next_number += 1
            return trial

    def _finish_trials(self, results: Sequence[tuple[Trial, Outcome]]) -> list[Trial]:
        finished = [
            Trial(
                number=trial.number,
                state=TrialState.FAILED if outcome.error else TrialState.COMPLETE,
                params=trial.params,
                value=outcome.value,
                metrics=outcome.metrics,
                worker=outcome.worker,
                host=outcome.host,
                device=outcome.device,
                submitted=trial.submitted,
                started=outcome.started,
                finished=outcome.finished,
                error=outcome.error,
            )
            for trial, outcome in results
        ]
        with self._lock:
            self._storage.put_trials(self.name, finished)
            self._trials.update((t.number, t) for t in finished)
            self._tell_optimizer(finished)
        return finished

    def _interrupt_trials(self, trials: Sequence[Trial]) -> None:
        with self._lock:
            marked = [
                Trial(
                    number=t.number,
                    state=TrialState.INTERRUPTED,
                    params=t.params,
                    submitted=t.submitted,
                    error="interrupted: the driver stopped while this trial ran",
                )
                for t in trials
            ]
            self._storage.put_trials(self.name, marked)
            self._trials.update((t.number, t) for t in marked)

    def _take_interrupted(self) -> list[Trial]:
        """Trials a stopped driver left RUNNING or INTERRUPTED: to be run again first."""
        with self._lock:
            stale = [t for t in self._trials.values() if t.state is TrialState.RUNNING]
            if stale:
                self._interrupt_trials(stale)
            return [t for t in self.trials if t.state is TrialState.INTERRUPTED]

    def _place_trial(self, trial: Trial, worker: str) -> Trial:
        """Record the worker a running trial was given to (before it finishes)."""
        with self._lock:
            placed = replace(trial, worker=worker)
            self._storage.put_trial(self.name, placed)
            self._trials[placed.number] = placed
            return placed

    def _restart_trial(self, trial: Trial) -> Trial:
        """Run an interrupted trial again, under its own number."""
        with self._lock:
            again = Trial(
                number=trial.number,
                state=TrialState.RUNNING,
                params=trial.params,
                submitted=time.time(),
            )
            self._storage.put_trial(self.name, again)
            self._trials[again.number] = again
            return again

    # -- results ----------------------------------------------------------------------------

    @property
    def trials(self) -> list[Trial]:
        """Every trial, by number (a snapshot)."""
        with self._lock:
            return [self._trials[n] for n in sorted(self._trials)]

    def _complete(self) -> list[Trial]:
        return [t for t in self.trials if t.state is TrialState.COMPLETE]

    def top(self, n: int = 5) -> list[Trial]:
        """The ``n`` best complete trials, best first."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n={n!r} must be a positive int")
        ranked = sorted(self._complete(), key=lambda t: self._to_minimize(t.value))
        return ranked[:n]

    def _best_value_or_none(self) -> float | None:
        best = self.top(1)
        return best[0].value if best else None

    @property
    def best_trial(self) -> Trial:
        """The best complete trial; ``ValueError`` if there is none yet."""
        best = self.top(1)
        if not best:
            raise ValueError(f"study {self.name!r} has no complete trial yet")
        return best[0]

    @property
    def best_value(self) -> float:
        """The best objective value found."""
        value = self.best_trial.value
        assert value is not None
        return value

    @property
    def best_params(self) -> dict[str, Any]:
        """The parameters of the best trial."""
        return dict(self.best_trial.params)

    def trials_dataframe(self) -> pd.DataFrame:
        """One row per trial: number, state, value, ``params_*``, ``metrics_*``, worker,
        host, device, timings (``submitted``/``started``/``finished`` as datetimes,
        ``duration`` in seconds) and error."""
        import pandas as pd

        rows = []
        for t in self.trials:
            row: dict[str, Any] = {"number": t.number, "state": t.state.value, "value": t.value}
            row.update({f"params_{k}": v for k, v in t.params.items()})
            row.update({f"metrics_{k}": v for k, v in t.metrics.items()})
            row.update(
                worker=t.worker,
                host=t.host,
                device=t.device,
                submitted=t.submitted,
                started=t.started,
                finished=t.finished,
                duration=t.duration,
                error=t.error,
            )
            rows.append(row)
        frame = pd.DataFrame(rows)
        for column in ("submitted", "started", "finished"):
            if column in frame:
                frame[column] = pd.to_datetime(frame[column], unit="s")
        return frame

    def as_skopt_result(self) -> Any:
        """The complete trials as a scikit-optimize ``OptimizeResult``, so that
        ``skopt.plots.plot_convergence(study.as_skopt_result())`` and friends work.

        Values are as the optimizer sees them: negated when ``direction="maximize"``.
        """
        with self._lock:
            return self._optimizer.result()


def load_study(
    storage: str | os.PathLike[str] | BaseStorage,
    name: str | None = None,
    **optimizer_options: Any,
) -> Study:
    """Open a stored study to inspect or continue it, e.g. after a crash or a restart.

    Parameters
    ----------
    storage
        The SQLite file (it must exist) or store object.
    name
        The study; may be left out when the store holds exactly one.
    **optimizer_options
        Override the optimizer options the study was created with.

    Examples
    --------
    >>> study = load_study("mnist.db", name="mnist")   # doctest: +SKIP
    >>> study.optimize(objective, n_trials=50)         # doctest: +SKIP
    """
    if isinstance(storage, (str, os.PathLike)) and not Path(storage).is_file():
        raise FileNotFoundError(f"no dtune store at {os.fspath(storage)!r}")
    store = open_storage(storage)
    names = store.study_names()
    if name is None:
        if len(names) != 1:
            raise ValueError(
                f"{store!r} holds {len(names)} studies {names}; choose one with name=..."
            )
        name = names[0]
    record = store.get_study(name)
    if record is None:
        raise StudyNotFoundError(
            f"no study named {name!r} in {store!r}; it holds {names if names else 'none'}"
        )
    options = {
        k: v
        for k, v in record.optimizer.items()
        if v is not None or k in ("random_state", "failure_value")
    }
    if record.optimizer.get("base_estimator") is None and "base_estimator" not in optimizer_options:
        raise ValueError(
            f"study {name!r} was created with a custom base_estimator object, which a store "
            "cannot hold; pass it again: load_study(..., base_estimator=...)"
        )
    options.update(optimizer_options)
    return Study(
        SearchSpace.from_json(record.space),
        name=name,
        storage=store,
        direction=record.direction,
        objective_key=record.objective_key,
        **options,
    )
