"""The driver's loop on simulated workers and clock (dtune.sim): budgets, failures,
interruptions, resumes and pruning, in milliseconds and deterministically."""

from __future__ import annotations

import dataclasses

import pytest

import dtune
from dtune import ASHA, Hyperband, Integer, Real, Study, TrialState, load_study
from dtune.exceptions import TooManyFailuresError
from dtune.sim import SimulatedCluster
from dtune.stats import refill_latencies, utilization

SPACE = {"x": Real(-2.0, 2.0), "y": Real(-2.0, 2.0)}


def _bowl(x, y):
    return (x - 0.5) ** 2 + (y + 0.3) ** 2


def _slow_where_x_is_large(params):
    return 1.0 + 2.0 * (params["x"] + 2.0) / 4.0


def test_a_simulated_search_keeps_every_worker_busy_and_repeats_per_seed():
    def run():
        study = Study(SPACE, random_state=0)
        cluster = SimulatedCluster(8, duration=_slow_where_x_is_large)
        study.optimize(_bowl, 48, client=cluster, progress=False)
        return study

    first, second = run(), run()
    trials = first.trials
    assert len(trials) == 48
    assert [t.params for t in trials] == [t.params for t in second.trials]
    assert {t.worker for t in trials} == {f"sim-{i}" for i in range(8)}
    assert max(refill_latencies(trials)) == 0.0  # a free worker is refilled at once
    assert utilization(trials) > 0.85  # only the tail idles
    assert len({tuple(t.params.values()) for t in trials}) == 48
    assert first.best_value < 0.01


def test_the_timeout_is_counted_on_the_backends_clock():
    study = Study(SPACE, random_state=1)
    study.optimize(_bowl, 1000, client=SimulatedCluster(4), timeout=10.0, progress=False)
    # 4 workers, 1 s trials: starts at t = 0, 1, ..., 9
    assert len(study.trials) == 40


def test_failure_limits_stop_a_simulated_search_with_the_last_traceback():
    def broken(x, y):
        raise RuntimeError(f"diverged at x={x:.2f}")

    study = Study(SPACE, random_state=0)
    with pytest.raises(TooManyFailuresError, match=r"(?s)5 trials failed in a row.*diverged"):
        study.optimize(
            broken, 50, client=SimulatedCluster(2), max_consecutive_failures=5, progress=False
        )
    states = [t.state for t in study.trials]
    assert states.count(TrialState.FAILED) == 5
    assert TrialState.RUNNING not in states  # the one still running was interrupted


def test_a_simulated_trial_timeout_fails_only_the_slow_trials():
    study = Study({"x": Real(0.0, 1.0)}, random_state=0)
    study.optimize(
        lambda x: x,
        20,
        client=SimulatedCluster(2, duration=lambda p: 10.0 * p["x"]),
        trial_timeout=5.0,
        max_consecutive_failures=None,
        progress=False,
    )
    for t in study.trials:
        assert (t.state is TrialState.FAILED) == (t.params["x"] > 0.5)
        assert t.duration == pytest.approx(min(10.0 * t.params["x"], 5.0))


def test_an_interrupted_search_resumes_with_its_running_trials_first(tmp_path):
    def stop_at_six(study, trial):
        if trial.number == 6:
            raise KeyboardInterrupt

    study = Study({"k": Integer(0, 30)}, storage=tmp_path / "s.db", random_state=0)
    with pytest.raises(KeyboardInterrupt):
        study.optimize(
            lambda k: (k - 17) ** 2,
            30,
            client=SimulatedCluster(4),
            callbacks=[stop_at_six],
            progress=False,
        )
    interrupted = [t for t in study.trials if t.state is TrialState.INTERRUPTED]
    assert len(interrupted) == 4  # the freed slot was refilled before the callback ran
    resumed = load_study(tmp_path / "s.db")
    resumed.optimize(lambda k: (k - 17) ** 2, 10, client=SimulatedCluster(4), progress=False)
    again = {t.number: t for t in resumed.trials}
    for t in interrupted:
        assert again[t.number].state is TrialState.COMPLETE
        assert again[t.number].params == t.params
    assert len(resumed.trials) == 7 + 4 + (10 - 4)
    assert len({t.params["k"] for t in resumed.trials}) == len(resumed.trials)


def _curve(x, y):
    """27 epochs that converge to the bowl, from above, at a speed that varies with y."""
    final = _bowl(x, y)
    for epoch in range(1, 28):
        dtune.report(final + (y + 2.0) / (1.0 + epoch * (x + 2.5)), epoch)
    return final


def _as_of(trial, moment):
    """``trial`` as the driver knew it at ``moment``: its reports up to then."""
    return dataclasses.replace(trial, reports=tuple(r for r in trial.reports if r.time <= moment))


@pytest.mark.parametrize("pruner", [ASHA(1, 27, 3), Hyperband(1, 27, 3)])
def test_simulated_reports_arrive_on_the_clock_and_each_verdict_counts_only_earlier_ones(
    pruner,
):
    def run():
        study = Study(SPACE, random_state=3, pruner=pruner)
        cluster = SimulatedCluster(6, duration=lambda p: 27.0 * _slow_where_x_is_large(p))
        study.optimize(_curve, 120, client=cluster, progress=False)
        return study.trials

    trials = run()
    assert [t.params for t in trials] == [t.params for t in run()]
    pruned = [t for t in trials if t.state is TrialState.PRUNED]
    assert 40 <= len(pruned) < 110
    for t in trials:
        seconds = 27.0 * _slow_where_x_is_large(t.params)
        # The reports are spread evenly over the trial's seconds, each at its own time.
        for r in t.reports:
            assert r.time == pytest.approx(t.started + seconds * r.step / 27)
        rungs = pruner.stops_at(t.number) or []
        if t.state is TrialState.COMPLETE:
            assert t.last_step == 27
            assert t.duration == pytest.approx(seconds)
        else:
            assert t.state is TrialState.PRUNED
            # Stopped at one of its rungs, then and there, with the value it reported.
            assert t.last_step in rungs
            assert t.finished == pytest.approx(t.reports[-1].time)
            assert t.value == t.reports[-1].value
        # Each verdict the rule's, given the reports made before it and no later one.
        for r in t.reports:
            if r.step in rungs:
                now = [_as_of(o, r.time) for o in trials]
                stop = pruner.should_stop(_as_of(t, r.time), now, minimize=True)
                assert stop == (t.state is TrialState.PRUNED and r.step == t.last_step)


@pytest.mark.parametrize("resource_model", ["rung", "joint"])
def test_a_simulated_search_with_a_pruner_spends_less_worker_time_for_as_good_a_result(
    resource_model,
):
    def run(pruner):
        study = Study(SPACE, random_state=0, pruner=pruner, resource_model=resource_model)
        cluster = SimulatedCluster(8, duration=lambda p: 27.0)
        study.optimize(_curve, 150, client=cluster, progress=False)
        return study

    full, asha = run(None), run(ASHA(1, 27, 3))
    spent = {s: sum(t.duration for t in s.trials) for s in (full, asha)}
    assert spent[full] == 150 * 27.0
    # The rung model spends 0.11 of the full search's worker time here; the joint one,
    # whose later points are nearly all good enough to run to the end, 0.51 (0.17 while
    # expected improvement asked for gains of 0.01 over the lowest value told).
    assert spent[asha] < 0.6 * spent[full]
    assert asha.best_value < 0.01
    # A pruned trial's worker was refilled at once.
    assert max(refill_latencies(asha.trials)) == 0.0


def test_a_joint_model_rebuilt_from_the_store_knows_what_the_search_told_it(tmp_path):
    """Every rung value of every trial (at its resource) and every complete value (at
    the full one) reached the model as the search ran, and a study loaded from the
    store is told exactly the same."""
    study = Study(
        SPACE,
        storage=tmp_path / "s.db",
        random_state=0,
        pruner=ASHA(1, 27, 3),
        resource_model="joint",
    )
    study.optimize(_curve, 60, client=SimulatedCluster(6, duration=lambda p: 27.0), progress=False)
    resources = {1: 0.0, 3: 1 / 3, 9: 2 / 3}
    expected = []
    for t in study.trials:
        point = [t.params["x"], t.params["y"]]
        reached = [step for step in resources if step in t.intermediate]  # every epoch reports
        expected += [(*point, resources[step], t.intermediate[step]) for step in reached]
        if t.state is TrialState.COMPLETE:
            expected.append((*point, 1.0, t.value))

    def told(s):
        X, y = s._suggester.optimizer.history
        return sorted((*x[:2], round(x[2], 9), v) for x, v in zip(X, y, strict=True))

    assert told(study) == sorted((x, y, round(r, 9), v) for x, y, r, v in expected)
    assert told(load_study(tmp_path / "s.db")) == told(study)


@pytest.mark.parametrize("variant", ["stopping", "promotion"])
def test_every_simulated_run_pays_its_start_up_before_its_first_report(variant):
    """With ``startup``, each run of a trial (a promoted one's again) spends that long
    before its first report; estimate_overhead reads it back in steps, and the worker
    time is the start-ups plus the steps that ran."""
    pruner = ASHA(1, 27, 3, variant)
    study = Study(SPACE, random_state=0, pruner=pruner)
    cluster = SimulatedCluster(4, duration=lambda p: 27.0, startup=5.0)  # 1 s a step
    study.optimize(_curve, 40, client=cluster, progress=False)
    trials = [t for t in study.trials if t.duration is not None]
    runs = 0
    for t in trials:
        # A promoted trial paused at each rung below its last step (the promotion
        # variant pauses every trial at every rung below the top) and ran again from each.
        passed = [k for k in (1, 3, 9) if k < t.last_step] if t.earlier_s else []
        first = passed[-1] if passed else 0  # where its last run went on from
        # the last run: its start-up, then one second a step
        for r in t.reports:
            if r.step > first:
                assert r.time == pytest.approx(t.started + 5.0 + r.step - first)
        runs += 1 + len(passed)
    assert any(t.state is TrialState.COMPLETE for t in trials)
    assert any(t.last_step < 27 for t in trials)
    spent = sum(t.duration for t in trials)
    assert spent == pytest.approx(5.0 * runs + sum(t.last_step for t in trials))
    if variant == "promotion":
        assert any(t.earlier_s for t in trials)  # some went on, paying the start-up again
    else:
        assert dtune.pruners.estimate_overhead(trials) == pytest.approx(5.0)


@pytest.mark.parametrize("startup", [-1.0, float("nan"), float("inf"), "5", True])
def test_a_bad_start_up_is_named(startup):
    with pytest.raises(ValueError, match=f"startup={startup!r} must be a finite number"):
        SimulatedCluster(2, startup=startup)
