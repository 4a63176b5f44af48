"""Early stopping: dtune.report on real Dask workers (and in isolated child processes),
the pruners' rules, PRUNED trials and their reports in a real SQLite store, and the model
fitted on the rung with enough values."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import random
import re
import sqlite3
import statistics
import time
from pathlib import Path

import numpy as np
import pytest

import dtune
from dtune import ASHA, Hyperband, MedianStop, Real, Report, Study, Trial, TrialState
from dtune.execution import Outcome, run_trial
from dtune.ledger import Ledger
from dtune.optimizer.posterior import best_measured
from dtune.pruners import LOCAL_AFTER, estimate_overhead, pruner_from_json
from dtune.reporting import Cutoffs, ReportTo, deliver, deliver_cutoffs
from dtune.space import SearchSpace
from dtune.storage import InMemoryStorage, StudyRecord
from tests import objectives

SPACE = {"x": Real(0.0, 1.0)}


def _trial(number: int, values: list[float], state: TrialState = TrialState.RUNNING) -> Trial:
    """A trial that reported ``values`` at steps 1, 2, …"""
    reports = tuple(Report(step, v) for step, v in enumerate(values, start=1))
    return Trial(number=number, state=state, params={"x": 0.5}, reports=reports)


# -- the rules -------------------------------------------------------------------------------


def test_asha_keeps_the_top_third_at_each_rung_and_decides_only_at_rungs():
    asha = ASHA(1, 9, 3)
    done = [_trial(n, [v], TrialState.PRUNED) for n, v in enumerate([0.1, 0.2, 0.3, 0.4, 0.5])]
    good, bad = _trial(10, [0.15]), _trial(11, [0.45])
    assert not asha.should_stop(good, [*done, good], minimize=True)  # 2nd of 6: top 1/3
    assert asha.should_stop(bad, [*done, bad], minimize=True)
    # maximizing turns the ranking round
    assert not asha.should_stop(bad, [*done, bad], minimize=False)
    # step 2 is no rung: no decision, however bad
    worse = _trial(12, [0.05, 9.0])
    assert not asha.should_stop(worse, [*done, worse], minimize=True)
    # the first trial at a rung always continues
    first = _trial(13, [0.1, 0.1, 5.0])
    assert not asha.should_stop(first, [*done, first], minimize=True)


def test_asha_with_a_window_ranks_a_trial_against_the_latest_trials_at_its_rung():
    # 30 early trials did badly at rung 1; the 12 since did well
    early = [_trial(n, [10.0], TrialState.PRUNED) for n in range(30)]
    recent = [_trial(30 + n, [float(n + 1)], TrialState.PRUNED) for n in range(12)]
    newcomer = _trial(99, [8.0])
    everyone = [*early, *recent, newcomer]
    assert not ASHA(1, 9, 3).should_stop(newcomer, everyone, minimize=True)  # 8th of 43
    assert ASHA(1, 9, 3, window=12).should_stop(newcomer, everyone, minimize=True)  # 8th of 13
    assert not ASHA(1, 9, 3, window=12).should_stop(_trial(99, [4.0]), everyone, minimize=True)
    # the latest by number, whatever order the list is in
    assert ASHA(1, 9, 3, window=12).should_stop(newcomer, everyone[::-1], minimize=True)


def test_promotion_asha_pauses_at_each_rung_and_promotes_the_best_of_the_top_third():
    asha = ASHA(1, 9, 3, variant="promotion")
    assert asha.promotes
    assert not ASHA(1, 9, 3).promotes
    paused = TrialState.PAUSED
    # every rung below the top pauses the run that first reaches it, whatever its value
    assert asha.should_stop(_trial(0, [0.1]), [], minimize=True)
    assert not asha.should_stop(_trial(0, [0.1, 0.1]), [], minimize=True)
    assert asha.should_stop(_trial(0, [0.1, 0.1, 0.1]), [], minimize=True)
    # a promoted run is not stopped again at the rungs its trial passed
    assert asha.stops_for(_trial(0, [])) == [1.0, 3.0]
    assert asha.stops_for(_trial(0, [0.5], paused)) == [3.0]
    assert asha.stops_for(_trial(0, [0.5, 0.4, 0.3], paused)) == []
    # ⌊n/η⌋ of the n values at a rung may go on: none of 2, one of 3 to 5, two of 6
    rung1 = [_trial(n, [v], paused) for n, v in enumerate([0.5, 0.2, 0.9, 0.7, 0.3])]
    assert asha.promotion(rung1[:2], minimize=True) is None
    assert asha.promotion(rung1, minimize=True) == 1
    assert asha.promotion(rung1, minimize=False) == 2
    # trial 1 went on and paused at rung 3: with 6 values at rung 1 the second best
    # may go on too, but rung 3 comes first once it has 3 values
    rung1[1] = _trial(1, [0.2, 0.15, 0.1], paused)
    more = [*rung1, _trial(5, [0.25], paused)]
    assert asha.promotion(more, minimize=True) == 5
    running = [_trial(6, [0.3, 0.2, 0.3]), _trial(7, [0.4, 0.3, 0.4])]
    assert asha.promotion([*more, *running], minimize=True) == 1
    # a trial running or done is never promoted, only a paused one
    done = [_trial(n, [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], TrialState.COMPLETE)
            for n in (8, 9, 10)]  # fmt: skip
    assert asha.promotion(done, minimize=True) is None
    assert ASHA(1, 9, 3).promotion(rung1, minimize=True) is None  # the stopping variant


def test_promotion_hyperband_pauses_at_its_brackets_rungs_and_promotes_within_its_bracket():
    hb = Hyperband(1, 9, 3, variant="promotion")
    assert hb.promotes
    paused = TrialState.PAUSED
    first, second, last = ([n for n in range(200) if hb.bracket_of(n) == b] for b in range(3))
    # a trial pauses at its own bracket's rungs only; the last bracket never pauses
    assert hb.stops_for(_trial(first[0], [])) == [1.0, 3.0]
    assert hb.stops_for(_trial(second[0], [])) == [3.0]
    assert hb.stops_for(_trial(last[0], [])) == []
    assert not hb.should_stop(_trial(second[0], [0.1]), [], minimize=True)
    assert hb.should_stop(_trial(second[0], [0.1, 0.1, 0.1]), [], minimize=True)
    assert hb.stops_for(_trial(second[0], [0.1, 0.1, 0.1], paused)) == []
    assert not hb.should_stop(_trial(last[0], [0.1] * 3), [], minimize=True)
    # ranked within its bracket: two of the first bracket at rung 1 are too few to
    # promote one (⌊2/3⌋ = 0), however many of the second bracket reported step 1
    ones = [_trial(first[0], [0.5], paused), _trial(first[1], [0.2], paused)]
    others = [_trial(n, [0.1, 0.1], TrialState.RUNNING) for n in second[:6]]
    assert hb.promotion([*ones, *others], minimize=True) is None
    ones.append(_trial(first[2], [0.9], paused))
    assert hb.promotion([*ones, *others], minimize=True) == first[1]
    # a trial paused at a higher rung (resource) goes first, whichever its bracket
    threes = [
        _trial(n, [0.3, 0.3, v], paused) for n, v in zip(second[:3], (0.4, 0.3, 0.8), strict=True)
    ]
    assert hb.promotion([*ones, *threes], minimize=True) == second[1]
    assert Hyperband(1, 9, 3).promotion([*ones, *threes], minimize=True) is None


def test_hyperband_brackets_start_at_growing_rungs_and_the_last_never_stops():
    hb = Hyperband(1, 27, 3)
    assert hb.brackets() == [[1, 3, 9, 27], [3, 9, 27], [9, 27], [27]]
    counts = [0] * 4
    for n in range(2000):
        counts[hb.bracket_of(n)] += 1
    assert counts[0] > counts[1] > counts[2] > counts[3] > 0  # as synchronous Hyperband
    last = next(n for n in range(100) if hb.bracket_of(n) == 3)
    trial = _trial(last, [100.0] * 26)
    others = [_trial(n, [0.0] * 26, TrialState.COMPLETE) for n in range(100) if n != last]
    assert not hb.should_stop(trial, [*others, trial], minimize=True)


def test_an_overhead_puts_the_rungs_where_a_runs_cost_grows_by_eta():
    # a run costs 5 + r: 6 at r=1, then 18 at r=13, then the top (32)
    asha = ASHA(1, 27, 3, overhead=5)
    assert asha.rungs() == [1, 13, 27]
    assert asha.stops_at(0) == [1, 13]
    assert ASHA(1, 27, 3, overhead=0).rungs() == ASHA(1, 27, 3).rungs() == [1, 3, 9, 27]
    assert ASHA(2, 100, 2, overhead=2).rungs() == [2, 6, 14, 30, 62, 100]  # costs 4, 8, 16, …
    assert Hyperband(1, 27, 3, overhead=5).brackets() == [[1, 13, 27], [13, 27], [27]]
    # a bad trial is judged at 13, not at 3 or 9
    done = [_trial(n, [0.1] * 13, TrialState.PRUNED) for n in range(6)]
    bad = _trial(10, [0.05] + [0.9] * 11)
    assert not asha.should_stop(bad, [*done, bad], minimize=True)  # step 12: no rung
    bad = _trial(10, [0.05] + [0.9] * 12)
    assert asha.should_stop(bad, [*done, bad], minimize=True)


def test_median_stop_compares_best_values_so_far_at_the_same_step():
    rule = MedianStop(warmup_steps=2, min_trials=3)
    others = [_trial(n, [1.0, v, v], TrialState.COMPLETE) for n, v in enumerate([0.2, 0.4, 0.6])]
    assert not rule.should_stop(_trial(9, [9.0]), [*others], minimize=True)  # warm-up
    assert rule.should_stop(_trial(9, [0.9, 0.5]), others, minimize=True)  # median 0.4
    assert not rule.should_stop(_trial(9, [0.9, 0.3]), others, minimize=True)
    assert not rule.should_stop(_trial(9, [0.9, 0.5]), others[:2], minimize=True)  # too few


@pytest.mark.parametrize(
    "pruner",
    [
        ASHA(1, 9, 3),
        ASHA(2, 32, 2),
        ASHA(1, 9, 3, window=12),
        Hyperband(1, 27, 3),
        Hyperband(1, 27, 3, window=12),
    ],
)
@pytest.mark.parametrize("minimize", [True, False])
def test_a_rungs_cutoff_says_what_the_rule_says(pruner, minimize):
    """A worker judges a report at a rung by the cutoff alone (Pruner.cutoffs): that
    verdict must be the rule's, whatever the values, ties included."""
    rng = random.Random(7)
    top = pruner.rungs()[-1]
    trials = []
    for n in range(60):
        steps = rng.randint(1, int(top))
        values = [float(rng.choice(range(20))) for _ in range(steps)]  # ties on purpose
        trials.append(_trial(n, values, TrialState.PRUNED))
    table = pruner.cutoffs(trials, minimize)
    cutoffs = Cutoffs(1, minimize, table)
    checked = 0
    for number in range(1000, 1300):
        group, rungs = pruner.group_of(number), pruner.stops_at(number)
        for rung in rungs:
            reached = sum(
                1
                for t in trials
                if pruner.group_of(t.number) == group and t.reports[-1].step >= rung
            )
            value = float(rng.choice(range(20)))
            newcomer = _trial(number, [*[99.0] * (int(rung) - 1), value])
            verdict = cutoffs.says_stop(group, rung, value)
            if reached < LOCAL_AFTER:
                assert verdict is None  # too few values: the driver decides
                continue
            assert verdict is pruner.should_stop(newcomer, [*trials, newcomer], minimize)
            checked += 1
    assert checked > 200
    assert MedianStop().cutoffs(trials, minimize) is None  # no rungs: the driver decides


@pytest.mark.parametrize(
    "pruner",
    [ASHA(1, 9, 3), ASHA(1, 9, 3, window=12), Hyperband(1, 27, 3), Hyperband(1, 27, 3, window=12)],
)
@pytest.mark.parametrize("minimize", [True, False])
def test_the_drivers_rung_table_follows_each_report_and_each_rerun(pruner, minimize):
    """The driver keeps the rungs' values up to date one trial at a time (a RungTable), as
    reports arrive and as trials run again from the start (their earlier reports dropped):
    at every moment its cutoffs are those computed afresh from every trial."""
    rng = random.Random(11)
    table = pruner.rung_table(minimize)
    reports: dict[int, list[Report]] = {}

    def now(n: int) -> Trial:
        return Trial(
            number=n, state=TrialState.RUNNING, params={"x": 0.5}, reports=tuple(reports[n])
        )

    for i in range(4000):
        n = rng.randrange(120)
        mine = reports.setdefault(n, [])
        if mine and rng.random() < 0.03:  # restarted: nothing reported yet, or a new first step
            mine.clear()
            if rng.random() < 0.5:
                table.update(now(n))
                continue
        step = (mine[-1].step if mine else 0) + rng.randint(1, 4)
        mine.append(Report(step, float(rng.randrange(40))))  # ties on purpose
        table.update(now(n))
        if i % 500 == 0 or i == 3999:
            afresh = pruner.cutoffs([now(m) for m in reports], minimize)
            assert table.cutoffs() == afresh
    assert len(table.cutoffs()) >= 2  # the rungs filled up
    assert pruner.rung_table(minimize).cutoffs() == {}
    assert MedianStop().rung_table(minimize) is None


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ASHA(5, 2), "min_resource=5 must be smaller than max_resource=2"),
        (lambda: ASHA(3, 3), "min_resource=3 must be smaller than max_resource=3"),
        (lambda: ASHA(1, 27, 1.5), "reduction_factor=1.5 must be >= 2"),
        (lambda: ASHA(1, 27, 3, "promote"), "variant='promote' must be 'stopping' or 'promotion'"),
        (lambda: ASHA(1, 27, 3, window=0), "window=0 must be None or an int >= 1"),
        (lambda: ASHA(1, 27, 3, window=2.5), "window=2.5 must be None or an int >= 1"),
        (lambda: Hyperband(0, 9), "min_resource=0 must be a positive"),
        (lambda: Hyperband(1, math.inf), "max_resource=inf must be a positive, finite"),
        (lambda: Hyperband(1, 9, 3, "pause"), "variant='pause' must be 'stopping' or 'promotion'"),
        (lambda: Hyperband(1, 9, 3, window=-1), "window=-1 must be None or an int >= 1"),
        (lambda: MedianStop(warmup_steps=-1), "warmup_steps=-1 must be an int >= 0"),
        (lambda: ASHA(1, 27, 3, overhead=-1), "overhead=-1 must be a finite number >= 0"),
        (lambda: ASHA(1, 27, 3, overhead=math.nan), "overhead=nan must be a finite number"),
        (lambda: Hyperband(1, 27, 3, overhead="5"), "overhead='5' must be a number >= 0"),
        (lambda: Hyperband(1, 27, 3, overhead=True), "overhead=True must be a number >= 0"),
        (
            lambda: ASHA(1, 27, 3, windw=27),
            "ASHA.__init__() got an unexpected keyword argument 'windw'",
        ),
        (
            lambda: Hyperband(1, 27, eta=3),
            "Hyperband.__init__() got an unexpected keyword argument 'eta'",
        ),
        (lambda: Study(SPACE, pruner="asha"), "pruner='asha' must be None or a dtune pruner"),
    ],
)
def test_bad_pruner_settings_are_named(make, message):
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        make()


def test_pruners_round_trip_through_json():
    for pruner in (
        ASHA(2, 32, 2),
        ASHA(1, 9, 3, "promotion"),
        ASHA(1, 9, 3, window=30),
        Hyperband(1, 81, 3),
        Hyperband(1, 27, 3, "promotion", window=30),
        ASHA(1, 27, 3, overhead=5),
        Hyperband(1, 27, 3, "promotion", overhead=2.5),
        MedianStop(3, 4),
    ):
        assert pruner_from_json(pruner.to_json()) == pruner
    assert ASHA(1, 27, 3, overhead=5) != ASHA(1, 27, 3)
    assert ASHA(1, 9, 3, "promotion") != ASHA(1, 9, 3)
    # a study stored before the variant existed reads back as the stopping one
    assert pruner_from_json({"type": "ASHA", "min_resource": 1, "max_resource": 9,
                             "reduction_factor": 3}) == ASHA(1, 9, 3)  # fmt: skip
    assert pruner_from_json({"type": "Hyperband", "min_resource": 1, "max_resource": 9,
                             "reduction_factor": 3}) == Hyperband(1, 9, 3)  # fmt: skip
    with pytest.raises(ValueError, match="unknown pruner type 'Nope'"):
        pruner_from_json({"type": "Nope"})


def test_report_outside_a_trial_checks_its_arguments_and_does_nothing_else():
    dtune.report(0.5, 1, accuracy=0.9)
    with pytest.raises(ValueError, match="value nan at step 2 is not finite"):
        dtune.report(float("nan"), 2)
    with pytest.raises(TypeError, match="step=-1 must be an int >= 0"):
        dtune.report(0.5, -1)
    with pytest.raises(TypeError, match=r"step=1\.5 must be an int"):
        dtune.report(0.5, 1.5)
    with pytest.raises(TypeError, match="value 'low'"):
        dtune.report("low", 1)


# -- the model's rung ---------------------------------------------------------------------------


class _Recorder:
    def __init__(self) -> None:
        self.told: list[tuple[int, float | None]] = []
        self.noise: dict[int, float] = {}
        self.resets: list[int] = []

    def started(self, number, point):
        pass

    def finished(self, results, noise=None):
        self.told.extend((n, v) for n, _, v in results)
        self.noise.update(noise or {})

    def observed(self, results):
        self.observed_results = [*getattr(self, "observed_results", []), *results]

    def retold(self, results, refit=True):
        self.retold_results = [*getattr(self, "retold_results", []), *results]
        self.refits = [*getattr(self, "refits", []), refit]

    def reset(self, state):
        self.resets.append(len(state.told))


def _rung_ledger(estimate_running: bool = False) -> tuple[Ledger, _Recorder]:
    """A ledger with rungs at 1, 3 and 9, and a listener recording what it is told."""
    store = InMemoryStorage()
    store.create_study(StudyRecord("s", "minimize", None, {}, {}, 0.0))
    ledger = Ledger(
        store, "s", SearchSpace(SPACE), "minimize", rungs=[1, 3, 9],
        estimate_running=estimate_running,
    )  # fmt: skip
    recorder = _Recorder()
    ledger.subscribe(recorder)
    return ledger, recorder


def test_the_model_is_told_values_at_the_highest_rung_with_enough_of_them():
    ledger, recorder = _rung_ledger()
    assert ledger.rung_min_points == 5
    trials = [ledger.start({"x": i / 10}) for i in range(7)]
    for t in trials[:4]:
        ledger.report(t.number, Report(1, t.params["x"]))
    assert ledger.model_rung is None  # 4 values are too few
    assert recorder.told == []
    ledger.report(trials[4].number, Report(1, 0.4))
    assert ledger.model_rung == 1  # the rung at resource 1 has 5: start over from them
    assert recorder.resets == [5]
    ledger.report(trials[5].number, Report(2, 0.5))  # its first step past rung 1
    assert recorder.told == [(5, 0.5)]  # told at once, while it runs
    ledger.finish([(5, Outcome(value=0.5, pruned=True))])
    assert recorder.told[-1] == (5, None)  # not told twice
    assert ledger.get(5).state is TrialState.PRUNED
    assert ledger.get(5).intermediate == {2: 0.5}
    # pruned below the model's rung: told the worst value there, not to be proposed again
    ledger.finish([(6, Outcome(value=0.9, pruned=True))])
    assert recorder.told[-1] == (6, 0.5)


def _complete_trials(ledger: Ledger, gain: float) -> None:
    """Five complete trials, enough for the model to fit final values: trial i reports
    i/10 + gain/step at steps 1, 3 and 9, in 9 s."""
    for i in range(5):
        t = ledger.start({"x": i / 10})
        for step in (1, 3, 9):
            ledger.report(t.number, Report(step, i / 10 + gain / step))
        ledger.finish([(t.number, Outcome(value=i / 10 + gain / 9, started=0.0, finished=9.0))])


def test_a_promoted_trials_imputed_value_gives_way_to_its_result():
    ledger, recorder = _rung_ledger()
    _complete_trials(ledger, gain=1.0)
    assert ledger.model_rung is None
    t = ledger.start({"x": 0.55})
    ledger.report(t.number, Report(1, 1.6))
    paused = Outcome(value=1.6, pruned=True, paused=True, started=10.0, finished=11.0)
    ledger.finish([(t.number, paused)])
    assert ledger.get(5).state is TrialState.PAUSED
    number, imputed = recorder.told[-1]
    assert number == 5
    assert imputed is not None
    assert recorder.noise[5] >= 0
    resets = len(recorder.resets)
    resumed = ledger.resume(5, submitted=12.0)
    assert resumed.state is TrialState.RUNNING
    assert resumed.earlier_s == 1.0
    assert resumed.intermediate == {1: 1.6}
    with pytest.raises(ValueError, match="trial 5 is RUNNING, not PAUSED"):
        ledger.resume(5)
    for step in (3, 9):
        ledger.report(5, Report(step, 0.55 + 1 / step))
    (done,) = ledger.finish([(5, Outcome(value=0.55 + 1 / 9, started=12.0, finished=20.0))])
    assert done.state is TrialState.COMPLETE
    assert done.duration == 9.0  # 8 s in this run, 1 s in the one it paused in
    # its final value replaced its estimate in place, measured; the model did not start
    # over, and was not told the trial a second time
    assert len(recorder.resets) == resets
    assert recorder.retold_results == [([0.55], pytest.approx(0.55 + 1 / 9), 0.0)]
    assert recorder.told[-1] == (5, None)
    assert ledger.model_state().told[-1] == ([0.55], pytest.approx(0.55 + 1 / 9))
    assert len(ledger.model_state().told) == 6


def test_a_promoted_trial_at_the_models_rung_replaces_its_estimate_while_it_runs():
    ledger, recorder = _rung_ledger()
    for i in range(5):  # five trials reach rung 3: the model fits values there
        t = ledger.start({"x": i / 10})
        for step in (1, 3):
            ledger.report(t.number, Report(step, i / 10 + 1 / step))
    assert ledger.model_rung == 3
    t = ledger.start({"x": 0.55})
    ledger.report(t.number, Report(1, 1.6))
    ledger.finish([(t.number, Outcome(value=1.6, pruned=True, paused=True))])
    number, imputed = recorder.told[-1]
    assert number == 5
    assert 0 < recorder.noise[5] < 1e-12  # every gain was 2/3: sure, but an estimate
    assert imputed == pytest.approx(1.6 - 2 / 3)
    resets = len(recorder.resets)
    ledger.resume(5)
    ledger.report(5, Report(2, 1.2))
    assert not hasattr(recorder, "retold_results")  # below the model's rung: nothing yet
    ledger.report(5, Report(3, 0.9))
    assert recorder.retold_results == [([0.55], 0.9, 0.0)]
    assert recorder.told[-1] == (5, None)  # told, so no longer pending; not told twice
    assert len(recorder.resets) == resets
    ledger.finish([(5, Outcome(value=0.8))])
    assert recorder.retold_results == [([0.55], 0.9, 0.0)]  # the rung's value stands
    assert recorder.told[-1] == (5, None)
    assert ledger.model_state().told[-1] == ([0.55], 0.9)


def test_a_trial_paused_again_higher_up_is_estimated_again_from_there():
    ledger, recorder = _rung_ledger()
    _complete_trials(ledger, gain=2.0)
    t = ledger.start({"x": 0.55})
    ledger.report(t.number, Report(1, 2.6))
    ledger.finish([(t.number, Outcome(value=2.6, pruned=True, paused=True))])
    assert recorder.told[-1] == (5, pytest.approx(2.6 - 2 + 2 / 9))  # rung 1 + median gain
    ledger.resume(5)
    ledger.report(5, Report(3, 0.9))
    ledger.finish([(5, Outcome(value=0.9, pruned=True, paused=True))])
    # now from rung 3: 0.9 plus the median gain from 3 to 9 (2/9 - 2/3), an estimate
    ((point, value, noise),) = recorder.retold_results
    assert (point, value) == ([0.55], pytest.approx(0.9 - 2 / 3 + 2 / 9))
    assert 0 < noise < 1e-12  # every gain from rung 3 was the same
    assert recorder.told[-1] == (5, None)


def test_a_running_trial_is_told_its_estimate_at_each_rung_and_its_result_in_its_place():
    ledger, recorder = _rung_ledger(estimate_running=True)
    early = ledger.start({"x": 0.05})  # reaches rung 1 before any gain is known
    ledger.report(early.number, Report(1, 9.0))
    # no gain to the model's rung is known yet: nothing to estimate, so it is pending
    assert (recorder.told, [n for n, _ in ledger.model_state().running]) == ([], [0])
    _complete_trials(ledger, gain=1.0)  # each gains 8/9 from rung 1 to 9, 2/9 from 3
    assert ledger.model_rung is None  # 5 complete: the model fits final values
    # the model started over, and was told its estimate then
    assert ledger.model_state().running == []
    assert ledger.model_state().told[-1] == ([0.05], pytest.approx(9.0 - 8 / 9))
    t = ledger.start({"x": 0.55})
    ledger.report(t.number, Report(1, 1.6))
    # told while it runs: rung 1 plus the median gain to the end, as sure as the gains
    assert recorder.told[-1] == (6, pytest.approx(1.6 - 8 / 9))
    assert 0 < recorder.noise[6] < 1e-12
    assert ledger.model_state().running == []  # told, not pending
    ledger.report(6, Report(2, 1.2))  # no rung crossed: nothing new
    assert not hasattr(recorder, "retold_results")
    ledger.report(6, Report(3, 0.9))
    # its estimate from rung 3 replaces the one from rung 1, with no refit due
    ((point, value, noise),) = recorder.retold_results
    assert (point, value) == ([0.55], pytest.approx(0.9 - 2 / 9))
    assert 0 < noise < 1e-12
    assert recorder.refits == [False]
    state = ledger.model_state()  # a model rebuilt now is told the same
    assert state.told[-1] == ([0.55], pytest.approx(0.9 - 2 / 9))
    assert (len(state.told), state.running) == (7, [])
    resets = len(recorder.resets)
    ledger.report(6, Report(9, 0.7))
    ledger.finish([(6, Outcome(value=0.7))])
    # the measured result replaces the estimate in place: told once, no reset, no refit
    assert recorder.retold_results[-1] == ([0.55], 0.7, 0.0)
    assert recorder.refits == [False, False]
    assert recorder.told[-1] == (6, None)
    assert len(recorder.resets) == resets
    assert ([0.55], 0.7) in ledger.model_state().told
    # one pruned higher up is told its estimate from there, also in place
    u = ledger.start({"x": 0.65})
    for step, value in ((1, 1.7), (3, 1.0)):
        ledger.report(u.number, Report(step, value))
    ledger.finish([(u.number, Outcome(value=1.0, pruned=True))])
    point, value, noise = recorder.retold_results[-1]
    assert (point, value) == ([0.65], pytest.approx(1.0 - 2 / 9))
    assert noise > 0  # trial 6 gained 0.2 from rung 3, the others 2/9
    assert recorder.told[-1] == (7, None)


def test_a_study_with_a_stopping_rule_tells_its_model_of_running_trials_at_their_rungs():
    for pruner, told in ((ASHA(1, 9, 3), True), (ASHA(1, 9, 3, variant="promotion"), False)):
        study = Study(SPACE, pruner=pruner)
        ledger, suggester = study._ledger, study._suggester
        _complete_trials(ledger, gain=1.0)  # the model fits final values
        running = ledger.start({"x": 0.55})
        ledger.report(running.number, Report(1, 1.5))
        assert suggester.optimizer.n_told == 5 + told, pruner
        assert (running.number in suggester.pending) is not told


def test_without_estimates_a_running_trial_stays_pending_until_it_ends():
    ledger, recorder = _rung_ledger()  # a promotion-type rule's: trials pause at rungs
    _complete_trials(ledger, gain=1.0)
    told = len(recorder.told)
    t = ledger.start({"x": 0.55})
    ledger.report(t.number, Report(1, 1.6))
    ledger.report(t.number, Report(3, 0.9))
    assert len(recorder.told) == told
    assert [n for n, _ in ledger.model_state().running] == [t.number]


def test_a_trial_pruned_below_the_models_rung_is_told_where_its_curve_would_end():
    ledger, recorder = _rung_ledger()
    full = [ledger.start({"x": i / 10}) for i in range(5)]
    for i, t in enumerate(full):  # each gains 0.5 from step 1 to 3, and 0.1 more to 9
        for step, value in ((1, 1.0 + i), (3, 0.5 + i), (9, 0.4 + i)):
            ledger.report(t.number, Report(step, value))
    assert ledger.model_rung == 3
    early = ledger.start({"x": 0.9})
    ledger.report(early.number, Report(1, 5.0))
    ledger.finish([(early.number, Outcome(value=5.0, pruned=True))])
    assert recorder.told[-1] == (early.number, 4.5)  # 5.0 at rung 1, less the gain to 3
    ledger.finish([(t.number, Outcome(value=0.4 + i)) for i, t in enumerate(full)])
    assert ledger.model_rung is None  # 5 complete: the model fits final values
    at_1, at_3 = ledger.start({"x": 0.95}), ledger.start({"x": 0.05})
    ledger.report(at_1.number, Report(1, 2.5))
    ledger.report(at_3.number, Report(1, 1.5))
    ledger.report(at_3.number, Report(3, 1.2))
    ledger.finish([(at_1.number, Outcome(value=2.5, pruned=True))])
    ledger.finish([(at_3.number, Outcome(value=1.2, pruned=True))])
    told = dict(recorder.told[-2:])
    assert told[at_1.number] == pytest.approx(2.5 - 0.6)
    assert told[at_3.number] == pytest.approx(1.2 - 0.1)  # from its highest rung
    # A model rebuilt from the store is told the same (and ``early`` from the new rung).
    rebuilt = sorted(v for _, v in ledger.model_state().told)
    assert rebuilt == pytest.approx([0.4, 1.1, 1.4, 1.9, 2.4, 3.4, 4.4, 5.0 - 0.6])


def test_an_imputed_value_is_told_with_the_spread_of_the_gains_it_rests_on():
    ledger, recorder = _rung_ledger()
    gains = [-0.2, -0.4, -0.5, -0.6, -0.9]  # from rung 1 to the end
    for i, gain in enumerate(gains):
        t = ledger.start({"x": i / 10})
        for step, value in ((1, 1.0 + i), (3, 0.9 + i), (9, 1.0 + i + gain)):
            ledger.report(t.number, Report(step, value))
        ledger.finish([(t.number, Outcome(value=1.0 + i + gain))])
    assert ledger.model_rung is None  # 5 complete: the model fits final values
    pruned = ledger.start({"x": 0.95})
    ledger.report(pruned.number, Report(1, 5.0))
    ledger.finish([(pruned.number, Outcome(value=5.0, pruned=True))])
    assert recorder.told[-1] == (pruned.number, pytest.approx(5.0 - 0.5))
    assert recorder.noise[pruned.number] == pytest.approx(statistics.pvariance(gains))
    # measured values are told as such; a rebuilt model is told the same
    assert all(recorder.noise.get(n, 0.0) == 0.0 for n, _ in recorder.told[:-1])
    state = ledger.model_state()
    told = zip(state.told, state.noise, strict=True)
    imputed = [noise for (_, value), noise in told if value == pytest.approx(4.5)]
    assert imputed == [pytest.approx(statistics.pvariance(gains))]
    assert sorted(state.noise)[:-1] == [0.0] * 5


def test_an_estimate_from_gains_that_all_agree_is_still_no_measured_value():
    ledger, recorder = _rung_ledger()
    for i in range(5):  # an error count: every trial drops by exactly 2 from rung 1
        t = ledger.start({"x": i / 10})
        for step, value in ((1, 10.0 + i), (3, 9.0 + i), (9, 8.0 + i)):
            ledger.report(t.number, Report(step, value))
        ledger.finish([(t.number, Outcome(value=8.0 + i))])
    pruned = ledger.start({"x": 0.95})
    ledger.report(pruned.number, Report(1, 9.0))
    ledger.finish([(pruned.number, Outcome(value=9.0, pruned=True))])
    assert recorder.told[-1] == (pruned.number, 7.0)  # below every measured value
    assert recorder.noise[pruned.number] > 0  # so not the best to improve on
    state = ledger.model_state()
    values, noise = np.array([v for _, v in state.told]), np.array(state.noise)
    assert values[best_measured(values, noise)] == 8.0


def test_a_joint_model_is_told_every_rung_value_at_its_resource_as_it_comes():
    store = InMemoryStorage()
    store.create_study(StudyRecord("s", "maximize", None, {}, {}, 0.0))
    ledger = Ledger(store, "s", SearchSpace(SPACE), "maximize", rungs=[1, 3, 9], joint=True)
    recorder = _Recorder()
    ledger.subscribe(recorder)
    full, pruned, running = (ledger.start({"x": x}) for x in (0.2, 0.7, 0.5))
    ledger.report(full.number, Report(1, 2.0))
    assert recorder.observed_results == [([0.2, 0.0], -2.0)]  # to minimize, at once
    ledger.report(full.number, Report(2, 2.5))  # no rung: nothing
    ledger.report(full.number, Report(4, 3.0))  # its first step past 3 (log-midway to 9)
    assert recorder.observed_results[1:] == [([0.2, 0.5], -3.0)]
    ledger.finish([(full.number, Outcome(value=3.5))])
    assert recorder.told == [(full.number, -3.5)]  # at the full resource
    for _ in range(6):  # more trials at rung 1 than a rung model would wait for
        ledger.report(ledger.start({"x": 0.9}).number, Report(1, 1.0))
    assert ledger.model_rung is None
    ledger.report(pruned.number, Report(1, 0.5))
    ledger.finish([(pruned.number, Outcome(value=0.5, pruned=True))])
    assert recorder.told[-1] == (pruned.number, None)  # its rung value was told already
    ledger.report(running.number, Report(3, 1.5))  # past two rungs at once
    assert recorder.observed_results[-2:] == [([0.5, 0.0], -1.5), ([0.5, 0.5], -1.5)]
    # A model rebuilt from the store is told the same, the running trials still pending.
    state = ledger.model_state()
    live = [([0.2], -3.5), *recorder.observed_results]
    assert sorted((tuple(p), v) for p, v in state.told) == sorted((tuple(p), v) for p, v in live)
    assert [n for n, _ in state.running] == [running.number, *range(3, 9)]


# -- on real workers ----------------------------------------------------------------------------


def _known_cutoffs() -> list[dict]:
    """On a worker: the cutoffs it knows, of each search."""
    from dtune import reporting

    return [c.table for c in reporting._known.values()]


def _states(study: Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.trials:
        counts[t.state.value] = counts.get(t.state.value, 0) + 1
    return counts


@pytest.mark.parametrize("isolate", [False, True])
def test_asha_prunes_hopeless_trials_on_real_workers_and_keeps_every_report(
    client, tmp_path, isolate
):
    path = tmp_path / "s.db"
    study = Study(SPACE, storage=path, random_state=0, n_initial_points=12, pruner=ASHA(1, 9, 3))
    study.optimize(objectives.learning_curve, 24, client=client, progress=False, isolate=isolate)
    states = _states(study)
    assert sum(states.values()) == 24
    assert states.get("PRUNED", 0) >= 6, states
    assert states.get("COMPLETE", 0) >= 3, states
    assert "FAILED" not in states
    # every worker has the cutoffs of the rungs as they ended, to judge reports there
    final = study.pruner.cutoffs(study.trials, minimize=True)
    assert (0, 1.0) in final
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        known = client.run(_known_cutoffs)
        if all(final in tables for tables in known.values()):
            break
        time.sleep(0.05)
    assert all(final in tables for tables in known.values()), (final, known)
    for t in study.trials:
        assert list(t.intermediate) == list(range(1, t.last_step + 1))
        if t.state is TrialState.PRUNED:
            assert t.last_step in (1, 3)  # stopped at a rung
            assert t.value == t.intermediate[t.last_step]
        else:
            assert t.last_step == 9
    # the store has every report, and a new process reads them back with the pruner
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT COUNT(*) FROM reports").fetchone()[0]
    assert rows == sum(len(t.reports) for t in study.trials)
    again = dtune.load_study(path)
    assert again.pruner == ASHA(1, 9, 3)
    assert [t.intermediate for t in again.trials] == [t.intermediate for t in study.trials]
    frame = again.trials_dataframe()
    assert set(frame["state"]) == {"COMPLETE", "PRUNED"}
    assert (frame["last_step"] == [t.last_step for t in study.trials]).all()


def test_a_runs_start_up_is_measured_from_real_reports_and_sets_the_rungs(client, tmp_path):
    """Half a second of start-up at a tenth of a second an epoch: five epochs' worth,
    which estimate_overhead reads off the reports' times; an ASHA given it judges trials
    at the rungs where a run's cost triples."""
    path = tmp_path / "s.db"
    plain = Study(SPACE, storage=path, name="plain", random_state=0)
    plain.optimize(objectives.slow_to_start, 8, client=client, progress=False)
    overhead = estimate_overhead(plain.trials)
    assert overhead is not None
    assert 3.5 < overhead < 7.0, overhead  # the sleeps say 5 (and messaging adds a little)
    assert estimate_overhead([]) is None
    asha = ASHA(1, 9, 3, overhead=round(overhead))
    assert len(asha.rungs()) < len(ASHA(1, 9, 3).rungs())  # 1, 9 (cost 6, 14 or more)
    # Random points (no model), so that most of them fall far from the best at the rung.
    # 24, not 16: which are pruned depends on the order they reach the rung (the first
    # ones there go on); 16 pruned 5-6 in eight runs here and 3 once in CI (session 39),
    # 24 pruned 9-11 in four.
    study = Study(
        SPACE, storage=path, name="asha", random_state=1, n_initial_points=24, pruner=asha
    )
    study.optimize(objectives.slow_to_start, 24, client=client, progress=False)
    states = _states(study)
    assert states.get("PRUNED", 0) >= 4, states
    assert {t.last_step for t in study.trials if t.state is TrialState.PRUNED} <= set(
        asha.stops_at(0)
    )
    assert dtune.load_study(path, name="asha").pruner == asha  # the overhead is kept


def test_a_joint_model_searches_real_workers_told_every_rung_value(client, tmp_path):
    """``resource_model="joint"`` through the suggestion process: the search prunes as
    with the rung model, and the model was told each trial's values at rungs 1 and 3
    (resources 0 and 0.5) as they came and its final one, as a loaded study is."""
    path = tmp_path / "s.db"
    # 12 random points, not 6: since EI improves on the model's lowest mean (run 20) the
    # model proposes few hopeless points, and with 6 a run pruned 5 (CI, session 25).
    # Which of the random points are pruned depends on the order they reach rung 1 (the
    # first ones there go on): 5-8 of 24 in twelve runs, six on session 28's code and six
    # on the code before it, so the test asks for a third of the 12 (CI pruned 5).
    study = Study(
        SPACE,
        storage=path,
        random_state=0,
        n_initial_points=12,
        pruner=ASHA(1, 9, 3),
        resource_model="joint",
    )
    study.optimize(objectives.learning_curve, 24, client=client, progress=False)
    states = _states(study)
    assert sum(states.values()) == 24
    assert "FAILED" not in states
    assert states.get("PRUNED", 0) >= 4, states
    assert abs(study.best_params["x"] - 0.3) < 0.15
    expected = []
    for t in study.trials:
        x = t.params["x"]
        expected += [(x, r, t.intermediate[s]) for r, s in ((0.0, 1), (0.5, 3)) if s <= t.last_step]
        if t.state is TrialState.COMPLETE:
            expected.append((x, 1.0, t.value))

    def told(s):
        X, y = s._suggester.optimizer.history
        return sorted((x, round(r, 9), v) for (x, r), v in zip(X, y, strict=True))

    assert told(study) == sorted(expected)
    assert told(dtune.load_study(path)) == sorted(expected)


def _stand_in_driver(client, topic: str) -> list[dict]:
    """This test as the driver of search ``topic``: it hears every report (in the
    client's event loop) and answers "go on" to those that wait; the reports heard."""
    messages: list[dict] = []
    answers = []

    def on_report(event: tuple[float, dict]) -> None:
        message = event[1]
        messages.append(message)
        if message["wait"]:
            answer = client.run(
                deliver, topic, message["number"], message["seq"], False,
                workers=[message["worker"]], wait=False, asynchronous=True,
            )  # fmt: skip
            answers.append(asyncio.ensure_future(answer))

    client.subscribe_topic(topic, on_report)
    return messages


def test_a_trial_waits_for_verdicts_only_at_the_reports_that_reach_its_rungs(client):
    """run_trial on a real worker, with this test standing in for the driver: it hears
    every report on the topic and answers "go on" to those that wait."""
    topic = "test-waits"
    messages = _stand_in_driver(client, topic)
    # Hyperband's first bracket stops at 1 and 3 of 9; its last bracket never stops
    hb = Hyperband(1, 9, 3)
    for bracket, waits_at in ((0, {1, 3}), (2, set())):
        number = next(n for n in range(99) if hb.bracket_of(n) == bracket)
        messages.clear()
        to = ReportTo(topic, number, wait=True, wait_at=tuple(hb.stops_at(number)))
        done = client.submit(
            run_trial, objectives.learning_curve, {"x": 0.5}, None, report_to=to, pure=False
        )
        assert done.result(timeout=20).value == pytest.approx(0.04 + 0.5 / 9)
        deadline = time.monotonic() + 5
        while len(messages) < 9 and time.monotonic() < deadline:
            time.sleep(0.01)
        heard = [(m["step"], m["wait"]) for m in messages]
        assert heard == [(step, step in waits_at) for step in range(1, 10)]
    client.unsubscribe_topic(topic)


def test_a_report_at_a_rung_whose_cutoff_the_worker_knows_is_judged_there(client):
    """run_trial on a real worker with cutoffs: reports at rungs with a cutoff stop or go
    on at once (nothing waits; each is still sent, to be recorded), the newest cutoffs a
    worker heard of win, and a rung without one waits for the driver (this test)."""
    topic = "test-here"
    messages = _stand_in_driver(client, topic)
    heard: list[tuple[int, bool, bool]] = []

    def run(number: int, cutoffs: Cutoffs) -> Outcome:
        messages.clear()
        to = ReportTo(topic, number, wait=True, wait_at=(1.0, 3.0), cutoffs=cutoffs)
        done = client.submit(
            run_trial, objectives.learning_curve, {"x": 0.5}, None, report_to=to, pure=False
        )
        outcome = done.result(timeout=20)
        deadline = time.monotonic() + 5
        while len(messages) < (3 if outcome.pruned else 9) and time.monotonic() < deadline:
            time.sleep(0.01)
        heard[:] = [(m["step"], m["wait"], m["at_rung"]) for m in messages]
        return outcome

    # x = 0.5 reports 0.54 at step 1 and 0.207 at step 3
    first = Cutoffs(1, minimize=True, table={(0, 1.0): 1.0, (0, 3.0): 0.1})
    outcome = run(0, first)
    assert outcome.pruned
    assert heard == [(1, False, True), (2, False, False), (3, False, True)]
    # newer cutoffs sent to every worker win over the older ones a trial brings along
    client.run(deliver_cutoffs, topic, Cutoffs(2, True, {(0, 1.0): 1.0, (0, 3.0): 0.3}))
    outcome = run(1, first)
    assert not outcome.pruned
    assert outcome.value == pytest.approx(0.04 + 0.5 / 9)
    assert heard == [(step, False, step in (1, 3)) for step in range(1, 10)]
    # no cutoff for this trial's group: each rung waits for the driver's verdict
    client.run(deliver_cutoffs, topic, Cutoffs(3, True, {(1, 1.0): 1.0, (1, 3.0): 0.3}))
    outcome = run(2, first)
    assert not outcome.pruned
    assert heard == [(step, step in (1, 3), step in (1, 3)) for step in range(1, 10)]
    client.unsubscribe_topic(topic)


def test_a_run_resumed_from_a_checkpoint_is_judged_only_at_the_rungs_it_has_not_passed(
    client, tmp_path
):
    """An earlier run of trial 5 recorded steps 1-5 and saved a checkpoint at step 4: the
    new run goes on from step 5. Its first report reaches no rung (the driver keeps steps
    1-4), so rung 3's cutoff, which would stop any value, does not judge it; rung 6 does
    wait for the driver (this test, which says go on)."""
    topic = "test-resumed"
    messages = _stand_in_driver(client, topic)
    (tmp_path / "s-5").write_text("4")
    stop_all = Cutoffs(1, minimize=True, table={(0, 1.0): 0.0, (0, 3.0): 0.0})
    to = ReportTo(
        topic, 5, True, (1.0, 3.0, 6.0), cutoffs=stop_all, study="s", recorded=(1, 2, 3, 4, 5)
    )
    params = {"x": 0.5, "folder": str(tmp_path)}
    done = client.submit(
        run_trial, objectives.resumable_curve, params, "value", report_to=to, pure=False
    )
    outcome = done.result(timeout=20)
    assert not outcome.pruned
    assert outcome.metrics["resumed_from"] == 4
    deadline = time.monotonic() + 5
    while len(messages) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    heard = [(m["step"], m["wait"], m["at_rung"]) for m in messages]
    assert heard == [(step, step == 6, step == 6) for step in range(5, 10)]

    # Dask reran trial 6's task itself (its worker died): the worker does not know which
    # steps the earlier run recorded, so the driver judges the first report, past rung 1.
    (tmp_path / "s-6").write_text("4")
    messages.clear()
    to = ReportTo(topic, 6, True, (1.0, 3.0, 6.0), cutoffs=stop_all, study="s")
    done = client.submit(
        run_trial, objectives.resumable_curve, params, "value", report_to=to, pure=False
    )
    assert not done.result(timeout=20).pruned
    deadline = time.monotonic() + 5
    while len(messages) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    heard = [(m["step"], m["wait"], m["at_rung"]) for m in messages]
    assert heard[0] == (5, True, True)
    client.unsubscribe_topic(topic)


@pytest.mark.parametrize("isolate", [False, True])
def test_an_objective_knows_the_study_and_number_of_its_trial(client, isolate):
    study = Study(SPACE, name="knows", random_state=0, n_initial_points=4)
    study.optimize(objectives.knows_its_trial, 4, client=client, isolate=isolate, progress=False)
    assert [(t.metrics["study"], t.metrics["number"]) for t in study.trials] == [
        ("knows", n) for n in range(4)
    ]
    assert dtune.current_trial() is None  # not here, outside the trials


@pytest.mark.parametrize("isolate", [False, True])
def test_checkpoint_files_go_when_their_trials_end_pruned_complete_or_failed(
    client, tmp_path, isolate
):
    folder = tmp_path / "checkpoints"
    study = Study(
        SPACE,
        name="a study/1",
        objective_key="value",
        random_state=3,
        n_initial_points=12,
        pruner=ASHA(1, 9, 3),
    )
    objective = functools.partial(objectives.checkpoints_a_folder, folder=str(folder))
    study.optimize(objective, 12, client=client, isolate=isolate, progress=False)
    states = _states(study)
    assert states.get("PRUNED"), states
    assert states.get("COMPLETE"), states
    assert states.get("FAILED"), states
    # each trial's checkpoint was its own, named by study and number: a folder, removed
    # with what it held whether the trial completed, was pruned or failed
    for t in study.trials:
        if t.state is TrialState.COMPLETE:
            assert t.metrics["path"] == str(folder / f"a%20study%2F1-{t.number}.ckpt")
        assert (t.state is TrialState.FAILED) == (t.params["x"] > 0.8), t
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("how", ["hangs", "exits"])
def test_an_isolated_trial_killed_past_its_time_or_dead_leaves_no_checkpoint(client, tmp_path, how):
    folder = tmp_path / "checkpoints"
    study = Study(SPACE, name="killed", random_state=0, n_initial_points=2)
    objective = functools.partial(objectives.checkpoints_then_dies, folder=str(folder), how=how)
    timeout = 2.0 if how == "hangs" else None
    study.optimize(objective, 2, client=client, isolate=True, trial_timeout=timeout, progress=False)
    assert _states(study) == {"FAILED": 2}
    why = "TrialTimeout" if how == "hangs" else "exited with status 3"
    assert all(why in (t.error or "") for t in study.trials), [t.error for t in study.trials]
    # the child process could not remove its checkpoint: the worker did, as the trial
    # failed and will not run again
    assert folder.is_dir()
    assert list(folder.iterdir()) == []


def test_a_checkpoint_file_outside_a_search_is_new_each_time_and_removed(tmp_path):
    with dtune.checkpoint_file(tmp_path, ".pt") as first, dtune.checkpoint_file(tmp_path) as second:
        assert first != second
        assert first.parent == second.parent == tmp_path
        first.write_text("epoch 1")
        second.mkdir()
        (second / "weights").write_text("epoch 1")
    assert list(tmp_path.iterdir()) == []
    kept = _abandoned_with_a_checkpoint(tmp_path)
    assert kept.read_text() == "epoch 2"  # the trial runs again: it keeps its checkpoint


def _abandoned_with_a_checkpoint(folder: Path) -> Path:
    """The path of a checkpoint written in a block that its trial's abandonment left."""
    with contextlib.suppress(dtune.TrialAbandoned), dtune.checkpoint_file(folder) as path:
        path.write_text("epoch 2")
        raise dtune.TrialAbandoned("its driver is gone")
    return path


def test_without_a_pruner_reports_are_recorded_and_every_trial_completes(client, tmp_path):
    study = Study(SPACE, storage=tmp_path / "s.db", random_state=1, n_initial_points=4)
    study.optimize(objectives.learning_curve, 8, client=client, progress=False)
    assert _states(study) == {"COMPLETE": 8}
    assert all(t.intermediate and t.last_step == 9 for t in study.trials)
    assert all(t.reports[0].metrics == {"lr": 0.1} for t in study.trials)


def test_bad_reports_fail_their_trial_with_the_bad_value_and_the_search_goes_on(client):
    study = Study(SPACE, random_state=2, n_initial_points=12, pruner=MedianStop())
    study.optimize(objectives.reports_badly, 12, client=client, progress=False)
    assert len(study.trials) == 12
    for t in study.trials:
        x = t.params["x"]
        if x < 0.3:
            assert t.state is TrialState.FAILED
            assert "value nan at step 2 is not finite" in t.error
        elif x > 0.7:
            assert t.state is TrialState.FAILED
            assert "step 3 of trial" in t.error
            assert "does not come after" in t.error
        else:
            assert t.state is TrialState.COMPLETE
    assert {t.state for t in study.trials} == {TrialState.FAILED, TrialState.COMPLETE}


# -- promotion-type ASHA: trials pause at rungs and the best go on ------------------------------


def _nothing_left_to_promote(study: Study) -> bool:
    return study.pruner.promotion(study.trials, minimize=True) is None


@pytest.mark.parametrize("pruner", [ASHA(1, 9, 3, "promotion"), Hyperband(1, 9, 3, "promotion")])
def test_a_promotion_search_counts_configurations_and_charges_each_epoch_once(pruner):
    from dtune.sim import SimulatedCluster

    study = Study(SPACE, random_state=1, n_initial_points=8, pruner=pruner)
    objective = functools.partial(objectives.learning_curve, nap=0.0)
    # 1 simulated second per epoch: a trial's seconds are the epochs it ran
    study.optimize(objective, 40, client=SimulatedCluster(4, lambda p: 9.0), progress=False)
    states = _states(study)
    assert sum(states.values()) == 40  # n_trials counts configurations, not runs
    assert set(states) == {"PAUSED", "COMPLETE"}, states
    promoted = [t for t in study.trials if t.earlier_s > 0]
    assert len(promoted) >= 10
    for t in study.trials:
        assert list(t.intermediate) == list(range(1, t.last_step + 1))
        assert t.last_step in ((1, 3) if t.state is TrialState.PAUSED else (9,))
        assert t.duration == pytest.approx(t.last_step)  # each epoch run once
    assert _nothing_left_to_promote(study)  # the search ended with its promotions done
    # the best at each rung went on, and fewer went on than reached it (a trial ranked
    # in the top third when it was promoted; better ones may have come since)
    for rung, upper in ((1, 3), (3, 9)):
        at = [t for t in study.trials if t.last_step >= rung]
        best = min(at, key=lambda t: t.intermediate[rung])
        assert best.last_step >= upper
        assert sum(t.last_step >= upper for t in at) < len(at)


@pytest.mark.parametrize("isolate", [False, True])
def test_promotion_asha_resumes_paused_trials_from_their_checkpoints_on_real_workers(
    client, tmp_path, isolate
):
    folder, path = tmp_path / "checkpoints", tmp_path / "s.db"
    study = Study(
        SPACE,
        name="promote",
        storage=path,
        objective_key="value",
        random_state=0,
        n_initial_points=12,
        pruner=ASHA(1, 9, 3, variant="promotion"),
    )
    objective = functools.partial(objectives.pausable_curve, folder=str(folder))
    study.optimize(objective, 15, client=client, isolate=isolate, progress=False)
    states = _states(study)
    assert sum(states.values()) == 15
    assert set(states) == {"PAUSED", "COMPLETE"}, states
    assert _nothing_left_to_promote(study)
    for t in study.trials:
        # each epoch reported once: a promoted run went on from its checkpoint
        assert list(t.intermediate) == list(range(1, t.last_step + 1)), t
        if t.state is TrialState.PAUSED:
            assert t.last_step in (1, 3)
            assert t.value == t.intermediate[t.last_step]
        else:
            assert t.last_step == 9
            assert t.metrics["resumed_from"] == 3
            assert 0 < t.earlier_s < t.duration
    # a paused trial keeps its checkpoint, to go on from it if promoted; a complete one's
    # is gone
    paused = {f"promote-{t.number}" for t in study.trials if t.state is TrialState.PAUSED}
    assert {p.name for p in folder.iterdir()} == paused
    # the store keeps the paused trials and their runs' seconds; the study resumes with
    # them: new configurations, and promotions where they now rank high enough
    again = dtune.load_study(path, name="promote")
    assert [(t.state, t.earlier_s, t.reports) for t in again.trials] == [
        (t.state, t.earlier_s, t.reports) for t in study.trials
    ]
    again.optimize(objective, 6, client=client, isolate=isolate, progress=False)
    assert len(again.trials) == 21
    assert _nothing_left_to_promote(again)
    for t in again.trials:
        assert list(t.intermediate) == list(range(1, t.last_step + 1)), t
    paused = {f"promote-{t.number}" for t in again.trials if t.state is TrialState.PAUSED}
    assert {p.name for p in folder.iterdir()} == paused


def test_promotion_hyperband_pauses_each_trial_at_its_brackets_rungs_on_real_workers(
    client, tmp_path
):
    folder = tmp_path / "checkpoints"
    hb = Hyperband(1, 9, 3, variant="promotion")
    study = Study(
        SPACE, name="promote", objective_key="value", random_state=0, n_initial_points=12,
        pruner=hb,
    )  # fmt: skip
    objective = functools.partial(objectives.pausable_curve, folder=str(folder))
    study.optimize(objective, 24, client=client, progress=False)
    states = _states(study)
    assert sum(states.values()) == 24
    assert set(states) == {"PAUSED", "COMPLETE"}, states
    assert _nothing_left_to_promote(study)
    brackets = {b: [t for t in study.trials if hb.bracket_of(t.number) == b] for b in range(3)}
    assert all(brackets.values()), brackets  # 24 trials reach every bracket
    for b, trials in brackets.items():
        rungs = hb.brackets()[b]
        for t in trials:
            # paused at its own bracket's rungs only, and went on from there when promoted
            assert list(t.intermediate) == list(range(1, t.last_step + 1)), t
            assert t.last_step in rungs, t
            if t.state is TrialState.COMPLETE and len(rungs) > 1:
                assert t.metrics["resumed_from"] == rungs[-2], t
    assert {p.name for p in folder.iterdir()} == {
        f"promote-{t.number}" for t in study.trials if t.state is TrialState.PAUSED
    }
