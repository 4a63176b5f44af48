"""How trials execute. On a worker: :func:`run_trial` calls the objective once and
reports its value, metrics, timings, worker, host and device, or the error it raised.
On the driver: :func:`submit_trial` (shared by the search and ``retrain_best``) and
:class:`DaskBackend`, the search loop's view of a Dask cluster.

Nothing here raises for a failing objective: the failure travels back as data, so the
driver records it with its traceback and the search goes on.

A worker that runs a trial imports this module and :mod:`dtune.jsonable` only: no
scikit-optimize, scikit-learn, scipy, numpy, bokeh or pandas, so a fresh worker starts
its first trial at once (``tests/test_execution.py`` checks what a trial imports).

With ``isolate=True`` or a ``timeout`` the objective runs in a fresh child process of
the worker (``python .../dtune/_isolated.py``, run by path so that it does not import
the dtune package), not in the worker's thread: a thread cannot be stopped, but a
process (and anything it started) can be killed when it runs past its time, and
everything it held, GPU memory included, is freed when it exits.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import hashlib
import logging
import math
import numbers
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from dtune import _isolated
from dtune.exceptions import SchedulerLostError
from dtune.jsonable import jsonable
from dtune.reporting import (
    Channel,
    Cutoffs,
    DaskChannel,
    ReportTo,
    deliver,
    deliver_cutoffs,
    forward,
    remove_checkpoint,
)

logger = logging.getLogger("dtune")

if TYPE_CHECKING:
    from distributed import Client, Future

    from dtune.pruners import Pruner
    from dtune.trial import Trial

__all__ = [
    "Backend",
    "DaskBackend",
    "IncomingReport",
    "Outcome",
    "PackedObjective",
    "TrialRun",
    "parse_result",
    "run_trial",
    "submit_trial",
]

# How often the Dask backend looks again at the cluster's slots and running trials' workers.
_REFRESH_S = 1.0
# How long the driver waits for its client to reconnect to a scheduler that went away.
_RECONNECT_S = 10.0


@dataclass(frozen=True)
class Outcome:
    """What one call of the objective produced, as the worker saw it. A ``pruned`` run
    was stopped by the study's pruner; its value is the last one it reported. A
    ``paused`` one (pruned too) was stopped at a rung by a promotion-type ASHA."""

    value: float | None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    started: float | None = None
    finished: float | None = None
    worker: str | None = None
    host: str | None = None
    device: str | None = None
    pruned: bool = False
    paused: bool = False


@dataclass(frozen=True)
class IncomingReport:
    """A running trial's report as the driver receives it (:func:`dtune.report`)."""

    number: int
    step: int
    value: float
    metrics: dict[str, Any]
    worker: str | None = None
    seq: int = 0
    wait: bool = False  # waits for the driver's verdict


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", "") == "b"


def _as_objective_value(value: Any, what: str) -> float:
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} is {value!r} ({type(value).__name__}); expected a finite float")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} is {number!r}; expected a finite float")
    return number


def parse_result(result: Any, objective_key: str | None) -> tuple[float, dict[str, Any]]:
    """Split what an objective returned into the value to optimize and all its metrics.

    Parameters
    ----------
    result
        A number, or a mapping of metric names to values holding ``objective_key``.
    objective_key
        Which metric is the objective when ``result`` is a mapping.

    Returns
    -------
    (value, metrics)

    Raises
    ------
    TypeError, ValueError
        Naming the bad value: None, a string, NaN or inf, a mapping without the key.

    Examples
    --------
    >>> import numpy as np
    >>> parse_result({"val_loss": 0.25, "acc": np.float32(0.5)}, "val_loss")
    (0.25, {'val_loss': 0.25, 'acc': 0.5})
    >>> parse_result(1.5, None)
    (1.5, {})
    """
    if isinstance(result, Mapping):
        metrics = jsonable(result)
        if objective_key is None:
            raise ValueError(
                f"the objective returned a dict with keys {sorted(metrics)}; tell the Study "
                "which one to optimize with objective_key=..."
            )
        if objective_key not in result:
            raise KeyError(
                f"the objective returned a dict without the objective key {objective_key!r}; "
                f"its keys are {sorted(metrics)}"
            )
        value = _as_objective_value(result[objective_key], f"metric {objective_key!r}")
        metrics[objective_key] = value
        return value, metrics
    value = _as_objective_value(result, "the objective's return value")
    return value, ({objective_key: value} if objective_key else {})


def _worker_name() -> str | None:
    if "distributed" not in sys.modules:
        return None
    from distributed import get_worker

    try:
        return str(get_worker().name)
    except ValueError:  # not inside a Dask worker: manual or sequential evaluation
        return None


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _wait_for_child(
    child: subprocess.Popen[bytes],
    conn: Any,
    channel: Channel | None,
    timeout: float | None,
    held: list[str],
) -> int:
    """The child's exit status, answering its reports meanwhile (and noting in ``held``
    the checkpoints it holds); raises ``TimeoutExpired`` after ``timeout`` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while conn is not None:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise subprocess.TimeoutExpired(child.args, timeout or 0.0)
        try:
            if conn.poll(0.05 if left is None else min(0.05, left)):
                forward(conn, channel, held)
                continue
        except (EOFError, OSError):
            break  # the child closed its end: it is exiting
        code = child.poll()
        if code is not None:
            return code
    left = None if deadline is None else max(0.0, deadline - time.monotonic())
    return child.wait(left)


def _remove_checkpoints(paths: list[str]) -> None:
    for path in paths:
        remove_checkpoint(path)


def _call_in_child(
    objective: Callable[..., Any],
    params: Mapping[str, Any],
    timeout: float | None,
    channel: Channel | None = None,
) -> tuple[Any, str | None]:
    """:func:`_isolated.call` in a fresh Python process, killed (with any process it
    started) after ``timeout`` seconds. The child's reports go through ``channel``."""
    from multiprocessing.connection import Connection

    import cloudpickle

    with contextlib.ExitStack() as stack:
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="dtune-trial-"))
        result_path = os.path.join(folder, "result.pickle")
        # The child imports what the objective refers to from the worker's own path.
        payload = pickle.dumps(sys.path) + cloudpickle.dumps((objective, dict(params)))
        command = [sys.executable, _isolated.__file__, result_path]
        conn: Connection | None = None
        fds: tuple[int, ...] = ()
        if channel is not None:
            ours, theirs = socket.socketpair()
            stack.enter_context(theirs)
            conn = stack.enter_context(Connection(ours.detach()))
            command += [str(channel.number), str(theirs.fileno())]
            if channel.study is not None:
                command.append(channel.study)
            fds = (theirs.fileno(),)
        child = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            pass_fds=fds,
            start_new_session=True,  # its own process group: a timeout kills all of it
        )
        if channel is not None:
            theirs.close()
        assert child.stdin is not None
        with child.stdin:
            child.stdin.write(payload)
        held: list[str] = []  # checkpoints the child keeps (dtune.checkpoint_file)
        try:
            code = _wait_for_child(child, conn, channel, timeout, held)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            _remove_checkpoints(held)  # the trial fails: it will not run again
            return None, (
                f"TrialTimeout: the trial ran past trial_timeout={timeout:g} s; its process "
                "was killed"
            )
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)  # anything it left running
        if code != 0 or not os.path.exists(result_path):
            _remove_checkpoints(held)
            return None, f"the trial's process {_describe_exit(code)} before returning a result"
        with open(result_path, "rb") as file:
            result: tuple[Any, str | None] = pickle.load(file)
        return result


@dataclass(frozen=True)
class PackedObjective:
    """An objective pickled once, on the driver, for every trial of a search.

    Dask pickles what it submits with each task. An objective defined in a notebook or a
    script is pickled by value (its code and what it refers to), which cost about a third
    of the driver's time at 256 workers (docs/PERFORMANCE.md, "The objective pickled
    once"). Packed, a submission copies these bytes, and a worker unpickles them once per
    search and keeps the function (:meth:`unpack`).

    >>> packed = PackedObjective.of(lambda x: x + 1)
    >>> packed.unpack()(1), packed.unpack() is packed.unpack()
    (2, True)
    """

    payload: bytes
    digest: str

    @classmethod
    def of(cls, objective: Callable[..., Any]) -> PackedObjective:
        import cloudpickle

        payload = cloudpickle.dumps(objective)
        return cls(payload, hashlib.blake2b(payload, digest_size=16).hexdigest())

    def unpack(self) -> Callable[..., Any]:
        """The objective: unpickled on first use in this process, then kept (the last
        few searches' objectives)."""
        with _UNPACKED_LOCK:
            objective = _UNPACKED.get(self.digest)
        if objective is None:
            objective = pickle.loads(self.payload)
            with _UNPACKED_LOCK:
                _UNPACKED[self.digest] = objective
                while len(_UNPACKED) > _UNPACKED_KEPT:
                    _UNPACKED.popitem(last=False)
        return objective

    def __repr__(self) -> str:
        return f"PackedObjective({len(self.payload)} bytes, {self.digest[:8]})"


# A worker's unpacked objectives, by digest: the latest few searches'.
_UNPACKED: collections.OrderedDict[str, Callable[..., Any]] = collections.OrderedDict()
_UNPACKED_LOCK = threading.Lock()
_UNPACKED_KEPT = 4


def run_trial(
    objective: Callable[..., Any] | PackedObjective,
    params: Mapping[str, Any],
    objective_key: str | None,
    *,
    isolate: bool = False,
    timeout: float | None = None,
    report_to: ReportTo | None = None,
) -> Outcome:
    """Call ``objective(**params)`` and report how it went. Runs on a Dask worker.

    Parameters
    ----------
    objective, params, objective_key
        What to call, with what, and which metric is the objective.
    isolate
        Call it in a fresh child process, which exits afterwards (freeing its memory).
    timeout
        Kill that child process after this many seconds (implies ``isolate``); the trial
        then fails with a ``TrialTimeout`` error.
    report_to
        Where the objective's :func:`dtune.report` calls go (None: nowhere).

    Examples
    --------
    >>> out = run_trial(lambda x: x**2, {"x": 3.0}, None)
    >>> out.value, out.error
    (9.0, None)
    >>> run_trial(lambda x: None, {"x": 3.0}, None).error
    "TypeError: the objective's return value is None (NoneType); expected a finite float"
    """
    started = time.time()
    if isinstance(objective, PackedObjective):
        objective = objective.unpack()
    value: float | None = None
    metrics: dict[str, Any] = {}
    channel = DaskChannel(report_to) if report_to is not None else None
    if isolate or timeout is not None:
        raw, error = _call_in_child(objective, params, timeout, channel)
    elif channel is not None:
        with channel.active():
            raw, error = _isolated.call(objective, params)
    else:
        raw, error = _isolated.call(objective, params)
    pruned = channel is not None and channel.stopped
    if pruned:
        # Told to stop: its value is the last it reported, whatever happened after.
        assert channel is not None
        value, error = channel.last_value, None
        metrics = jsonable(raw) if isinstance(raw, Mapping) else {}
    elif error is None:
        try:
            value, metrics = parse_result(raw, objective_key)
        except (TypeError, ValueError, KeyError) as exc:
            error = f"{type(exc).__name__}: {exc.args[0]}"
            metrics = jsonable(raw) if isinstance(raw, Mapping) else {}
    finished = time.time()
    return Outcome(
        value=value,
        metrics=metrics,
        error=error,
        started=started,
        finished=finished,
        worker=_worker_name(),
        host=socket.gethostname(),
        device=os.environ.get("CUDA_VISIBLE_DEVICES"),
        pruned=pruned,
        paused=pruned and channel is not None and channel.pauses,
    )


@dataclass(frozen=True)
class TrialRun:
    """What every trial of one search runs, and how."""

    objective: Callable[..., Any] | PackedObjective
    objective_key: str | None = None
    gpus_per_trial: int = 1
    isolate: bool = False
    timeout: float | None = None
    pruner: Pruner | None = None  # a reporting trial waits for its verdicts
    study: str | None = None  # the study's name (dtune.current_trial)


def submit_trial(
    client: Client,
    run: TrialRun,
    params: Mapping[str, Any],
    *,
    key: str,
    use_gpus: bool,
    report_to: ReportTo | None = None,
) -> Future:
    """Submit one :func:`run_trial` to Dask under ``key`` (Dask treats equal keys as one
    task), asking for ``run.gpus_per_trial`` GPUs when the workers advertise GPUs."""
    return client.submit(
        run_trial,
        run.objective,
        dict(params),
        run.objective_key,
        isolate=run.isolate,
        timeout=run.timeout,
        report_to=report_to,
        key=key,
        resources={"GPU": run.gpus_per_trial} if use_gpus else None,
        pure=False,
    )


class Backend(Protocol):
    """Where the search loop runs trials: a Dask cluster (:class:`DaskBackend`) or a
    simulation (:class:`dtune.sim.SimulatedBackend`). Used from one thread."""

    dashboard_link: str | None

    def now(self) -> float:
        """The clock trials are timed by (UNIX seconds, or simulated ones)."""

    def slots(self) -> int:
        """How many trials can run at once now (waits for a first worker if none)."""

    def submit(self, trial: Trial) -> None:
        """Start running ``trial``."""

    def wait(self, timeout: float) -> list[tuple[int, Outcome | None]]:
        """Trials finished so far, waiting up to ``timeout`` s for a first one (or a
        report). A None outcome: the run was lost (cancelled by someone else, its result
        unreachable) and the trial should run again."""

    def take_reports(self) -> list[IncomingReport]:
        """Reports that running trials sent since the last call, in order."""

    def answer(self, report: IncomingReport, stop: bool) -> None:
        """Tell the trial that sent ``report`` (if it waits) whether to stop."""

    def share_cutoffs(self, table: dict[tuple[int, float], float], minimize: bool) -> None:
        """Let the workers judge reports at rungs themselves from now on, with the
        pruner's cutoffs (:meth:`dtune.pruners.Pruner.cutoffs`)."""

    def placements(self) -> dict[int, str]:
        """Workers of running trials, where known."""

    def check(self) -> None:
        """Raise :class:`~dtune.exceptions.SchedulerLostError` if the cluster is gone."""

    def cancel(self) -> list[int]:
        """Stop every running trial; their numbers."""


def _unreachable(sent: concurrent.futures.Future[Any]) -> None:
    """Log a verdict or cutoffs that could not be sent (the scheduler went, say)."""
    if not sent.cancelled() and sent.exception() is not None:
        logger.debug("dtune: a message to the workers was not delivered: %r", sent.exception())


class DaskBackend:
    """Trials as Dask futures on ``client``, collected with ``as_completed``.

    Parameters
    ----------
    client
        The Dask client.
    run
        What each trial runs (the search's objective arrives packed:
        :class:`PackedObjective`).
    key_prefix
        Task keys are ``<key_prefix>-<trial number>``.
    """

    def __init__(self, client: Client, run: TrialRun, key_prefix: str) -> None:
        from distributed import as_completed

        self.client = client
        self.run = run
        self.key_prefix = key_prefix
        self.dashboard_link: str | None = client.dashboard_link
        self._ac = as_completed(loop=client.loop, with_results=False)
        self._running: dict[Future, int] = {}
        self._runs: dict[int, int] = {}  # trial number -> runs submitted (their keys)
        self._slots, self._use_gpus = 0, False
        self._slots_checked = self._placed = -math.inf
        # Trials' reports arrive as Dask events on this topic, in the client's event loop.
        self.topic = f"{key_prefix}-reports"
        self._reports: collections.deque[IncomingReport] = collections.deque()
        self._cutoffs: Cutoffs | None = None  # the newest sent to the workers
        client.subscribe_topic(self.topic, self._on_report)

    def close(self) -> None:
        """Stop listening for reports."""
        with contextlib.suppress(Exception):  # a client already closed has none
            self.client.unsubscribe_topic(self.topic)

    def _on_report(self, event: tuple[float, dict[str, Any]]) -> None:
        message = event[1]
        self._reports.append(
            IncomingReport(
                number=int(message["number"]),
                step=int(message["step"]),
                value=float(message["value"]),
                metrics=dict(message.get("metrics") or {}),
                worker=message.get("worker"),
                seq=int(message.get("seq", 0)),
                wait=bool(message.get("wait")),
            )
        )
        with self._ac.thread_condition:  # wake the driver's wait
            self._ac.thread_condition.notify_all()

    def take_reports(self) -> list[IncomingReport]:
        taken = []
        while self._reports:
            taken.append(self._reports.popleft())
        return taken

    def answer(self, report: IncomingReport, stop: bool) -> None:
        if report.wait and report.worker is not None:
            self._send(deliver, self.topic, report.number, report.seq, stop, to=[report.worker])

    def share_cutoffs(self, table: dict[tuple[int, float], float], minimize: bool) -> None:
        known = self._cutoffs
        if known is not None and known.table == table and known.minimize == minimize:
            return
        self._cutoffs = Cutoffs((known.version if known else 0) + 1, minimize, dict(table))
        if table:
            self._send(deliver_cutoffs, self.topic, self._cutoffs, to=None)

    def _send(self, function: Any, *args: Any, to: list[str] | None) -> None:
        """Run coroutine ``function(*args)`` on workers ``to`` (None: every one) from the
        client's event loop, without waiting: Client.run waits for the scheduler's
        broadcast, a round trip to each worker, and for a worker that died since, for
        the scheduler's 30 s connect timeout (a trial of it is rerun elsewhere)."""
        sending = self.client.run(
            function, *args, workers=to, wait=False, on_error="ignore", asynchronous=True
        )
        with contextlib.suppress(RuntimeError):  # the client's loop has stopped
            loop = self.client.loop.asyncio_loop  # type: ignore[union-attr]
            done = asyncio.run_coroutine_threadsafe(sending, loop)
            done.add_done_callback(_unreachable)

    def now(self) -> float:
        return time.time()

    def slots(self) -> int:
        from dtune.cluster import cluster_slots

        idle = not self._running
        if time.monotonic() - self._slots_checked > _REFRESH_S or (idle and self._slots == 0):
            self._slots, self._use_gpus = cluster_slots(self.client, self.run.gpus_per_trial)
            self._slots_checked = time.monotonic()
        # No worker (all restarting after a crash, say) and nothing running that could
        # free a slot: wait for one, or the search would end with trials left to run.
        while idle and self._slots == 0:
            self.client.wait_for_workers(1)
            self._slots, self._use_gpus = cluster_slots(self.client, self.run.gpus_per_trial)
            self._slots_checked = time.monotonic()
        return self._slots

    def submit(self, trial: Trial) -> None:
        # A promoted trial runs again in this search: its own key for each run.
        runs = self._runs[trial.number] = self._runs.get(trial.number, 0) + 1
        key = f"{self.key_prefix}-{trial.number}" + ("" if runs == 1 else f"-{runs}")
        pruner = self.run.pruner
        stops_at = pruner.stops_for(trial) if pruner is not None else None
        report_to = ReportTo(
            self.topic,
            trial.number,
            wait=pruner is not None,
            wait_at=None if stops_at is None else tuple(stops_at),
            group=pruner.group_of(trial.number) if pruner is not None else 0,
            cutoffs=self._cutoffs,
            study=self.run.study,
            recorded=tuple(r.step for r in trial.reports),
            pause=pruner is not None and pruner.promotes,
        )
        future = submit_trial(
            self.client,
            self.run,
            trial.params,
            key=key,
            use_gpus=self._use_gpus,
            report_to=report_to,
        )
        self._running[future] = trial.number
        self._ac.add(future)

    def wait(self, timeout: float) -> list[tuple[int, Outcome | None]]:
        ac = self._ac
        # as_completed notifies thread_condition after queueing each finished future.
        with ac.thread_condition:
            if not ac.has_ready() and not self._reports:
                ac.thread_condition.wait(timeout)
        done = list(ac.next_batch(block=False)) if ac.has_ready() else []
        fetched = self._fetch([f for f in done if f.status == "finished"])
        results: list[tuple[int, Outcome | None]] = []
        for future in done:
            number = self._running.pop(future)
            results.append((number, fetched.get(future) or self._outcome(future)))
            # Its result is in hand: let Dask forget it, or it would rerun the trial to
            # get it back if the worker holding it died.
            future.release()
        return results

    def _fetch(self, finished: list[Future]) -> dict[Future, Outcome]:
        """The outcomes of finished futures in one round trip to the client's event loop
        (a ``result()`` per future is a round trip each: at 256 workers the driver spent
        half its time waiting on them). On any trouble, none: each is fetched alone."""
        if not finished:
            return {}
        try:
            values = self.client.gather(finished)
        except Exception:  # each is fetched again, and judged, alone
            return {}
        return {f: v for f, v in zip(finished, values, strict=True) if isinstance(v, Outcome)}

    @staticmethod
    def _outcome(future: Future) -> Outcome | None:
        # A future cancelled by someone else (client.cancel, a restart, a lost scheduler)
        # or whose result can no longer be fetched did not fail: its trial runs again.
        if future.status == "cancelled":
            return None
        try:
            if future.status == "finished":
                outcome = future.result()
                if isinstance(outcome, Outcome):
                    return outcome
            if future.status == "error":
                exc = future.exception()
                return Outcome(value=None, error=f"Dask could not run the trial: {exc!r}")
        except OSError:  # the connection to the scheduler went while fetching
            return None
        return Outcome(value=None, error=f"the trial's Dask future ended as {future.status!r}")

    def placements(self) -> dict[int, str]:
        # At most once a second: it asks the scheduler.
        if not self._running or time.monotonic() - self._placed < _REFRESH_S:
            return {}
        self._placed = time.monotonic()
        keys = {f.key: n for f, n in self._running.items()}
        names = {
            address: str(info.get("name", address))
            for address, info in self.client.scheduler_info(n_workers=-1)["workers"].items()
        }
        return {
            keys[key]: names.get(address, address)
            for address, processing in self.client.processing().items()
            for key in processing
            if key in keys
        }

    def check(self) -> None:
        deadline = time.monotonic() + _RECONNECT_S
        while self.client.status == "connecting" and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.client.status == "running":
            return
        address = getattr(self.client.scheduler, "address", None)
        raise SchedulerLostError(
            f"lost the Dask scheduler at {address} (the client is {self.client.status!r} "
            f"after {_RECONNECT_S:g} s)"
        )

    def cancel(self) -> list[int]:
        futures = list(self._running)
        if futures and self.client.status == "running":
            try:
                self.client.cancel(futures)
            except Exception:  # the scheduler may be going; the store matters more
                logger.exception("dtune: could not cancel running trials")
        numbers = list(self._running.values())
        self._running.clear()
        return numbers
