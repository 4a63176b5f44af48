"""The Study API without a cluster: manual ask/tell, results, views, stores, resume."""

from __future__ import annotations

import matplotlib
import pytest

import dtune
from dtune import Categorical, Integer, Real, Study, StudyNotFoundError, TrialState, load_study
from tests.conftest import n_told

matplotlib.use("Agg")

SPACE = {"x": Real(-3.0, 3.0), "n": Integer(1, 8), "act": Categorical(["relu", "tanh"])}


def _value(params):
    return (params["x"] - 1.0) ** 2 + (params["n"] - 4) ** 2 * 0.1 + (params["act"] == "relu")


def _run_manually(study, n):
    for _ in range(n):
        trial = study.ask()
        study.tell(trial, {"loss": _value(trial.params), "acc": 0.5})


def test_manual_ask_tell_records_metrics_and_finds_the_best(tmp_path):
    study = Study(
        SPACE,
        storage=tmp_path / "s.db",
        objective_key="loss",
        random_state=0,
        acq_optimizer_kwargs={"n_points": 1000},
    )
    _run_manually(study, 15)
    assert len(study.trials) == 15
    assert all(t.state is TrialState.COMPLETE for t in study.trials)
    best = study.best_trial
    assert best.value == min(t.value for t in study.trials)
    assert study.best_params == best.params
    assert best.metrics == {"loss": best.value, "acc": 0.5}
    assert [t.value for t in study.top(3)] == sorted(t.value for t in study.trials)[:3]


def test_maximize_ranks_the_largest_first():
    study = Study({"x": Real(0.0, 1.0)}, direction="maximize", random_state=0)
    for v in (0.2, 0.9, 0.5):
        study.tell(study.ask(), v)
    assert study.best_value == 0.9
    assert [t.value for t in study.top(2)] == [0.9, 0.5]
    # skopt minimizes: its view holds the negated values
    assert study.as_skopt_result().fun == -0.9


def test_tell_rejects_bad_values_and_keeps_the_trial_running():
    study = Study(SPACE, random_state=0)
    trial = study.ask()
    with pytest.raises(ValueError, match="nan"):
        study.tell(trial, float("nan"))
    assert study.trials[0].state is TrialState.RUNNING
    failed = study.tell(trial, None, error="CUDA out of memory")
    assert failed.state is TrialState.FAILED
    assert failed.error == "CUDA out of memory"
    with pytest.raises(ValueError, match="already FAILED"):
        study.tell(trial, 1.0)


def test_ask_accounts_for_running_trials():
    study = Study(SPACE, objective_key="loss", random_state=0, n_initial_points=3)
    _run_manually(study, 3)
    running = [study.ask() for _ in range(4)]
    assert len({tuple(t.params.values()) for t in running}) == 4


def test_results_views_dataframe_and_skopt_plots(tmp_path):
    from skopt.plots import plot_convergence, plot_objective

    study = Study(
        SPACE,
        objective_key="loss",
        random_state=1,
        n_initial_points=4,
        acq_optimizer_kwargs={"n_points": 500},
    )
    _run_manually(study, 8)
    study.tell(study.ask(), None, error="boom")
    frame = study.trials_dataframe()
    assert list(frame["number"]) == list(range(9))
    assert {
        "params_x",
        "params_n",
        "params_act",
        "metrics_loss",
        "worker",
        "device",
        "duration",
        "error",
    } <= set(frame.columns)
    assert frame["state"].tolist().count("FAILED") == 1
    result = study.as_skopt_result()
    assert len(result.func_vals) == 8  # the failed trial is not a number to skopt
    assert plot_convergence(result) is not None
    assert plot_objective(result, n_points=5) is not None


def test_a_store_is_resumed_with_the_same_optimizer_state(tmp_path):
    path = tmp_path / "s.db"
    study = Study(SPACE, name="a", storage=path, objective_key="loss", random_state=3)
    _run_manually(study, 5)
    running = study.ask()

    again = load_study(path, name="a")
    assert [t.params for t in again.trials] == [t.params for t in study.trials]
    assert again.objective_key == "loss"
    assert n_told(again) == 5
    # left RUNNING by a driver that died: optimize runs it again first (tests/test_driver.py)
    assert again.trials[-1].number == running.number
    assert again.trials[-1].state is TrialState.RUNNING
    nxt = again.ask()
    assert nxt.number == 6


def test_load_study_errors_name_what_exists(tmp_path):
    path = tmp_path / "s.db"
    Study(SPACE, name="one", storage=path)
    Study(SPACE, name="two", storage=path)
    with pytest.raises(StudyNotFoundError, match=r"no study named 'three'.*\['one', 'two'\]"):
        load_study(path, name="three")
    with pytest.raises(ValueError, match="holds 2 studies"):
        load_study(path)
    with pytest.raises(FileNotFoundError, match="no dtune store"):
        load_study(tmp_path / "missing.db")


def test_reopening_a_study_with_a_changed_space_is_refused(tmp_path):
    path = tmp_path / "s.db"
    Study(SPACE, name="a", storage=path)
    changed = dict(SPACE, x=Real(-5.0, 5.0))
    with pytest.raises(ValueError, match="different space"):
        Study(changed, name="a", storage=path)
    with pytest.raises(ValueError, match="direction='minimize', not 'maximize'"):
        Study(SPACE, name="a", storage=path, direction="maximize")


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"direction": "down"}, ValueError, "direction='down'"),
        ({"name": ""}, ValueError, "name=''"),
        ({"objective_key": 3}, TypeError, "objective_key=3"),
        ({"n_initial_pts": 3}, TypeError, "n_initial_pts"),
    ],
)
def test_bad_study_arguments(kwargs, error, needle):
    with pytest.raises(error, match=needle):
        Study(SPACE, **kwargs)


def test_public_names():
    assert {"Study", "load_study", "Real", "Integer", "Categorical", "TrialState"} <= set(
        dtune.__all__
    )
