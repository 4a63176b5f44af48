"""A :class:`Study`: the facade users touch. It builds a study's ledger (its trials,
store first) and suggester (its optimizer), and offers ask/tell, ``optimize`` and the
views of results; :func:`load_study` resumes one from its store."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dtune.driver import BackendFactory, Callback, SearchSettings, run_search
from dtune.exceptions import StudyNotFoundError
from dtune.execution import Outcome, parse_result
from dtune.ledger import Ledger
from dtune.optimizer import OptimizerSettings
from dtune.pruners import Pruner, pruner_from_json
from dtune.space import SearchSpace
from dtune.storage import BaseStorage, StudyRecord, open_storage
from dtune.suggest import InProcessSuggester, ProcessSuggester
from dtune.trial import Trial

if TYPE_CHECKING:
    import pandas as pd
    from distributed import Client
    from skopt.space import Dimension

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
    pruner
        Stop hopeless trials early: :class:`~dtune.pruners.ASHA`,
        :class:`~dtune.pruners.Hyperband` or :class:`~dtune.pruners.MedianStop`
        (default None: every trial runs to the end). Trials report intermediate values
        with :func:`dtune.report`; with ASHA or Hyperband the model is fitted on the
        values at the highest rung that has enough of them, so pruned trials' early
        results guide the search too: a trial pruned below that rung is told an
        estimate there (its value at the highest rung it reached plus the median gain
        from there), and so is a trial still running past a rung, until what it reaches
        next replaces it. ``ASHA(..., variant="promotion")`` pauses every trial at each
        rung instead, and runs on the best of them (``PAUSED`` trials, promoted).
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
        The optimizer's settings (:class:`~dtune.optimizer.OptimizerSettings`), passed
        through to the scikit-optimize machinery: ``base_estimator``,
        ``n_initial_points``, ``initial_point_generator``, ``acq_func``, ``acq_optimizer``,
        ``acq_func_kwargs``, ``acq_optimizer_kwargs``, ``random_state``, and
        ``refit_growth`` (how often the GP's hyperparameters are refit). An unknown name
        raises ``TypeError`` naming it.

    Notes
    -----
    A facade: every change of a trial goes through the study's
    :class:`~dtune.ledger.Ledger` (the store first, then the model), whether it comes
    from :meth:`tell` or from :meth:`optimize`'s loop. Reading properties is safe while
    :meth:`optimize` runs in another thread.

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
        pruner: Pruner | None = None,
        allow_space_change: bool = False,
        **optimizer_options: Any,
    ) -> None:
        if pruner is not None and not isinstance(pruner, Pruner):
            raise TypeError(
                f"pruner={pruner!r} must be None or a dtune pruner (dtune.ASHA, "
                "dtune.Hyperband, dtune.MedianStop)"
            )
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
        self.pruner = pruner
        self.settings = OptimizerSettings.from_options({"liar": liar, **optimizer_options})
        storage = open_storage(storage)
        self._create_or_check(storage, allow_space_change)
        rungs = pruner.rungs() if pruner is not None else None
        joint = self.settings.resource_model == "joint"
        # A stopping rule's running trials are told their estimates at each rung (a
        # promotion-type rule's pause there, and are estimated then).
        estimate_running = pruner is not None and not pruner.promotes
        self._ledger = Ledger(
            storage,
            name,
            self.space,
            direction,
            failure_value,
            rungs,
            joint=joint,
            estimate_running=estimate_running,
        )
        # The study's own optimizer copy: ask/tell use it, optimize starts from it.
        self._suggester = InProcessSuggester(self.space, self.settings)
        self._suggester.reset(self._ledger.model_state())
        self._ledger.subscribe(self._suggester)
        self._process: ProcessSuggester | None = None
        self._stop = threading.Event()  # Study.stop: the running optimize starts no more

    def _create_or_check(self, storage: BaseStorage, allow_space_change: bool) -> None:
        record = storage.get_study(self.name)
        if record is None:
            storage.create_study(
                StudyRecord(
                    name=self.name,
                    direction=self.direction,
                    objective_key=self.objective_key,
                    space=self.space.to_json(),
                    optimizer={
                        **self.settings.to_json(),
                        "failure_value": self.failure_value,
                        "pruner": None if self.pruner is None else self.pruner.to_json(),
                    },
                    created=time.time(),
                    versions=_versions(),
                )
            )
            return
        stored_space = SearchSpace.from_json(record.space)
        if stored_space != self.space:
            if not allow_space_change:
                raise ValueError(
                    f"study {self.name!r} in {storage!r} has a different space: stored "
                    f"{stored_space!r}, given {self.space!r}. Use another name (or store) "
                    "for a new search, or pass allow_space_change=True to adopt the new space"
                )
            logger.warning(
                "dtune: study %r now searches %r (was %r)", self.name, self.space, stored_space
            )
            storage.update_study(replace(record, space=self.space.to_json()))
        for what, stored, given in (
            ("direction", record.direction, self.direction),
            ("objective_key", record.objective_key, self.objective_key),
        ):
            if stored != given:
                raise ValueError(
                    f"study {self.name!r} in {storage!r} has {what}={stored!r}, not {given!r}"
                )
        stored_pruner = record.optimizer.get("pruner")
        given_pruner = None if self.pruner is None else self.pruner.to_json()
        if stored_pruner != given_pruner:
            storage.update_study(
                replace(record, optimizer={**record.optimizer, "pruner": given_pruner})
            )
        logger.info("dtune: continuing study %r from %r", self.name, storage)

    @property
    def storage(self) -> BaseStorage:
        """The store this study's trials live in."""
        return self._ledger.storage

    def __repr__(self) -> str:
        return (
            f"Study(name={self.name!r}, direction={self.direction!r}, "
            f"trials={len(self.trials)}, storage={self.storage!r})"
        )

    # -- running a search -----------------------------------------------------------------

    def optimize(
        self,
        objective: Callable[..., Any],
        n_trials: int,
        *,
        client: Client | str | BackendFactory | None = None,
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
            Trials to start in this call (failed ones count). A promotion-type ASHA's
            paused trials that run on do not count: the call ends once these have
            started and no paused trial ranks high enough to go on.
        client
            A ``distributed.Client``, a scheduler address, or None: the client in use,
            else an embedded ``LocalCluster`` for this call (its dashboard link printed).
            A :class:`dtune.sim.SimulatedCluster` runs the same loop on simulated
            workers and clock (tests, benchmarks), with suggestions drawn in-process.
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
            ``callback(study, trial)`` after each finished trial has been recorded and
            the workers it freed have their next trials (a refill never waits for a
            callback), so a :meth:`stop` there lets the trials just started finish.
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
        self._stop.clear()
        settings = SearchSettings(
            n_trials=n_trials,
            gpus_per_trial=gpus_per_trial,
            timeout=timeout,
            trial_timeout=trial_timeout,
            isolate=isolate,
            max_failures=max_failures,
            max_consecutive_failures=max_consecutive_failures,
            callbacks=tuple(_bind(callback, self) for callback in callbacks),
            progress=progress,
            pruner=self.pruner,
            stop=self._stop,
        )
        # Simulated workers on a simulated clock: suggestions in-process, so a seed
        # gives the same search every time.
        simulated = getattr(client, "simulated", False)
        run_search(
            self._ledger,
            self._suggester if simulated else self._suggestion_process(),
            objective,
            settings,
            objective_key=self.objective_key,
            client=client,
            n_workers=n_workers,
            services=None if dashboard is False else self._dashboard_service(dashboard),
        )

    def stop(self) -> None:
        """Start no more trials in the running :meth:`optimize` call: the trials that
        run finish and are recorded, then it returns. Call it from a callback (stop
        once a target is reached, or after so many GPU-hours) or from another thread;
        the next ``optimize`` call starts afresh.

        Examples
        --------
        >>> def enough(study, trial):
        ...     if study.best_value < 0.01:
        ...         study.stop()
        >>> # study.optimize(objective, 1000, callbacks=[enough])
        """
        self._stop.set()

    def _suggestion_process(self) -> ProcessSuggester:
        """The study's suggestion process, kept across optimize calls (stopped when the
        study is collected or Python exits), so a second call is served at once."""
        if self._process is None:
            self._process = ProcessSuggester(self._suggester)
            self._ledger.subscribe(self._process)
            weakref.finalize(self, self._process.close)
        return self._process

    def _dashboard_service(
        self, dashboard: bool | int
    ) -> Callable[[str | None], contextlib.AbstractContextManager[Any]]:
        @contextlib.contextmanager
        def serve(dask_dashboard: str | None) -> Iterator[None]:
            from dtune.dashboard import announce, serve_dashboard

            port = 0 if dashboard is True else int(dashboard)
            server = serve_dashboard(
                self.storage, self.name, port=port, dask_dashboard=dask_dashboard
            )
            announce(server)
            try:
                yield
            finally:
                server.stop()

        return serve

    def ask(self) -> Trial:
        """Start a trial at a new point, for users who evaluate the objective themselves.

        The point accounts for every trial still ``RUNNING``; finish each with
        :meth:`tell`.
        """
        point = self._suggester.suggest()
        return self._ledger.start(self.space.to_params(point))

    def tell(self, trial: Trial | int, value: Any = None, *, error: str | None = None) -> Trial:
        """Finish a trial started by :meth:`ask` with what the objective returned.

        ``value`` is a float or a dict of metrics holding ``objective_key``; give
        ``value=None`` (and optionally ``error=``) for a trial that failed. A bad value
        raises ``ValueError``/``TypeError`` and leaves the trial running.
        """
        number = trial.number if isinstance(trial, Trial) else trial
        current = self._ledger.get(number)
        if current is None:
            raise ValueError(f"trial {number!r} is not in study {self.name!r}")
        result, metrics = (None, {}) if value is None else parse_result(value, self.objective_key)
        outcome = Outcome(
            value=result,
            metrics=metrics,
            error=(error or "told as failed") if value is None else None,
            started=current.submitted,
            finished=time.time(),
        )
        (finished,) = self._ledger.finish([(number, outcome)])
        return finished

    # -- results ----------------------------------------------------------------------------

    @property
    def trials(self) -> list[Trial]:
        """Every trial, by number (a snapshot)."""
        return self._ledger.trials

    def top(self, n: int = 5) -> list[Trial]:
        """The ``n`` best complete trials, best first."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n={n!r} must be a positive int")
        return self._ledger.top(n)

    @property
    def best_trial(self) -> Trial:
        """The best complete trial; ``ValueError`` if there is none yet."""
        best = self._ledger.top(1)
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
        """One row per trial: number, state, value, ``last_step`` and ``intermediate`` (the
        reported values by step), ``params_*``, ``metrics_*``, worker,
        host, device, timings (``submitted``/``started``/``finished`` as datetimes,
        ``duration`` in seconds, over all the trial's runs; ``earlier_s``: the seconds of
        a promoted trial's runs before its last) and error."""
        import pandas as pd

        rows = []
        for t in self.trials:
            row: dict[str, Any] = {
                "number": t.number,
                "state": t.state.value,
                "value": t.value,
                "last_step": t.last_step,
                "intermediate": t.intermediate,
            }
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
                earlier_s=t.earlier_s,
                error=t.error,
            )
            rows.append(row)
        frame = pd.DataFrame(rows)
        for column in ("submitted", "started", "finished"):
            if column in frame:
                frame[column] = pd.to_datetime(frame[column], unit="s")
        return frame

    def as_skopt_result(self) -> Any:
        """The results the optimizer was told, as a scikit-optimize ``OptimizeResult``,
        so that ``skopt.plots.plot_convergence(study.as_skopt_result())`` and friends work.

        Values are as the optimizer sees them: negated when ``direction="maximize"``.
        """
        return self._suggester.optimizer.result()


def _bind(callback: Callback, study: Study) -> Callable[[Trial], None]:
    return lambda trial: callback(study, trial)


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
        Override the optimizer settings the study was created with.

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
    try:
        settings = OptimizerSettings.from_json(record.optimizer, **optimizer_options)
    except ValueError as exc:
        raise ValueError(f"study {name!r}: {exc}") from None
    return Study(
        SearchSpace.from_json(record.space),
        name=name,
        storage=store,
        direction=record.direction,
        objective_key=record.objective_key,
        failure_value=record.optimizer.get("failure_value"),
        pruner=pruner_from_json(record.optimizer.get("pruner")),
        **{k: v for k, v in settings.to_json().items() if k != "base_estimator"},
        base_estimator=settings.base_estimator,
    )
