"""The ledger: every change of a trial goes to the store first, then to the listeners."""

from __future__ import annotations

import os
import socket

import pytest

from dtune import Real, Report, SearchSpace, TrialState
from dtune.exceptions import StudyInUseError
from dtune.execution import Outcome
from dtune.ledger import Ledger
from dtune.storage import SQLiteStorage, StudyRecord

SPACE = SearchSpace({"x": Real(0.0, 1.0)})


class _Recorder:
    """A listener that reads the store when told, to see what was committed first."""

    def __init__(self, store):
        self.store = store
        self.events = []

    def started(self, number, point):
        stored = {t.number: t.state for t in self.store.get_trials("s")}
        self.events.append(("started", number, point, stored[number]))

    def finished(self, results, noise=None):
        stored = {t.number: t.state for t in self.store.get_trials("s")}
        self.events.extend(("finished", n, v, stored[n]) for n, _, v in results)

    def reset(self, state):
        self.events.append(("reset", len(state.told), len(state.running)))


def _ledger(tmp_path, direction="minimize", failure_value=None):
    store = SQLiteStorage(tmp_path / "s.db")
    if store.get_study("s") is None:
        store.create_study(StudyRecord("s", direction, None, SPACE.to_json(), {}, 0.0))
    return Ledger(store, "s", SPACE, direction, failure_value), store


def test_changes_reach_the_store_before_any_listener(tmp_path):
    ledger, store = _ledger(tmp_path, direction="maximize")
    recorder = _Recorder(store)
    ledger.subscribe(recorder)
    a, b = ledger.start({"x": 0.1}), ledger.start({"x": 0.2})
    ledger.finish([(a.number, Outcome(value=2.0)), (b.number, Outcome(None, error="boom"))])
    assert recorder.events == [
        ("started", 0, [0.1], TrialState.RUNNING),
        ("started", 1, [0.2], TrialState.RUNNING),
        ("finished", 0, -2.0, TrialState.COMPLETE),  # the model minimizes
        ("finished", 1, None, TrialState.FAILED),  # no failure_value: nothing told
    ]


class _CountingStore(SQLiteStorage):
    """A real SQLite store that counts its report writes (each one a transaction)."""

    writes = 0

    def put_many_reports(self, study, reports):
        self.writes += 1
        super().put_many_reports(study, reports)


def test_a_batch_of_reports_is_one_write_in_order_and_a_rerun_drops_its_earlier_run(tmp_path):
    store = _CountingStore(tmp_path / "s.db")
    store.create_study(StudyRecord("s", "minimize", None, SPACE.to_json(), {}, 0.0))
    ledger = Ledger(store, "s", SPACE, "minimize")
    a, b, done = (ledger.start({"x": x}) for x in (0.1, 0.2, 0.3))
    ledger.finish([(done.number, Outcome(value=1.0))])
    batch = [(a.number, Report(1, 0.9)), (b.number, Report(1, 0.8)), (a.number, Report(2, 0.7))]
    batch += [(done.number, Report(1, 0.5))]  # no longer running: dropped
    batch += [(b.number, Report(2, 0.6)), (b.number, Report(1, 0.95))]  # b runs again
    seen = ledger.report_many(batch)
    assert store.writes == 1
    assert [None if t is None else [r.step for r in t.reports] for t in seen] == [
        [1], [1], [1, 2], None, [1, 2], [1]
    ]  # fmt: skip
    stored = {t.number: [(r.step, r.value) for r in t.reports] for t in store.get_trials("s")}
    assert stored == {a.number: [(1, 0.9), (2, 0.7)], b.number: [(1, 0.95)], done.number: []}
    assert stored == {t.number: [(r.step, r.value) for r in t.reports] for t in ledger.trials}


def test_finishing_a_trial_that_is_not_running_writes_nothing(tmp_path):
    ledger, store = _ledger(tmp_path)
    trial = ledger.start({"x": 0.5})
    ledger.finish([(trial.number, Outcome(value=1.0))])
    other = ledger.start({"x": 0.6})
    with pytest.raises(ValueError, match="trial 0 is already COMPLETE"):
        ledger.finish([(other.number, Outcome(value=3.0)), (trial.number, Outcome(value=2.0))])
    assert [t.state for t in store.get_trials("s")] == [TrialState.COMPLETE, TrialState.RUNNING]
    with pytest.raises(ValueError, match="trial 7 is not in study 's'"):
        ledger.finish([(7, Outcome(value=1.0))])


def test_the_worst_value_is_told_for_failures_when_asked(tmp_path):
    ledger, _ = _ledger(tmp_path, failure_value="worst")
    values = {}
    for x, outcome in ((0.1, Outcome(3.0)), (0.2, Outcome(5.0)), (0.3, Outcome(None, error="x"))):
        (done,) = ledger.finish([(ledger.start({"x": x}).number, outcome)])
        values[x] = ledger.told_value(done)
    assert values == {0.1: 3.0, 0.2: 5.0, 0.3: 5.0}


def test_trials_a_dead_driver_left_running_are_interrupted_and_restarted_under_their_number(
    tmp_path,
):
    ledger, store = _ledger(tmp_path)
    left = [ledger.start({"x": 0.1}), ledger.start({"x": 0.2})]
    ledger.report_many([(t.number, Report(s, s / 10)) for t in left for s in (1, 2, 3, 4)])
    again, _ = _ledger(tmp_path)  # a new driver on the same file
    retry = again.take_interrupted()
    assert [t.number for t in retry] == [t.number for t in left]
    assert {t.state for t in store.get_trials("s")} == {TrialState.INTERRUPTED}
    rerun = again.restart(retry[0].number)
    assert (rerun.number, rerun.params, rerun.state) == (0, {"x": 0.1}, TrialState.RUNNING)
    assert [r.step for r in rerun.reports] == [1, 2, 3, 4]  # kept until the new run reports
    assert again.start({"x": 0.9}).number == 2  # numbering goes on
    with pytest.raises(ValueError, match="not INTERRUPTED"):
        again.restart(0)

    # Trial 0 resumes from a checkpoint at step 2: its steps 1 and 2 stay, 3 and 4 go.
    # Trial 1 runs from the start: every report of its earlier run goes.
    again.restart(1)
    again.report_many([(0, Report(3, 0.35)), (1, Report(1, 0.15))])
    expected = {0: [(1, 0.1), (2, 0.2), (3, 0.35)], 1: [(1, 0.15)], 2: []}
    stored = {t.number: [(r.step, r.value) for r in t.reports] for t in store.get_trials("s")}
    assert stored == expected
    assert stored == {t.number: [(r.step, r.value) for r in t.reports] for t in again.trials}


def test_sync_catches_up_with_another_writer_and_resets_listeners(tmp_path):
    ledger, store = _ledger(tmp_path)
    recorder = _Recorder(store)
    ledger.subscribe(recorder)
    assert ledger.sync() is False
    other, _ = _ledger(tmp_path)
    other.finish([(other.start({"x": 0.4}).number, Outcome(1.0))])
    other.start({"x": 0.5})
    assert ledger.sync() is True
    assert recorder.events == [("reset", 1, 1)]
    assert ledger.start({"x": 0.6}).number == 2


def test_one_driver_at_a_time_holds_the_claim(tmp_path):
    ledger, _ = _ledger(tmp_path)
    other, _ = _ledger(tmp_path)
    # a live process on this host (this one) holds it
    mine = f"{socket.gethostname()}:{os.getpid()}:b"
    other.claim(mine)
    with pytest.raises(StudyInUseError, match=mine):
        ledger.claim(f"{socket.gethostname()}:{os.getpid()}:c")
    other.release(mine)
    ledger.claim(f"{socket.gethostname()}:{os.getpid()}:c")


def test_views_stay_readable_from_another_thread_while_a_listener_listens(tmp_path):
    import threading

    ledger, store = _ledger(tmp_path)
    recorder = _Recorder(store)
    ledger.subscribe(recorder)
    read = []
    with ledger.listening(recorder):  # already subscribed: a no-op, not a held lock
        reader = threading.Thread(target=lambda: read.append(ledger.trials))
        reader.start()
        reader.join(timeout=5)
        assert read == [[]]
    assert ledger.start({"x": 0.5}).number == 0
    assert recorder.events[-1][:2] == ("started", 0)  # still subscribed afterwards
