"""Suggestions computed ahead in a process of its own, with the driver's own optimizer copy
as the initial design, the source of model-free points while the process starts or is
slow to answer (the driver never fits or searches on the refill path), and the fallback
when the process is gone for good.

The process talks to the driver over a socket pair (see :mod:`dtune.suggest.service` for
the protocol). On Linux it is forked from the driver, which has scikit-optimize imported
already (its own optimizer copy): it is up in milliseconds, so the model serves from the
first result after the initial design, even on a warm cluster with sub-second trials. A
process started by path (``dtune/suggest/_server.py``) would spend 2-3 s importing
scikit-optimize first, and the driver would hand out model-free points meanwhile. The
forked child keeps nothing of the driver but what the suggestions need: it lets go of
every inherited file descriptor (Dask's sockets, the store, a notebook's channels), its
standard streams write to the driver's file descriptors 1 and 2, it runs in its own
session, and it leaves with ``os._exit`` (no ``atexit`` or finalizer of the driver's
runs). The driver's objects are frozen out of the child's garbage collections, so the
child does not copy the driver's memory by touching it. A forked child that does not
answer within seconds (a lock another thread of the driver held at the fork) is replaced
by one started by path, as is one lost for any other reason (only a suggester's first
process is forked), and elsewhere than on Linux every process is started by path. Either
way the driver's ``__main__`` is never imported or run again, so a search runs the same
from a script without a main guard, standard input, ``python -c`` or a notebook.

If the process exits, is killed (the OOM killer picks the driver's biggest process
first) or stops answering, the search goes on with model-free points from the driver's
copy, one warning says what happened, and a new process is started, at most
``max_restarts`` times.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from dtune.ledger import ModelState
from dtune.optimizer import OptimizerSettings, Point
from dtune.space import point_key
from dtune.suggest.base import Suggester
from dtune.suggest.local import InProcessSuggester

__all__ = ["ProcessSuggester"]

logger = logging.getLogger("dtune")

# The child's script, run by path (importing it here would run its set-up in the driver).
_SERVER = Path(__file__).with_name("_server.py")
# How long the driver waits for a fresh suggestion before it draws one itself, at most
# (set_patience shortens it for short trials); it waits again only once the process has
# sent something since.
_WAIT_S = 1.0
# Meanwhile, the driver answers its trials' reports this often.
_WAIT_SLICE_S = 0.005
# A forked process is up in milliseconds; one silent for this long is taken for stuck
# (a lock held at the fork by another of the driver's threads) and replaced by path.
_FORK_START_S = 15.0
# Where forking the driver is safe enough to be the default (see the module's notes).
_CAN_FORK = sys.platform.startswith("linux") and hasattr(os, "fork")


class ProcessSuggester(Suggester):
    """The driver's side of the suggestion process.

    Parameters
    ----------
    local
        The driver's in-process suggester (subscribed to the ledger on its own): it
        draws the initial design, covers the process's start-up, and takes over when
        the process is gone; a restarted process starts from its state.
    depth
        How many fresh suggestions the process keeps ready (see :meth:`set_slots`).
    max_restarts
        New processes started after the first one is lost, at most.
    answer_timeout
        A process that says nothing for this long while suggestions are wanted is
        taken for hung, killed and replaced.
    start_timeout
        A process started by path that is not up after this long is killed and replaced.
    fork
        Fork the process from the driver (up at once) rather than start it by path
        (2-3 s of imports first). Default: on Linux. Only the first process is forked:
        one that is not up within 15 s, or is lost for any reason, is replaced by one
        started by path.

    Notes
    -----
    Used from one thread (the driver loop). The process serves until :meth:`close` (a
    ``Study`` keeps it across its ``optimize`` calls, so a second call is served by a
    process that is up and has the model).
    """

    def __init__(
        self,
        local: InProcessSuggester,
        *,
        depth: int = 2,
        max_restarts: int = 3,
        answer_timeout: float = 20.0,
        start_timeout: float = 120.0,
        fork: bool | None = None,
    ) -> None:
        self.local = local
        self.fork = _CAN_FORK if fork is None else fork  # how the next process starts
        self.depth = depth
        self.max_restarts = max_restarts
        self.answer_timeout = answer_timeout
        self.start_timeout = start_timeout
        self.restarts = 0
        self.patience = _WAIT_S
        self.failures: list[str] = []
        self._conn: Connection | None = None
        self._process: subprocess.Popen[bytes] | _Forked | None = None
        self._ready: list[tuple[int, Point]] = []
        self._up = False
        self._model_wanted = False
        self._spawned = self._heard = 0.0
        self._starved_since: float | None = None
        self.ask_seconds: list[float] = []  # each batch's compute time, in the process
        self.fit_seconds: list[float] = []  # each hyperparameter refit, in the process
        # each refit of a trust region's or restart search's model, in the process
        self.search_fit_seconds: list[float] = []
        self.wait_seconds: list[float] = []  # each time the driver waited for a suggestion
        # The process's CPU seconds: batches ("ask"), refits ("model"), "search" refits.
        self.cpu_seconds = dict.fromkeys(("ask", "model", "search"), 0.0)
        self.drawn_here = 0  # points the driver drew itself (start-up, slow answers, fallback)
        self.drawn_starting = 0  # of those, while the process was starting

    # -- the process ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the process, unless one is running (a lost one gets its restarts back)."""
        if self._conn is None:
            self.restarts = 0
            self._spawn()
        else:
            # A new call: its first fill waits for the process again, even if the last
            # call ended short of suggestions.
            self._starved_since = None

    def close(self) -> None:
        """Stop the process (within a second; it is killed if it does not stop)."""
        self._stop()

    @property
    def alive(self) -> bool:
        """True while a suggestion process is running (it may still be starting)."""
        return self._conn is not None

    @property
    def up(self) -> bool:
        """True once the process has imported what it needs and answered (takes in the
        messages waiting first)."""
        self._receive()
        return self._up

    @property
    def pid(self) -> int | None:
        """The suggestion process's id, while there is one."""
        return self._process.pid if self._process is not None and self.alive else None

    def _spawn(self) -> None:
        parent_end, child_end = socket.socketpair()
        with child_end:
            if self.fork:
                try:
                    self._process = _fork(child_end.fileno())
                except OSError as error:  # out of memory or processes: start one by path
                    logger.warning("dtune: could not fork the suggestion process: %s", error)
                    self.fork = False
            if not self.fork:
                self._process = subprocess.Popen(
                    [sys.executable, str(_SERVER), str(child_end.fileno())],
                    pass_fds=(child_end.fileno(),),
                    stdin=subprocess.DEVNULL,
                    # Its own session: a Ctrl-C in the terminal goes to the driver only
                    # (the process exits when the driver's end of the socket closes).
                    start_new_session=True,
                )
        self._conn = Connection(parent_end.detach())
        self._up = False
        self._ready = []
        self._spawned = self._heard = time.monotonic()
        self._starved_since = None
        told_points, told_values = self.local.optimizer.history
        told_noise = self.local.optimizer.told_noise
        state = (
            "init",
            self.local.space,
            self._process_settings(),
            list(zip(told_points, told_values, told_noise, strict=True)),
            list(self.local.pending.items()),
            self.depth if self._model_wanted else 0,
        )
        if not isinstance(self._process, _Forked):
            self._send(sys.path)  # before it unpickles what refers to modules
        self._send(state)

    def _process_settings(self) -> OptimizerSettings:
        """The driver's settings with a random stream of the process's own: the same
        stream would propose the driver's own points again."""
        settings = self.local.settings
        seed = settings.random_state
        if isinstance(seed, int):
            return settings.replace(random_state=(seed * 7919 + 1 + self.restarts) % 2**31)
        return settings

    def _stop(self) -> None:
        conn, process = self._conn, self._process
        self._conn = None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.send(("stop",))
            conn.close()
        if process is not None:
            # It holds nothing worth waiting for: one still importing, or in the middle
            # of a long refit, is killed rather than let the search's end wait on it.
            try:
                process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _lost(self, what: str) -> None:
        """The process is gone or useless: say so once, carry on here, start another."""
        if self._conn is None:
            return
        self.failures.append(what)
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        self._stop()
        # Whatever took it (a lock held at the fork, the OOM killer), its replacements
        # are started by path: a fork's risk is taken once per suggester.
        self.fork = False
        if self.restarts < self.max_restarts:
            self.restarts += 1
            plan = f"starting a new one ({self.restarts} of at most {self.max_restarts})"
        else:
            plan = "not starting another: the driver draws every suggestion from now on"
        logger.warning(
            "dtune: the suggestion process %s; the search goes on with suggestions drawn "
            "in the driver; %s",
            what,
            plan,
        )
        if plan.startswith("starting"):
            self._spawn()

    def _send(self, message: Any) -> None:
        if self._conn is None:
            return
        try:
            self._conn.send(message)
        except OSError:
            self._lost(f"went away ({self._exit_status()})")

    def _exit_status(self) -> str:
        if self._process is None:
            return "no process"
        try:
            code = self._process.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            return "its connection closed"
        return f"exit status {code}" if code >= 0 else f"killed by signal {-code}"

    def _receive(self, timeout: float = 0.0) -> None:
        """Take in every message waiting, waiting up to ``timeout`` s for a first one."""
        while self._conn is not None:
            try:
                if not self._conn.poll(timeout):
                    return
                message = self._conn.recv()
            except (EOFError, OSError):
                self._lost(f"went away ({self._exit_status()})")
                return
            timeout = 0.0
            self._heard = time.monotonic()
            self._handle(message)

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "hello":
            self._up = True
        elif kind == "ready":
            self._ready.extend((message[1], p) for p in message[2])
            self.ask_seconds.append(message[3])
            self.cpu_seconds["ask"] += message[4]
            self._starved_since = None
        elif kind == "fitted":
            (self.fit_seconds if message[2] == "model" else self.search_fit_seconds).append(
                message[1]
            )
            self.cpu_seconds[message[2]] += message[3]
        elif kind == "drop":
            dropped = set(message[1])
            self._ready = [(g, p) for g, p in self._ready if point_key(p) not in dropped]
            # Any of them taken already was reported as submitted before this ack.
            self._send(("dropped", message[1]))
        elif kind == "error":
            self._lost(f"failed:\n{message[1]}")

    # -- the suggester --------------------------------------------------------------------

    def suggest(self, free: int = 1, while_waiting: Callable[[], None] | None = None) -> Point:
        if self.local.in_initial_design:
            return self.local.suggest(free)
        if not self._model_wanted:
            self._model_wanted = True
            self._send(("depth", self.depth))
        if not self.ready_now():
            started = time.perf_counter()
            self._wait_for_word(started + self.patience, while_waiting)
            self.wait_seconds.append(time.perf_counter() - started)
            self._take_in()
        if self._ready:
            newest = max(range(len(self._ready)), key=lambda i: (self._ready[i][0], -i))
            return self._ready.pop(newest)[1]
        self._check_responsive()
        self.drawn_here += 1
        self.drawn_starting += self._conn is not None and not self._up
        # Starting, restarting or slow: a point without the model, so the driver never
        # fits or searches on the refill path; gone for good: the driver's own model.
        return self.local.explore() if self._conn is not None else self.local.suggest(free)

    def _wait_for_word(self, deadline: float, while_waiting: Callable[[], None] | None) -> None:
        """Wait until the process sends something, or until ``deadline``; call
        ``while_waiting`` every ``_WAIT_SLICE_S`` meanwhile."""
        heard = self._heard
        while self._conn is not None and self._heard == heard:
            left = deadline - time.perf_counter()
            if left <= 0:
                return
            self._receive(timeout=left if while_waiting is None else min(left, _WAIT_SLICE_S))
            if while_waiting is not None and self._heard == heard:
                while_waiting()

    def _take_in(self) -> None:
        """Take in what the process sent, and drop ready points the driver knows: one
        computed before the process heard of a point the driver drew itself (start-up,
        fallback) may be that same point."""
        self._receive()
        self._ready = [(g, p) for g, p in self._ready if not self.local.knows(p)]

    def ready_now(self) -> bool:
        if self.local.in_initial_design or self._conn is None:
            return True
        self._take_in()
        return bool(self._ready) or not self._up or self._starved_since is not None

    def _check_responsive(self) -> None:
        now = time.monotonic()
        if self._conn is None:
            return
        if not self._up:
            if isinstance(self._process, _Forked) and now - self._spawned > _FORK_START_S:
                self._lost(f"forked from the driver did not start within {_FORK_START_S:g} s")
            elif now - self._spawned > self.start_timeout:
                self._lost(f"did not start within {self.start_timeout:g} s")
            return
        if self._starved_since is None:
            self._starved_since = now
        silent = now - max(self._heard, self._starved_since)
        if now - self._starved_since > self.answer_timeout and silent > self.answer_timeout:
            self._lost(f"did not answer for {self.answer_timeout:g} s")

    def started(self, number: int, point: Point) -> None:
        key = point_key(point)
        self._ready = [(g, p) for g, p in self._ready if point_key(p) != key]
        self._send(("submitted", number, point))

    def finished(
        self,
        results: Sequence[tuple[int, Point, float | None]],
        noise: Mapping[int, float] | None = None,
    ) -> None:
        noise = noise or {}
        self._send(("finished", [(n, value, noise.get(n, 0.0)) for n, _, value in results]))

    def observed(self, results: Sequence[tuple[Point, float]]) -> None:
        self._send(("observed", list(results)))

    def retold(self, results: Sequence[tuple[Point, float, float]], refit: bool = True) -> None:
        self._send(("retold", list(results), refit))

    def reset(self, state: ModelState) -> None:
        # The driver's copy was reset first (it subscribed first); a running process
        # rebuilds its optimizer in place, and what it had ready is dropped.
        if self._conn is None:
            return
        self._ready = []
        told = [(p, v, n) for (p, v), n in zip(state.told, state.noise, strict=True)]
        self._send(("reset", told, state.running))

    def set_slots(self, slots: int) -> None:
        """Keep enough suggestions ready for the results that arrive while the next
        batch is computed (a quarter of the slots, at least 2)."""
        depth = max(2, math.ceil(slots / 4))
        if depth != self.depth:
            self.depth = depth
            if self._model_wanted:
                self._send(("depth", depth))

    def set_patience(self, seconds: float) -> None:
        self.patience = min(_WAIT_S, seconds)

    def summary(self) -> dict[str, Any]:
        asks, fits, waits = self.ask_seconds or [0.0], self.fit_seconds or [0.0], self.wait_seconds
        stats = {
            "asks": len(self.ask_seconds),
            "ask_median_ms": 1000 * statistics.median(asks),
            "ask_max_ms": 1000 * max(asks),
            "fits": len(self.fit_seconds),
            "fit_max_s": max(fits),
            "fit_total_s": sum(fits),
            "search_fits": len(self.search_fit_seconds),
            "search_fit_max_s": max(self.search_fit_seconds, default=0.0),
            "ask_cpu_s": self.cpu_seconds["ask"],
            "fit_cpu_s": self.cpu_seconds["model"],
            "search_fit_cpu_s": self.cpu_seconds["search"],
            "waits": len(waits),
            "wait_max_ms": 1000 * max(waits, default=0.0),
            "wait_total_s": sum(waits),
            "drawn_in_driver": self.drawn_here,
            "drawn_while_starting": self.drawn_starting,
            "restarts": self.restarts,
            **self.local.summary(),
        }
        # The next summary covers what comes after this one (the next optimize call).
        self.ask_seconds, self.fit_seconds, self.wait_seconds = [], [], []
        self.search_fit_seconds = []
        self.cpu_seconds = dict.fromkeys(self.cpu_seconds, 0.0)
        self.drawn_here = self.drawn_starting = 0
        return stats


class _Forked:
    """A forked child, with the part of ``subprocess.Popen`` the suggester uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored)
                self.returncode = 0
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"forked process {self.pid}", timeout or 0.0)
            time.sleep(0.005)
        return code

    def kill(self) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


def _fork(fd: int) -> _Forked:
    """Fork the suggestion process; the child serves on ``fd`` and never returns."""
    from dtune.suggest.service import serve  # imported here: the child imports nothing

    # The driver's objects stay out of the child's collections: a collection touches
    # every object it scans, and each page it touches would be copied.
    gc.freeze()
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns that forking a multi-threaded process may deadlock the
            # child; a stuck child is replaced by one started by path.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError:
        gc.unfreeze()
        raise
    if pid:
        gc.unfreeze()
        return _Forked(pid)
    code = 1
    try:
        _let_go_of_the_driver(keep=fd)
        serve(Connection(fd))
        code = 0
    except BaseException:
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        os._exit(code)


def _let_go_of_the_driver(keep: int) -> None:
    """In the forked child: its own session and default signals; every inherited file
    descriptor but ``keep`` and the standard streams points at /dev/null (the numbers
    stay taken, so an object of the driver's that closes its own cannot close one of
    the child's), so Dask's sockets, a dashboard's port and the store are the driver's
    alone; the standard streams are the driver's file descriptors (a notebook's are
    channels served by threads the child does not have)."""
    os.setsid()  # a Ctrl-C in the terminal goes to the driver only
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError, OSError):
            signal.signal(signum, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDWR)
    for name in os.listdir("/proc/self/fd"):
        number = int(name)
        if number not in (1, 2, keep, null):
            with contextlib.suppress(OSError):
                os.dup2(null, number)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
