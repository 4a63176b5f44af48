"""The suggestion process (dtune.suggest): batches ahead, initial design, stats."""

from __future__ import annotations

import time

from dtune import Real, SearchSpace
from dtune.optimizer import PendingAwareOptimizer, _point_key
from dtune.suggest import SuggestionEngine

SPACE = SearchSpace({"x": Real(-2.0, 2.0), "y": Real(-2.0, 2.0)})


def _value(point):
    return (point[0] - 0.5) ** 2 + (point[1] + 0.3) ** 2


def test_the_driver_draws_the_initial_design_and_the_process_takes_over_after_it():
    driver_side = PendingAwareOptimizer(SPACE, n_initial_points=4, random_state=0)
    with SuggestionEngine(driver_side, depth=3) as engine:
        initial = []
        for number in range(4):  # what the driver does while the process starts
            point = driver_side.ask(pending=initial)
            initial.append(point)
            engine.submitted(number, point, initial=True)
        time.sleep(1.0)
        engine._receive(block=False)
        assert engine._ready == []  # nothing is computed before a model can be fit
        engine.finished([(n, _value(p)) for n, p in enumerate(initial)])
        taken = []
        for number in range(4, 12):
            point = engine.take()
            taken.append(point)
            engine.submitted(number, point)
        keys = {_point_key(p) for p in initial + taken}
        assert len(keys) == 12  # no running or told point is suggested again
        deadline = time.monotonic() + 30
        while len(engine._ready) < 3 and time.monotonic() < deadline:
            engine._receive(block=True)
        assert len(engine._ready) >= 3  # the depth asked for is kept ready
        stats = engine.summary()
    assert stats["asks"] >= 1
    assert stats["fits"] >= 1
    assert stats["ask_max_ms"] > 0


def _wait_for(engine, condition, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        engine._receive(block=False)
        time.sleep(0.01)
    return condition()


def test_results_make_ready_suggestions_stale_and_fresh_ones_replace_them():
    driver_side = PendingAwareOptimizer(SPACE, n_initial_points=3, random_state=1)
    with SuggestionEngine(driver_side, depth=2) as engine:
        first = [driver_side.ask(pending=[]) for _ in range(3)]
        for number, point in enumerate(first):
            engine.submitted(number, point, initial=True)
        engine.finished([(n, _value(p)) for n, p in enumerate(first)])
        assert _wait_for(engine, lambda: len(engine._ready) >= 2)
        before = max(g for g, _ in engine._ready)
        point = engine.take()
        engine.submitted(3, point)
        engine.finished([(3, _value(point))])
        # the ones computed before that result are dropped once fresh ones are ready
        assert _wait_for(
            engine,
            lambda: len(engine._ready) >= 2 and min(g for g, _ in engine._ready) > before,
        )
