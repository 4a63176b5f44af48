"""Intermediate results from inside a running trial: :func:`report`, and the channels
that carry reports to the driver and its verdicts back.

On a Dask worker a report travels as a Dask event: ``Worker.log_event`` on the search's
topic, which the driver's client subscribes to. The driver records it (the store
first), asks the study's pruner, and sends the verdict straight back with
``Client.run`` on that worker, where :func:`deliver` wakes the reporting thread::

    objective ── report(v, step) ──▶ worker.log_event ──▶ scheduler ──▶ driver: ledger.report,
        ▲                                                                pruner.should_stop
        └── TrialPruned, or carry on ◀── deliver ◀── Client.run(workers=[w]) ◀──┘

In an isolated child process (``isolate=True``, ``trial_timeout``) the objective's
reports go over a socket to the worker thread that started the child, which forwards
them the same way and passes the verdict back.

Without a pruner nothing waits for a verdict: a report is sent and the objective goes
on at once. With ASHA or Hyperband, only a report that reaches one of the trial's rungs
can stop the trial (:meth:`dtune.pruners.Pruner.stops_at`); the others are sent the same
way and recorded, without holding the trial up. A report at a rung is judged on the
worker when the worker knows the rung's cutoff (:class:`Cutoffs`: the driver sends them
with each trial and with :func:`deliver_cutoffs` whenever they change); only until then
does it wait for the driver's verdict::

    driver: rung values change ──▶ Cutoffs ──▶ Client.run(deliver_cutoffs) on every worker
    objective ── report(v, step at a rung) ──▶ v against the rung's cutoff: stop or go on,
                 at once; the report still goes to the driver, to be recorded

Like :mod:`dtune.execution`, this module imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import shutil
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from dtune.exceptions import TrialAbandoned, TrialPaused, TrialPruned
from dtune.jsonable import jsonable

__all__ = [
    "Channel",
    "ChildChannel",
    "Cutoffs",
    "DaskChannel",
    "ReportTo",
    "TrialContext",
    "current_trial",
    "deliver",
    "deliver_cutoffs",
    "forward",
    "report",
]

# A reporting trial waits this long for the driver's verdict, then carries on without
# waiting for verdicts any more (a driver too busy to answer). A trial whose driver is
# gone (Dask cancelled its task) stops at its next report, or at once if it waits, with
# TrialAbandoned.
VERDICT_TIMEOUT_S = 30.0
_CHECK_S = 0.25

_local = threading.local()
_lock = threading.Lock()
_open: list[Channel] = []  # every channel of a trial running in this process
_waiting: dict[tuple[str, int], DaskChannel] = {}  # (topic, trial number) -> channel
_known: dict[str, Cutoffs] = {}  # topic -> the newest cutoffs this process has heard of
_KNOWN_KEPT = 16  # searches whose cutoffs a worker keeps (the latest ones)


def report(value: float, step: int, **metrics: Any) -> None:
    """Record an intermediate result of the running trial: its objective ``value``
    after ``step`` units of resource (an epoch's validation loss after epoch ``step``).

    Parameters
    ----------
    value
        The objective's value now, in the study's direction; a finite number.
    step
        How much resource the trial has used (epochs, say); an int ≥ 0 that increases
        from one report to the next.
    **metrics
        Anything else worth recording with it (stored, shown by the dashboard).

    Raises
    ------
    TrialPruned
        When the study's pruner decided the trial should stop. Let it propagate, or
        catch it to clean up or save a checkpoint; either way the trial ends ``PRUNED``
        with this value.
    TrialPaused
        (A :class:`TrialPruned`.) When a promotion-type ASHA paused the trial at a rung:
        it ends ``PAUSED`` with this value, and runs again from the step after if it is
        promoted. Keep its checkpoint.
    TrialAbandoned
        (A :class:`TrialPruned`.) When the trial's search is gone (its driver stopped or
        died): nothing will record its result, and it runs again when the study resumes
        (:func:`current_trial`). Keep its checkpoint.
    ValueError, TypeError
        For a value that is not a finite number, or a step that is not an int ≥ 0 or
        does not come after the last one. Raised in the objective, so the trial fails
        with that message and the search goes on.

    Notes
    -----
    Outside a trial that dtune runs (calling the objective by hand, say) it checks its
    arguments and does nothing else.

    Examples
    --------
    >>> report(0.25, step=1, accuracy=0.9)   # outside a trial: checked, then nothing
    >>> report(float("nan"), step=2)
    Traceback (most recent call last):
    ...
    ValueError: dtune.report: value nan at step 2 is not finite
    """
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise TypeError(f"dtune.report: step={step!r} must be an int >= 0")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"dtune.report: value {value!r} ({type(value).__name__}) at step {step} is not a number"
        )
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"dtune.report: value {number!r} at step {step} is not finite")
    channel = _current()
    if channel is not None:
        channel.report(number, int(step), jsonable(metrics))


@dataclass(frozen=True)
class TrialContext:
    """The trial an objective is running as (:func:`current_trial`): its study's name
    and its number, which stay the same when the trial runs again after its driver or
    its worker died. Key a checkpoint by them to resume from it."""

    study: str
    number: int

    @property
    def key(self) -> str:
        """``STUDY-NUMBER``, the study's name quoted for a file name: a name for what
        the trial keeps across its runs (``checkpoints/{key}.pt``)."""
        return f"{urllib.parse.quote(self.study, safe='')}-{self.number}"


def current_trial() -> TrialContext | None:
    """The trial the calling objective runs as; None outside a trial of a search.

    A trial that was running when its driver or its worker died runs again under the
    same study and number. An objective that saved a checkpoint under them may load it
    and report on from the step after it: the reports recorded up to that step are
    kept, and only those from that step on are replaced. Without a checkpoint it starts
    from its first step again, and the earlier run's reports all go.

    Examples
    --------
    >>> current_trial() is None   # called by hand, outside a search
    True

    :func:`checkpoint_file` names a checkpoint by them, and removes it when the trial
    is done with it.
    """
    channel = _current()
    if channel is None or channel.study is None:
        return None
    return TrialContext(channel.study, channel.number)


@contextlib.contextmanager
def checkpoint_file(directory: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """The path of the running trial's checkpoint, the same each time the trial runs:
    ``directory/{current_trial().key}{suffix}`` (``directory`` is created).

    The objective loads it if it exists and saves to it as it goes. It is removed (a
    file, or a folder and what it holds) when the block ends: the trial returned,
    raised or was pruned, and will not run again. It is kept when the trial was
    abandoned (:class:`TrialAbandoned`: its driver is gone, and the trial runs again
    when the study resumes) or paused (:class:`TrialPaused`: it runs again if a
    promotion-type ASHA promotes it, whether the objective let the exception out or
    caught it), and a worker process that dies runs no cleanup, so Dask's
    rerun of the trial finds it. An isolated trial (``isolate=True``, ``trial_timeout``)
    whose process is killed (past its time) or dies fails, and the worker removes its
    checkpoint. Outside a search the path is a new one for each call, removed the same
    way.

    Examples
    --------
    >>> import tempfile
    >>> with checkpoint_file(tempfile.mkdtemp(), ".pt") as path:   # by hand: a new path
    ...     _ = path.write_text("epoch 3")
    >>> path.exists()
    False

    In an objective::

        with dtune.checkpoint_file("/shared/checkpoints", ".pt") as path:
            model, done = load(path) if path.exists() else (build(lr), 0)
            for epoch in range(done + 1, epochs + 1):
                val_loss = train_one_epoch(model)
                dtune.report(val_loss, epoch)       # TrialPruned: the file goes too
                save(model, epoch, path)            # to a temporary name, then renamed
            return val_loss

    Report an epoch before saving it: a worker that dies between the two has the epoch
    trained and reported again, where the other order would leave its report missing.
    """
    trial = current_trial()
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"outside-a-search-{uuid.uuid4().hex}" if trial is None else trial.key
    path = folder / f"{name}{suffix}"
    channel = _current()
    if channel is not None:
        channel.hold(str(path))
    abandoned = False
    try:
        yield path
    except TrialAbandoned:
        abandoned = True
        raise
    finally:
        paused = channel is not None and channel.paused
        if not (abandoned or paused):
            remove_checkpoint(path)


def remove_checkpoint(path: str | os.PathLike[str]) -> None:
    """Remove a checkpoint: a file, or a folder and what it holds; gone already is fine."""
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def _current() -> Channel | None:
    channel: Channel | None = getattr(_local, "channel", None)
    if channel is None:
        # A thread the objective started (a data loader, a Keras callback thread): the
        # trial's channel, if this process runs only one trial.
        with _lock:
            if len(_open) == 1:
                channel = _open[0]
    return channel


class Channel:
    """A running trial's side of its reports: checks the order of steps, remembers the
    last report, and raises :class:`TrialPruned` once the driver says stop
    (:class:`TrialPaused` if its stops are pauses: ``pauses``)."""

    def __init__(self, number: int, study: str | None = None, pauses: bool = False) -> None:
        self.number = number
        self.study = study  # None: not told (current_trial then says None)
        self.pauses = pauses  # a stop is a pause (a promotion-type ASHA)
        self.last_step: int | None = None
        self.last_value: float | None = None
        self.stopped = False

    @property
    def paused(self) -> bool:
        """Whether the trial was told to stop, and the stop is a pause."""
        return self.stopped and self.pauses

    def _stop(self, step: int | None, value: float | None = None) -> TrialPruned:
        """What :meth:`report` raises once the trial is told to stop."""
        what = "paused" if self.pauses else "pruned"
        at = f"at step {step}" + ("" if value is None else f" (value {value:g})")
        kind = TrialPaused if self.pauses else TrialPruned
        return kind(f"trial {self.number} was {what} {at} by the study's pruner")

    def report(self, value: float, step: int, metrics: dict[str, Any]) -> None:
        """Send one report (checked by :func:`report`); raises ``TrialPruned`` on a stop."""
        if self.stopped:
            raise self._stop(self.last_step)
        if self.last_step is not None and step <= self.last_step:
            raise ValueError(
                f"dtune.report: step {step} of trial {self.number} does not come after its "
                f"last step, {self.last_step}; steps must increase"
            )
        self.last_step, self.last_value = step, value
        try:
            stop = self.send(value, step, metrics)
        except TrialAbandoned:
            self.stopped = True
            raise
        if stop:
            self.stopped = True
            raise self._stop(step, value)

    def send(self, value: float, step: int, metrics: dict[str, Any]) -> bool:
        """Deliver one report; True if the trial must stop. Raises
        :class:`TrialAbandoned` when nobody wants its result any more."""
        raise NotImplementedError

    def hold(self, path: str) -> None:
        """The trial keeps a checkpoint at ``path`` (:func:`checkpoint_file`). Only an
        isolated trial's channel passes it on: its process can be killed before it
        removes the checkpoint itself."""

    def _abandoned(self) -> TrialAbandoned:
        """What :meth:`send` raises when the trial's task was cancelled."""
        return TrialAbandoned(
            f"trial {self.number} was abandoned at step {self.last_step}: its search is "
            "gone (its driver stopped or died); it runs again when the study resumes"
        )

    @contextlib.contextmanager
    def active(self) -> Iterator[Channel]:
        """This channel as the calling thread's (and the process's only) one."""
        previous = getattr(_local, "channel", None)
        _local.channel = self
        with _lock:
            _open.append(self)
        try:
            yield self
        finally:
            _local.channel = previous
            with _lock:
                _open.remove(self)


@dataclass(frozen=True)
class Cutoffs:
    """A search's rung cutoffs as the driver last sent them
    (:meth:`dtune.pruners.Pruner.cutoffs`): per (group, rung), the largest value, to
    minimize, that goes on there. ``version`` grows with each new set.

    >>> cut = Cutoffs(version=3, minimize=True, table={(0, 1.0): 0.5})
    >>> cut.says_stop(0, 1.0, 0.7), cut.says_stop(0, 1.0, 0.5), cut.says_stop(0, 3.0, 9.0)
    (True, False, None)
    """

    version: int
    minimize: bool
    table: dict[tuple[int, float], float]

    def says_stop(self, group: int, rung: float, value: float) -> bool | None:
        """Whether ``value`` reported at ``rung`` stops a trial of ``group``; None if
        this rung has no cutoff yet (the driver decides)."""
        cutoff = self.table.get((group, rung))
        if cutoff is None:
            return None
        return (value if self.minimize else -value) > cutoff


def _learn(topic: str, cutoffs: Cutoffs) -> None:
    """Keep ``cutoffs`` for ``topic`` if they are newer than those known."""
    with _lock:
        known = _known.get(topic)
        if known is None or cutoffs.version > known.version:
            _known.pop(topic, None)
            _known[topic] = cutoffs  # the most recently updated last
            while len(_known) > _KNOWN_KEPT:
                del _known[next(iter(_known))]


async def deliver_cutoffs(topic: str, cutoffs: Cutoffs) -> None:
    """The driver's new cutoffs for search ``topic``; runs in each worker's event loop
    (sent with ``Client.run``, without waiting, like :func:`deliver`)."""
    _learn(topic, cutoffs)


@dataclass(frozen=True)
class ReportTo:
    """Where a trial's reports go: the search's Dask event topic, the trial's number,
    whether to wait for a verdict (there is a pruner), and at which resources
    (``wait_at``: a report waits if it is the first to reach one; None: every report).
    With ``cutoffs`` (the newest when the trial was submitted), a report at a rung whose
    cutoff the worker knows is judged there; ``group`` picks the trial's cutoffs.
    ``study`` names the trial's study (:func:`current_trial`); ``recorded`` holds the
    steps an earlier run of the trial reported, which a run that resumes from a
    checkpoint goes on from. With ``pause``, a stop is a pause (:class:`TrialPaused`)."""

    topic: str
    number: int
    wait: bool
    wait_at: tuple[float, ...] | None = None
    group: int = 0
    cutoffs: Cutoffs | None = None
    study: str | None = None
    recorded: tuple[int, ...] = ()
    pause: bool = False

    def waits(self, before: float, step: float) -> bool:
        """Whether a report at ``step``, after one at ``before``, waits for a verdict.

        >>> to = ReportTo("t", 0, wait=True, wait_at=(1.0, 3.0))
        >>> [to.waits(before, step) for before, step in ((0, 1), (1, 2), (2, 3), (2, 5), (3, 4))]
        [True, False, True, True, False]
        """
        if not self.wait:
            return False
        if self.wait_at is None:
            return True
        return self.rung(before, step) is not None

    def before_first(self, step: float) -> float:
        """The step that a run's first report, at ``step``, comes after: the last one an
        earlier run of the trial recorded below it (the driver keeps those, so the rungs
        they reached stay passed), or none.

        >>> resumed = ReportTo("t", 0, wait=True, recorded=(1, 2, 3, 4, 5))
        >>> resumed.before_first(4), resumed.before_first(1), resumed.before_first(7)
        (3, -inf, 5)
        """
        return max((s for s in self.recorded if s < step), default=-math.inf)

    def rung(self, before: float, step: float) -> float | None:
        """The highest of ``wait_at`` that a report at ``step``, after one at
        ``before``, reaches first; None if none (or no rungs)."""
        crossed = [r for r in self.wait_at or () if before < r <= step]
        return max(crossed) if crossed else None

    def judge_here(self, before: float, step: float, value: float) -> bool | None:
        """Whether a report that waits (:meth:`waits`) stops the trial, judged with the
        newest cutoffs this worker knows; None if it must wait for the driver."""
        rung = self.rung(before, step)
        with _lock:
            cutoffs = _known.get(self.topic)
        if rung is None or cutoffs is None:
            return None
        return cutoffs.says_stop(self.group, rung, value)


class DaskChannel(Channel):
    """Reports as Dask events from the worker running the trial; verdicts by
    :func:`deliver`."""

    def __init__(self, to: ReportTo) -> None:
        super().__init__(to.number, to.study, pauses=to.pause)
        self.to = to
        if to.cutoffs is not None:
            _learn(to.topic, to.cutoffs)
        self._wait = to.wait
        self._key: Any = None  # the Dask task running the trial
        self._seq = 0
        self._sent_step = -math.inf  # the step of the last report sent
        self._answered = threading.Event()
        self._verdict = False

    def _orphaned(self, worker: Any) -> bool:
        """Whether Dask cancelled the trial's task (its driver went away)."""
        task = worker.state.tasks.get(self._key)
        return task is None or task.state in ("cancelled", "released", "forgotten")

    def send(self, value: float, step: int, metrics: dict[str, Any]) -> bool:
        from distributed import get_worker

        worker = get_worker()
        if self._key is None:
            self._key = worker.get_current_task()
        if self._orphaned(worker):
            raise self._abandoned()  # nobody wants its result (its driver went)
        self._seq += 1
        first = self._seq == 1
        before = self.to.before_first(step) if first else self._sent_step
        at_rung = wait = self._wait and self.to.waits(before, step)
        # A first report past the first rung, with no earlier run known, may come from a
        # run that Dask started again (its worker died) from a checkpoint: the driver
        # knows which rungs the trial passed, so it judges that one.
        unsure = first and not self.to.recorded and step > min(self.to.wait_at or [math.inf])
        stop = self.to.judge_here(before, step, value) if wait and not unsure else None
        if stop is not None:
            wait = False  # judged here: the report is only recorded
        self._sent_step = step
        message = {
            "number": self.number,
            "seq": self._seq,
            "step": step,
            "value": value,
            "metrics": metrics,
            "worker": worker.address,
            "wait": wait,
            "at_rung": at_rung,
        }
        if not wait:
            worker.log_event(self.to.topic, message)
            return bool(stop)
        key = (self.to.topic, self.number)
        self._answered.clear()
        with _lock:
            _waiting[key] = self
        started = time.perf_counter()
        try:
            worker.log_event(self.to.topic, message)
            while not self._answered.wait(_CHECK_S):
                if self._orphaned(worker):
                    raise self._abandoned()
                if time.perf_counter() - started > VERDICT_TIMEOUT_S:
                    self._wait = False  # no verdict: carry on, and stop asking
                    return False
        finally:
            with _lock:
                _waiting.pop(key, None)
        return self._verdict

    def answer(self, seq: int, stop: bool) -> None:
        if seq == self._seq:  # a late verdict on an earlier report is dropped
            self._verdict = stop
            self._answered.set()


async def deliver(topic: str, number: int, seq: int, stop: bool) -> None:
    """The driver's verdict on report ``seq`` of trial ``number``; runs in the worker's
    event loop (sent with ``Client.run``, which only sends without waiting for an
    answer when the function is a coroutine)."""
    with _lock:
        channel = _waiting.get((topic, number))
    if channel is not None:
        channel.answer(seq, stop)


class ChildChannel(Channel):
    """In an isolated trial's child process: reports go to the worker thread that
    started it (:func:`forward` there), which answers with the verdict."""

    def __init__(self, number: int, conn: Connection, study: str | None = None) -> None:
        super().__init__(number, study)
        self.conn = conn

    def send(self, value: float, step: int, metrics: dict[str, Any]) -> bool:
        self.conn.send((value, step, metrics))
        answer = self.conn.recv()
        if answer == _ABANDONED:
            raise self._abandoned()
        if answer == _PAUSED:
            self.pauses = True
        return bool(answer)

    def hold(self, path: str) -> None:
        self.conn.send(path)  # unanswered: the worker removes it if this process is killed


# forward's answers besides stop (True) and carry on (False)
_ABANDONED = 2
_PAUSED = 3


def forward(conn: Connection, channel: Channel | None, held: list[str]) -> None:
    """Answer one report waiting on ``conn`` from a child's :class:`ChildChannel`,
    through ``channel`` (the worker's), or with "carry on" if there is none; a path the
    child holds a checkpoint at goes to ``held``, unanswered."""
    message = conn.recv()
    if isinstance(message, str):
        held.append(message)
        return
    value, step, metrics = message
    answer: bool | int = False
    if channel is not None:
        try:
            channel.report(value, step, metrics)
        except TrialAbandoned:
            answer = _ABANDONED
        except TrialPaused:
            answer = _PAUSED
        except TrialPruned:
            answer = True
    conn.send(answer)
