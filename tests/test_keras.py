"""dtune.keras with real TensorFlow (CPU) on a local GPU-pinned cluster of two workers,
on scikit-learn's bundled digits (no download)."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from distributed import Client

from dtune import (
    ASHA,
    Categorical,
    Integer,
    LocalGPUCluster,
    Real,
    Study,
    TrialState,
    retrain_best,
)
from dtune.execution import Outcome, run_trial
from dtune.keras import KerasObjective, load_digits_data, load_model
from dtune.reporting import ReportTo
from tests import TF_START_UP_LINES, objectives

SPACE = {
    "learning_rate": Real(1e-4, 3e-2, prior="log-uniform"),
    "keep_prob": Real(0.5, 1.0),
    "channels": Integer(3, 5),
    "pool": Categorical(["max", "avg"]),
}


@pytest.fixture(scope="module")
def gpu_client():
    with (
        LocalGPUCluster(gpus=[0, 1], dashboard_address=":0") as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield client


def _digits_objective(tmp_path: Path, epochs: int, patience: int) -> KerasObjective:
    return KerasObjective(
        objectives.build_digits_cnn,
        load_digits_data,
        monitor="val_accuracy",
        epochs=epochs,
        patience=patience,
        artifacts=tmp_path / "models",
    )


def _study(objective: KerasObjective, tmp_path: Path, **options: object) -> Study:
    return Study(
        SPACE,
        storage=tmp_path / "s.db",
        objective_key=objective.objective_key,
        direction=objective.direction,
        **options,
    )


@pytest.mark.slow
def test_a_keras_search_reports_metrics_and_saves_models_that_reload(gpu_client, tmp_path):
    objective = _digits_objective(tmp_path, epochs=15, patience=3)
    assert (objective.objective_key, objective.direction) == ("val_accuracy", "maximize")
    study = _study(objective, tmp_path, random_state=0, n_initial_points=6)
    study.optimize(objective, 8, client=gpu_client, progress=False)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 8
    assert {t.device for t in study.trials} == {"0", "1"}
    for t in study.trials:
        assert {"val_accuracy", "val_loss", "accuracy", "loss", "best_epoch", "epochs"} <= set(
            t.metrics
        )
        assert 1 <= t.metrics["best_epoch"] <= t.metrics["epochs"] <= 15
    assert study.best_value >= 0.9

    # the best model reloads and scores what the search recorded
    _, _, x_val, y_val = load_digits_data()
    model = load_model(study.best_trial)
    accuracy = float(np.mean(model.predict(x_val, verbose=0).argmax(axis=1) == y_val))
    assert accuracy == pytest.approx(study.best_value, abs=1e-6)

    # search, then train the best two longer, in parallel, on the same cluster
    final = retrain_best(
        study, objective.with_settings(epochs=30, patience=5), 2, client=gpu_client
    )
    assert [r.trial.number for r in final] == [t.number for t in study.top(2)]
    for r in final:
        assert r.error is None
        assert r.value >= 0.9
        assert r.metrics["model_path"] != r.trial.metrics["model_path"]
        assert r.metrics["model_path"].endswith(".keras")


@pytest.mark.slow
def test_a_keras_search_with_asha_prunes_and_pruned_trials_keep_their_best_model(
    gpu_client, tmp_path
):
    objective = _digits_objective(tmp_path, epochs=9, patience=9)
    study = _study(objective, tmp_path, random_state=3, n_initial_points=10, pruner=ASHA(1, 9, 3))
    study.optimize(objective, 10, client=gpu_client, progress=False)
    states = {t.state for t in study.trials}
    assert states <= {TrialState.COMPLETE, TrialState.PRUNED}
    pruned = [t for t in study.trials if t.state is TrialState.PRUNED]
    assert pruned, "ASHA pruned no trial; change the seed"
    _, _, x_val, y_val = load_digits_data()
    for t in study.trials:
        # every epoch reported, with Keras's other metrics
        assert list(t.intermediate) == list(range(1, t.last_step + 1))
        assert {"val_loss", "accuracy", "loss"} <= set(t.reports[0].metrics)
    for t in pruned:
        assert t.last_step in (1, 3)
        assert t.value == t.intermediate[t.last_step]
        # its best model so far was saved, and scores what it reported at its best epoch
        model = load_model(t)
        accuracy = float(np.mean(model.predict(x_val, verbose=0).argmax(axis=1) == y_val))
        assert accuracy == pytest.approx(t.intermediate[t.metrics["best_epoch"]], abs=1e-6)


@pytest.mark.slow
def test_paused_keras_trials_go_on_from_the_epoch_they_paused_at(gpu_client, tmp_path):
    """resume=True with a promotion-type ASHA: a paused trial keeps its checkpoint with
    the epoch it paused at, and a promoted one trains on from the next epoch."""
    objective = KerasObjective(
        objectives.build_dense, load_digits_data, monitor="val_loss", epochs=9, patience=9,
        artifacts=tmp_path / "models", resume=True,
    )  # fmt: skip
    study = Study(
        {"learning_rate": Real(1e-3, 1e-1, prior="log-uniform"), "units": Integer(4, 32)},
        name="keras",
        objective_key="val_loss",
        random_state=0,
        n_initial_points=9,
        pruner=ASHA(1, 9, 3, variant="promotion"),
    )
    # Nine trials, so that one completes whatever order they report in: at the end the
    # top ⌊9/3⌋ at epoch 1 have been promoted, and of the 3 or more at epoch 3 the best.
    # (With eight, only the order of reports could lift a third trial to epoch 3.)
    study.optimize(objective, 9, client=gpu_client, progress=False)
    states = {t.state for t in study.trials}
    assert states == {TrialState.COMPLETE, TrialState.PAUSED}, states
    for t in study.trials:
        assert list(t.intermediate) == list(range(1, t.last_step + 1))  # each epoch once
        if t.state is TrialState.COMPLETE:
            # the history of every run: 9 epochs, the best of them picked
            assert t.metrics["epochs"] == 9
            assert t.earlier_s > 0
            assert t.value == pytest.approx(min(t.intermediate.values()), rel=1e-6)
    checkpoints = tmp_path / "models" / "checkpoints"
    paused = {f"keras-{t.number}.npz" for t in study.trials if t.state is TrialState.PAUSED}
    assert {p.name for p in checkpoints.iterdir()} == paused


@pytest.mark.slow
def test_a_keras_trial_whose_worker_dies_goes_on_from_its_checkpoint(gpu_client, tmp_path):
    """With resume=True, a trial whose worker dies before its 4th epoch runs again (Dask
    reruns its task on a live worker) from its 4th epoch, with the optimizer's state of
    the 3rd: it reports each epoch once and ends where a run never stopped ends."""
    settings = {"monitor": "val_loss", "epochs": 6, "patience": 6, "resume": True}
    settings["fit_kwargs"] = {"shuffle": False}
    dies = functools.partial(objectives.worker_dies_once, str(tmp_path / "died"), 4)
    stopped = KerasObjective(
        objectives.build_dense, load_digits_data, artifacts=tmp_path / "a", callbacks=dies,
        **settings,
    )  # fmt: skip
    steady = KerasObjective(
        objectives.build_dense, load_digits_data, artifacts=tmp_path / "b", **settings
    )
    heard: list[tuple[int, int]] = []
    topic = "test-keras-resume"
    gpu_client.subscribe_topic(
        topic, lambda event: heard.append((event[1]["number"], event[1]["step"]))
    )

    def run(objective: KerasObjective, number: int) -> Outcome:
        to = ReportTo(topic, number, wait=False, study="s")
        params = {"learning_rate": 0.01, "units": 16}
        done = gpu_client.submit(run_trial, objective, params, "val_loss", report_to=to, pure=False)
        return done.result(timeout=300)

    resumed, reference = run(stopped, 0), run(steady, 1)
    gpu_client.wait_for_workers(2, timeout=120)
    assert (tmp_path / "died").exists()
    assert (resumed.error, reference.error) == (None, None)
    assert resumed.value == pytest.approx(reference.value, rel=1e-4)
    for key in ("epochs", "best_epoch"):
        assert resumed.metrics[key] == reference.metrics[key]
    deadline = time.monotonic() + 10
    while len(heard) < 12 and time.monotonic() < deadline:
        time.sleep(0.05)
    gpu_client.unsubscribe_topic(topic)
    assert sorted(heard) == [(n, step) for n in (0, 1) for step in range(1, 7)]  # each once
    assert not os.listdir(tmp_path / "a" / "checkpoints")  # gone with the trial


def test_keras_objective_arguments_are_checked():
    with pytest.raises(ValueError, match="epochs=0"):
        KerasObjective(objectives.build_digits_cnn, load_digits_data, epochs=0)
    with pytest.raises(ValueError, match="resume=True needs an artifacts folder"):
        KerasObjective(objectives.build_digits_cnn, load_digits_data, artifacts=None, resume=True)
    assert KerasObjective(objectives.build_digits_cnn, load_digits_data).direction == "minimize"
    failed = Study(SPACE).ask()
    with pytest.raises(ValueError, match="has no saved model"):
        load_model(failed)


def test_the_driver_never_imports_tensorflow(tmp_path):
    script = textwrap.dedent(
        """
        import sys
        from distributed import Client, LocalCluster
        from dtune import Study
        from dtune.keras import KerasObjective, load_digits_data
        from tests import objectives
        from tests.test_keras import SPACE

        if __name__ == "__main__":
            objective = KerasObjective(objectives.build_digits_cnn, load_digits_data,
                                       monitor="val_accuracy", epochs=2, artifacts=None)
            with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as c, \\
                    Client(c) as client:
                study = Study(SPACE, objective_key="val_accuracy", direction="maximize")
                study.optimize(objective, 2, client=client, progress=False)
                assert all(t.value is not None for t in study.trials), study.trials
            print("tensorflow" in sys.modules, "keras" in sys.modules)
        """
    )
    path = tmp_path / "driver.py"
    path.write_text(script)
    root = str(Path(__file__).parent.parent)
    result = subprocess.run(
        [sys.executable, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": root},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "False False"
    # The worker loaded TensorFlow without its C++ start-up lines (TF_CPP_MIN_LOG_LEVEL=2)
    for noise in TF_START_UP_LINES:
        assert noise not in result.stderr, result.stderr[-3000:]


@pytest.mark.parametrize("level", [None, "0"])
def test_import_tensorflow_keeps_its_start_up_lines_off_unless_the_user_asks(level):
    """The public loader for objectives of one's own: TF_CPP_MIN_LOG_LEVEL=2 unless set,
    and TensorFlow's own start-up lines gone; a level the user set is left alone."""
    code = (
        "import os\n"
        "from dtune.keras import import_tensorflow\n"
        "tf = import_tensorflow()\n"
        "print(tf.__name__, tf.constant(2).numpy() * 3, os.environ['TF_CPP_MIN_LOG_LEVEL'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["tensorflow", "6", level or "2"]
    # TensorFlow's start-up lines as it loads: absl's warning that it is not set up yet,
    # the oneDNN notice on CPU
    start_up = [line for line in ("absl::InitializeLog", "oneDNN") if line in result.stderr]
    assert bool(start_up) is (level == "0"), result.stderr[-3000:]


@pytest.mark.parametrize(
    ("level", "shown"),
    [
        ("2", ["E0000 00:00:1.5 2 a.cc:3] an error", "a plain line", "Traceback: kept"]),
        ("0", None),  # the user asked for every line: nothing is taken out
    ],
)
def test_tensorflows_start_up_lines_below_the_log_level_are_dropped_and_the_rest_kept(level, shown):
    """Written to the process's standard error itself, as TensorFlow's C++ does."""
    lines = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1.5 1 port.cc:153] oneDNN custom operations are on.",
        "W0000 00:00:1.5 1 a.cc:2] a warning",
        "E0000 00:00:1.5 2 a.cc:3] an error",
        "a plain line",
        "Traceback: kept",
    ]
    written = "".join(line + "\n" for line in lines).encode()
    code = textwrap.dedent(
        f"""
        import os, sys
        from dtune.keras import _below_the_log_level_dropped
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = {level!r}
        print("before", file=sys.stderr, flush=True)
        with _below_the_log_level_dropped():
            os.write(2, {written!r})
        print("after", file=sys.stderr, flush=True)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stderr.splitlines() == ["before", *(lines if shown is None else shown), "after"]
