"""Suggesters: in-process batches, and the suggestion process on real processes, killed,
stopped and restarted."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time

import numpy as np
import pytest

from dtune import Real, SearchSpace
from dtune.ledger import ModelState
from dtune.optimizer import OptimizerSettings
from dtune.space import point_key
from dtune.suggest import InProcessSuggester, ProcessSuggester

SPACE = SearchSpace({"x": Real(-2.0, 2.0), "y": Real(-2.0, 2.0)})


def _value(point):
    return (point[0] - 0.5) ** 2 + (point[1] + 0.3) ** 2


class _Loop:
    """The driver's part, by hand: start points, finish them, as the ledger would tell."""

    def __init__(self, local, suggester):
        self.listeners = [local] if suggester is local else [local, suggester]
        self.suggester = suggester
        self.number = 0
        self.points = []

    def start(self, free=1):
        point = self.suggester.suggest(free)
        for listener in self.listeners:
            listener.started(self.number, point)
        self.points.append(point)
        self.number += 1
        return self.number - 1, point

    def finish(self, number, point):
        for listener in self.listeners:
            listener.finished([(number, point, _value(point))])


def test_an_in_process_batch_fills_free_slots_with_distinct_points_and_is_dropped_on_a_result():
    local = InProcessSuggester(SPACE, OptimizerSettings(n_initial_points=3, random_state=0))
    loop = _Loop(local, local)
    first = [loop.start() for _ in range(3)]
    for number, point in first:
        loop.finish(number, point)
    batch = [loop.start(free=4) for _ in range(4)]
    assert local.summary()["asks_here"] == 4  # three initial points, then one batch of four
    loop.finish(*batch[0])
    loop.start(free=1)
    # the rest of the batch was computed without it (a summary counts since the last one)
    assert local.summary()["asks_here"] == 1
    assert len({point_key(p) for p in loop.points}) == len(loop.points)


def _wait_until(condition, seconds=60.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _search(suggester, local, n, running=4, trial_seconds=0.0):
    """An asynchronous search of ``n`` points by hand, ``running`` at once, each result
    ``trial_seconds`` after the last."""
    loop = _Loop(local, suggester)
    live = [loop.start(free=running) for _ in range(running)]
    while live:
        time.sleep(trial_seconds)
        loop.finish(*live.pop(0))
        if loop.number < n:
            live.append(loop.start())
    return loop.points


@pytest.mark.parametrize("fork", [True, False], ids=["forked", "by path"])
def test_the_process_serves_the_model_after_the_driver_drew_the_initial_design(fork):
    local = InProcessSuggester(SPACE, OptimizerSettings(n_initial_points=4, random_state=0))
    with ProcessSuggester(local, fork=fork, depth=3) as suggester:
        _wait_until(lambda: suggester.up)
        # Trials of 0.1 s: points the driver draws while the process is slow to answer
        # (model-free ones) do not use up the search before its first batch arrives.
        points = _search(suggester, local, 24, trial_seconds=0.1)
        stats = suggester.summary()
    assert len({point_key(p) for p in points}) == 24  # no running or told point twice
    assert stats["asks"] >= 1  # batches came from the process
    assert stats["drawn_in_driver"] < 20 - 4, stats
    assert stats["fits"] >= 1
    assert stats["restarts"] == 0


def test_the_process_fits_a_stalled_searchs_trust_region_and_restarts_off_the_batch_path():
    local = InProcessSuggester(SPACE, OptimizerSettings(n_initial_points=4, random_state=0))
    rng = np.random.RandomState(0)
    X = rng.uniform(-2.0, -1.4, (120, 2)).tolist()  # every result in one corner
    y = [1.0 - 0.01 * i for i in range(10)] + list(0.95 + 0.05 * rng.rand(110))
    local.optimizer.tell(X, y)  # stalled for 110 results: past POLISH_AFTER
    local.optimizer.skip_initial(120)
    with ProcessSuggester(local, depth=3) as suggester:
        _wait_until(lambda: suggester.up)
        points = _search(suggester, local, 30, trial_seconds=0.05)
        _wait_until(lambda: suggester.up and bool(suggester.search_fit_seconds))
        stats = suggester.summary()
    assert len({point_key(p) for p in points}) == 30
    assert not {point_key(p) for p in points} & {point_key(p) for p in X}
    assert stats["asks"] >= 1
    # The box's and the restart search's models were fitted in the process's search
    # thread and reported, not inside a batch.
    assert stats["search_fits"] >= 1
    assert stats["restarts"] == 0


def _child_exits(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _noticed_gone(suggester, pid):
    """True once the driver's side has seen process ``pid`` go (``up`` takes in what
    waits on the socket, its end included): a new process, or none. A killed process's
    end of the socket closes only once the kernel has torn it down (milliseconds for a
    forked driver's size), so "not up yet" does not count as gone."""
    _ = suggester.up  # takes in what waits on the socket
    return suggester.pid != pid


@pytest.mark.parametrize("fork", [True, False], ids=["forked", "by path"])
def test_a_killed_suggestion_process_is_replaced_and_the_search_goes_on(fork, caplog):
    local = InProcessSuggester(SPACE, OptimizerSettings(n_initial_points=4, random_state=1))
    with ProcessSuggester(local, fork=fork, depth=2, max_restarts=1) as suggester:
        first = suggester.pid
        _wait_until(lambda: suggester.up)
        points = _search(suggester, local, 8)
        with caplog.at_level(logging.WARNING, logger="dtune"):
            os.kill(first, signal.SIGKILL)
            _wait_until(lambda: _noticed_gone(suggester, first))
            points += _search(suggester, local, 8)
        assert suggester.restarts == 1
        second = suggester.pid
        assert second is not None
        assert second != first
        assert not suggester.fork  # a replacement is started by path
        assert "killed by signal 9" in caplog.text
        assert "starting a new one (1 of at most 1)" in caplog.text
        # the second loss is the last one allowed: the driver carries on alone
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="dtune"):
            os.kill(second, signal.SIGKILL)
            _wait_until(lambda: _noticed_gone(suggester, second))
            points += _search(suggester, local, 8)
        assert "not starting another" in caplog.text
        assert suggester.pid is None
    assert len({point_key(p) for p in points}) == len(points) == 24


def test_a_forked_process_that_does_not_start_is_replaced_by_one_started_by_path(
    monkeypatch, caplog
):
    """A child stuck at the fork (a lock another thread of the driver held) is killed,
    and it and the later ones are started by path."""
    import psutil

    from dtune.suggest import process, service

    monkeypatch.setattr(process, "_FORK_START_S", 1.0)
    monkeypatch.setattr(service, "serve", lambda conn: time.sleep(3600))  # never answers
    local = InProcessSuggester(SPACE, OptimizerSettings(n_initial_points=2, random_state=4))
    with ProcessSuggester(local, depth=2) as suggester:
        assert suggester.fork  # Linux
        stuck = suggester.pid
        with caplog.at_level(logging.WARNING, logger="dtune"):
            points = _search(suggester, local, 4)
            while suggester.restarts == 0:
                points += _search(suggester, local, 1)
                time.sleep(0.2)
        assert suggester.failures == ["forked from the driver did not start within 1 s"]
        assert not suggester.fork
        assert _child_exits(stuck)
        _wait_until(lambda: suggester.up)
        assert any("_server.py" in part for part in psutil.Process(suggester.pid).cmdline())
        points += _search(suggester, local, 12, trial_seconds=0.1)
        assert suggester.summary()["asks"] >= 1  # its batches served
    assert len({point_key(p) for p in points}) == len(points)


@pytest.mark.parametrize("fork", [True, False], ids=["forked", "by path"])
def test_a_suggestion_process_that_stops_answering_is_replaced(fork):
    local = InProcessSuggester(SPACE, OptimizerSettings(n_initial_points=3, random_state=2))
    with ProcessSuggester(local, fork=fork, depth=2, answer_timeout=1.0) as suggester:
        _wait_until(lambda: suggester.up)
        stopped = suggester.pid
        os.kill(stopped, signal.SIGSTOP)
        try:
            points = _search(suggester, local, 6)
            deadline = time.monotonic() + 30
            while suggester.restarts == 0 and time.monotonic() < deadline:
                points += _search(suggester, local, 2)
                time.sleep(0.2)
        finally:
            with contextlib.suppress(ProcessLookupError):  # killed and reaped already
                os.kill(stopped, signal.SIGCONT)
        assert suggester.restarts == 1
        assert suggester.failures == ["did not answer for 1 s"]
        assert _child_exits(stopped)
    assert len({point_key(p) for p in points}) == len(points)


@pytest.mark.parametrize(
    ("patience", "waits", "calls_at_least"),
    [(None, (0.5, 5.0), 20), (0.05, (0.04, 0.4), 4)],
    ids=["a second at most", "told to wait 50 ms"],
)
def test_while_the_driver_waits_for_a_point_it_keeps_answering_and_says_it_would_wait(
    patience, waits, calls_at_least
):
    local = InProcessSuggester(SPACE, OptimizerSettings(n_initial_points=3, random_state=4))
    with ProcessSuggester(local, fork=True, depth=2) as suggester:
        if patience is not None:  # the driver's hint for trials of ~0.25 s
            suggester.set_patience(patience)
        _wait_until(lambda: suggester.up)
        loop = _Loop(local, suggester)
        for number, point in [loop.start(free=3) for _ in range(3)]:
            loop.finish(number, point)  # the initial design, told
        stopped = suggester.pid
        os.kill(stopped, signal.SIGSTOP)  # up, but no point will come
        try:
            while suggester.ready_now():  # points it had ready already
                loop.start()
            calls = []
            started = time.monotonic()
            point = suggester.suggest(1, lambda: calls.append(time.monotonic()))
            waited = time.monotonic() - started
        finally:
            os.kill(stopped, signal.SIGCONT)
    assert len(point) == 2  # drawn without the model, after the wait
    assert waits[0] < waited < waits[1]
    # the driver's reports were answered throughout the wait, every few milliseconds
    assert len(calls) >= calls_at_least, len(calls)
    assert max(b - a for a, b in zip([started, *calls], calls, strict=False)) < 0.25


@pytest.mark.parametrize("told", [0, 5])
def test_a_reset_rebuilds_the_process_optimizer_in_place_from_the_new_state(told):
    local = InProcessSuggester(SPACE, OptimizerSettings(n_initial_points=2, random_state=3))
    state = ModelState(
        [([0.1 * i, 0.0], float(i)) for i in range(told)], [(told, [1.0, 1.0])], told + 1
    )
    with ProcessSuggester(local) as suggester:
        before = suggester.pid
        local.reset(state)
        suggester.reset(state)
        assert suggester.pid == before  # the same process, its optimizer rebuilt
        assert suggester.restarts == 0  # a reset is not a failure
        assert local.pending == {told: [1.0, 1.0]}
        if told:  # past the initial design: the process serves the new model
            _wait_until(lambda: suggester.up)
            told = {point_key(p) for p, _ in state.told}
            points = [suggester.suggest()]
            _wait_until(lambda: suggester.up and suggester.ask_seconds)  # a batch came
            points.append(suggester.suggest())
            assert not told & {point_key(p) for p in points}
            assert suggester.pid == before


@pytest.mark.parametrize(("slots", "stale_after"), [(8, 1), (256, 32)])
def test_ready_suggestions_go_stale_after_one_result_or_an_eighth_of_many_slots(slots, stale_after):
    """At 256 slots a batch's fixed cost would be paid for every result (64 a second):
    there suggestions stay fresh for 32 results, and a batch tops them up only once half
    are taken; up to 12 slots every result makes them stale."""
    import socket
    from multiprocessing.connection import Connection

    from dtune.suggest.service import _Service

    rng = np.random.RandomState(0)
    told = [(list(p), _value(p), 0.0) for p in rng.uniform(-2, 2, (12, 2))]
    ours, theirs = socket.socketpair()
    with Connection(ours.detach()) as conn, Connection(theirs.detach()) as driver:
        depth = max(2, -(-slots // 4))  # ProcessSuggester.set_slots
        service = _Service(conn, SPACE, OptimizerSettings(random_state=0), told, [], depth)
        assert service.can_suggest()
        service.suggest()
        assert driver.recv()[0] == "ready"
        assert service.fresh() == depth
        assert not service.can_suggest()
        for _ in range(stale_after):
            assert service.fresh() == depth  # not stale yet
            point = rng.uniform(-2, 2, 2).tolist()
            service.results.append((point, _value(point), 0.0))
            service.tell_results()
        assert service.fresh() == 0  # stale: a new batch
        assert service.can_suggest()
        service.suggest()
        while driver.poll(0):  # the new batch, and the stale ones dropped
            driver.recv()
        for _, point in service.ready[: depth - depth // 2 - 1]:  # the driver takes some
            service.handle(("submitted", 0, point))
        assert not service.can_suggest()  # above half the depth: no batch yet
        service.handle(("submitted", 0, service.ready[0][1]))
        assert service.can_suggest()


def test_a_retold_estimate_keeps_the_process_model_and_its_ready_points():
    """A promoted trial's result replaces its estimate in place: the process keeps its
    kernel (refitted in the background) and its ready points, which go stale as after a
    result, rather than start over without a model (run 26's cost)."""
    import socket
    from multiprocessing.connection import Connection

    from dtune.suggest.service import _Service

    rng = np.random.RandomState(2)
    told = [(list(p), _value(p), 0.0) for p in rng.uniform(-2, 2, (12, 2))]
    estimate = told[-1][0]
    told[-1] = (estimate, 5.0, 0.5)
    ours, theirs = socket.socketpair()
    with Connection(ours.detach()) as conn, Connection(theirs.detach()) as driver:
        service = _Service(conn, SPACE, OptimizerSettings(random_state=0), told, [], 2)
        service.optimizer.fit()
        service.suggest()
        assert driver.recv()[0] == "ready"
        ready, generation = list(service.ready), service.generation
        optimizer = service.optimizer
        service.handle(("retold", [(estimate, _value(estimate), 0.0)], True))
        assert service.optimizer is optimizer
        assert optimizer.has_model
        assert optimizer.n_told == 12
        assert optimizer.history[1][-1] == _value(estimate)
        assert optimizer.told_noise[-1] == 0.0
        assert optimizer.needs_fit  # refitted in the fit thread, batches not waiting
        assert service.ready == ready  # kept, to hand out while a fresh batch comes
        assert service.generation == generation + 1  # stale, as after a result
        assert service.can_suggest()
        # a point it never had (a process started after the estimate): told as a result
        service.handle(("retold", [([1.5, 1.5], 0.7, 0.0)], True))
        assert optimizer.n_told == 13
        # a running trial's next estimate (a stopping rule's): no refit due for it
        optimizer.fit()
        service.handle(("retold", [(estimate, 0.1, 0.2)], False))
        assert (optimizer.history[1][-2], optimizer.needs_fit) == (0.1, False)


def test_with_results_arriving_faster_than_batches_the_process_keeps_more_points_ready():
    """Pruned trials end dozens a second: the ready points then cover the results of two
    of the slowest recent batches (up to twelve times the driver's depth), so a freed
    slot finds one ready even while a refit slows the batches down."""
    import socket
    from multiprocessing.connection import Connection

    from dtune.suggest.service import _RATE_WINDOW_S, _Service

    rng = np.random.RandomState(1)
    told = [(list(p), _value(p), 0.0) for p in rng.uniform(-2, 2, (12, 2))]
    ours, theirs = socket.socketpair()
    with Connection(ours.detach()) as conn, Connection(theirs.detach()):
        service = _Service(conn, SPACE, OptimizerSettings(random_state=0), told, [], 2)
        service.batch_seconds.extend([0.05, 0.1, 0.05])  # the slowest took 0.1 s
        assert service.depth == 2  # no result yet: the driver's depth
        service.handle(("finished", [(n, 1.0, 0.0) for n in range(30)]))  # 15 a second
        assert service.depth == 3  # 2 batches x 0.1 s x 15 results a second
        service.batch_seconds.append(0.4)  # a batch slowed down by a refit
        assert service.depth == 12  # 2 x 0.4 s x 15
        service.handle(("finished", [(n, 1.0, 0.0) for n in range(300)]))
        assert service.depth == 24  # capped at twelve times the driver's depth
        assert service.step == 12  # stale after 12 results, topped up once 12 are taken
        service.suggest()
        assert service.fresh() == 24
        time.sleep(_RATE_WINDOW_S + 0.1)  # the rush is over
        assert service.depth == 2


def test_from_13_slots_the_depth_does_not_follow_the_turnover():
    """There a batch costs more the more points it has: a depth that grew with the
    batches' time would feed on itself."""
    import socket
    from multiprocessing.connection import Connection

    from dtune.suggest.service import _Service

    ours, theirs = socket.socketpair()
    with Connection(ours.detach()) as conn, Connection(theirs.detach()):
        service = _Service(conn, SPACE, OptimizerSettings(random_state=0), [], [], 64)
        service.batch_seconds.extend([0.5, 0.5, 0.5])
        service.handle(("finished", [(n, 1.0, 0.0) for n in range(300)]))
        assert service.depth == 64
