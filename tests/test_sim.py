"""The driver's loop on simulated workers and clock (dtune.sim): budgets, failures,
interruptions and resumes, in milliseconds and deterministically."""

from __future__ import annotations

import pytest

from dtune import Integer, Real, Study, TrialState, load_study
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
