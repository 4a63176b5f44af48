"""The asynchronous driver on a real LocalCluster of worker processes and real SQLite."""

from __future__ import annotations

import threading
import time

import pytest

from dtune import Integer, Real, Study, TrialState, load_study
from tests import objectives
from tests.conftest import n_told

BRANIN = {"x1": Real(-5.0, 10.0), "x2": Real(0.0, 15.0)}


def test_the_objective_is_pickled_once_per_search_not_with_every_trial(client):
    objective = objectives.CountsItsPickling()
    before = objectives.CountsItsPickling.pickled
    study = Study({"x": Real(0.0, 1.0)}, random_state=0)
    study.optimize(objective, 16, client=client, progress=False)
    assert n_told(study) == 16
    assert min(t.value for t in study.trials) < 0.05  # the workers ran the real thing
    # once to check that it pickles, once packed for the workers: not once per trial
    assert objectives.CountsItsPickling.pickled - before <= 2


def test_a_slow_trial_does_not_hold_back_the_others(client, tmp_path):
    told = []  # (when, trial, results told so far), as each trial is recorded

    def watch(study, trial):
        told.append((time.time(), trial.number, n_told(study)))

    study = Study({"x": Real(0.0, 1.0)}, storage=tmp_path / "s.db", random_state=0)
    marker = str(tmp_path / "slow")
    study.optimize(
        lambda x: objectives.first_is_slow(marker, x),
        14,
        client=client,
        callbacks=[watch],
        progress=False,
    )
    trials = study.trials
    slow = max(trials, key=lambda t: t.duration)
    assert slow.duration >= 4.0
    during = [t for t in trials if t is not slow and t.finished < slow.finished]
    # with four workers, three keep finishing and are refilled while the slow one runs
    assert len(during) >= 8
    refilled = [t for t in during if t.started > min(d.finished for d in during)]
    assert refilled
    # each was recorded and told as it came, not at the end of a batch
    told_while_slow_ran = [n_told for when, _, n_told in told if when < slow.finished]
    assert len(told_while_slow_ran) >= 8
    assert told_while_slow_ran == sorted(told_while_slow_ran)
    assert told_while_slow_ran[-1] >= 8


def test_no_two_running_trials_share_a_point(client):
    study = Study({"k": Integer(0, 11)}, random_state=0, n_initial_points=3)
    study.optimize(
        objectives.sleepy_square,
        12,
        client=client,
        progress=False,
    )
    points = [t.params["k"] for t in study.trials]
    assert sorted(points) == list(range(12))
    for a in study.trials:
        overlapping = [
            b
            for b in study.trials
            if b is not a and b.started < a.finished and a.started < b.finished
        ]
        assert all(b.params != a.params for b in overlapping)


@pytest.mark.slow
def test_seeded_search_finds_the_branin_minimum():
    # Two workers: with more, the order results arrive in (and so the points) varies
    # more from run to run under a loaded CI machine.
    study = Study(BRANIN, random_state=0, acq_func="EI")
    study.optimize(objectives.timed_branin, 40, n_workers=2, progress=False)
    assert len(study.trials) == 40
    assert study.best_value == pytest.approx(0.397887, abs=0.05)


def test_failing_trials_are_recorded_and_the_search_goes_on(client, tmp_path):
    study = Study(
        {"x": Real(0.0, 10.0)},
        storage=tmp_path / "s.db",
        objective_key="val_loss",
        random_state=0,
        n_initial_points=12,
    )
    study.optimize(objectives.sometimes_bad, 20, client=client, progress=False)
    trials = study.trials
    assert len(trials) == 20
    failed = [t for t in trials if t.state is TrialState.FAILED]
    complete = [t for t in trials if t.state is TrialState.COMPLETE]
    assert failed
    assert complete
    messages = {int(t.params["x"]): t.error for t in failed}
    expected = {
        0: "RuntimeError: diverged at x=",
        1: "is None",
        2: "nan",
        3: "'oops' (str)",
        4: "without the objective key 'val_loss'",
    }
    for kind, message in messages.items():
        assert expected[kind] in message
    assert "Traceback" in messages.get(0, "Traceback")
    # failed points are never told to the optimizer as numbers
    assert n_told(study) == len(complete)
    assert all(t.worker and t.host and t.started <= t.finished for t in trials)
    assert load_study(tmp_path / "s.db").trials == trials


def test_a_study_resumes_from_its_store_and_continues_numbering(client, tmp_path):
    path = tmp_path / "s.db"
    first = Study(BRANIN, name="b", storage=path, random_state=0)
    first.optimize(objectives.quick_branin, 6, client=client, progress=False)
    # a driver that died mid-trial leaves a RUNNING trial behind
    orphan = first.ask()

    resumed = load_study(path, name="b")
    resumed.optimize(objectives.quick_branin, 6, client=client, progress=False)
    trials = resumed.trials
    # the orphan's point is run again first, under its own number, within the 6 trials
    assert [t.number for t in trials] == list(range(12))
    assert all(t.state is TrialState.COMPLETE for t in trials)
    assert trials[orphan.number].params == orphan.params
    assert n_told(resumed) == 12


def test_study_stop_from_a_callback_lets_running_trials_finish_and_ends_the_call(client):
    """A budget in worker-seconds, as a user would write it: stop once the finished
    trials have used 2 worker-seconds; the next call runs in full."""
    study = Study({"x": Real(0.0, 1.0)}, random_state=3)
    used = []

    def budget(study: Study, trial) -> None:
        used.append(trial.duration)
        if sum(used) >= 2.0:
            study.stop()

    study.optimize(objectives.nap, 200, client=client, callbacks=[budget], progress=False)
    trials = study.trials
    slots = len(client.scheduler_info()["workers"])
    # 0.2-s trials: 10 to reach 2 s, then those running (and the slots refilled with
    # the results that crossed the budget) finish; none is left running or cancelled
    assert 10 <= len(trials) <= 10 + 2 * slots, len(trials)
    assert all(t.state is TrialState.COMPLETE for t in trials)
    study.optimize(objectives.nap, 3, client=client, progress=False)
    assert len(study.trials) == len(trials) + 3


def test_an_unpicklable_objective_is_refused_before_anything_runs(client):
    lock = threading.Lock()
    study = Study({"x": Real(0.0, 1.0)})
    with pytest.raises(TypeError, match=r"cannot be pickled.*inside it"):
        study.optimize(lambda x: lock.locked() + x, 3, client=client, progress=False)
    assert study.trials == []


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"n_trials": 0}, "n_trials=0"),
        ({"n_trials": 2.5}, "n_trials=2.5"),
        ({"n_trials": 3, "gpus_per_trial": 0}, "gpus_per_trial=0"),
        ({"n_trials": 3, "timeout": -1}, "timeout=-1"),
    ],
)
def test_bad_optimize_arguments_fail_early(client, kwargs, needle):
    study = Study({"x": Real(0.0, 1.0)})
    with pytest.raises(ValueError, match=needle):
        study.optimize(lambda x: x, client=client, **kwargs)
    assert study.trials == []


def test_trials_record_worker_host_and_device(client):
    study = Study({"x": Real(0.0, 1.0)}, random_state=0)
    study.optimize(lambda x: x, 8, client=client, progress=False)
    workers = set(client.scheduler_info(n_workers=-1)["workers"])
    names = {str(w["name"]) for w in client.scheduler_info(n_workers=-1)["workers"].values()}
    assert {t.worker for t in study.trials} <= names
    assert len(workers) == 4
    assert all(t.host for t in study.trials)


def test_a_free_slot_waits_for_a_model_point_a_fifth_of_a_typical_trial_at_most(client):
    """Pruned trials of ~0.1 s end dozens a second: a slot that waited the suggestion
    process's full second for a point would idle ten trials' time."""
    study = Study({"x": Real(0.0, 1.0)}, random_state=0, n_initial_points=4)
    study.optimize(objectives.nap, 12, client=client, progress=False)  # 0.2-s trials
    assert 0.04 <= study._process.patience < 0.1
