"""What ``KerasObjective(resume=True)`` costs: a checkpoint after every epoch.

Runs the same Keras trials on the digits (TensorFlow on CPU) with ``resume=False`` and
``resume=True``, alternately, for each model size. The trials run in this process under
dtune's simulated cluster, which runs each objective under its trial
(:func:`dtune.current_trial`), so the checkpoints are made as on a worker. Reports each
setting's median wall time per trial, the checkpoint's size and the cost of one save.

    python scripts/bench_checkpoint.py [--trials 5] [--epochs 27] [--units 16,1024]

``--units`` sizes the model: a dense network on the 8×8 digits with two hidden layers of
that many units (16: 1.4k parameters; 1024: 1.1M, a 4.4 MB model).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time
from typing import Any

import dtune
from dtune.keras import KerasObjective, load_digits_data
from dtune.sim import SimulatedCluster


def build(units: int) -> Any:
    import tensorflow as tf

    keras = tf.keras
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(units, activation="relu"),
            keras.layers.Dense(units, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def sizes(objective: KerasObjective, seen: list[int]) -> list[Any]:
    """A callback that records the checkpoint's size after each epoch (it runs after
    the objective's own, which writes it)."""
    import tensorflow as tf

    trial = dtune.current_trial()

    class Size(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if objective.resume and trial is not None:
                seen.append(os.path.getsize(objective.checkpoint_path(trial)))

    return [Size()]


def one_trial(objective: KerasObjective, units: int) -> float:
    """Wall seconds of one trial of ``objective``."""
    study = dtune.Study({"units": dtune.Categorical([units])}, objective_key="val_loss")
    started = time.perf_counter()
    study.optimize(objective, 1, client=SimulatedCluster(1), progress=False, dashboard=False)
    seconds = time.perf_counter() - started
    (trial,) = study.trials
    if trial.state is not dtune.TrialState.COMPLETE:
        raise RuntimeError(f"the trial did not complete: {trial.error}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=27)
    parser.add_argument("--units", default="16,1024")
    args = parser.parse_args()
    print(
        "| units | parameters | resume=False, s per trial | resume=True | ratio "
        "| checkpoint MB | ms per save |"
    )
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for units in (int(u) for u in args.units.split(",")):
            seen: list[int] = []
            made = {
                resume: KerasObjective(
                    build,
                    load_digits_data,
                    epochs=args.epochs,
                    patience=args.epochs,
                    artifacts=folder,
                    resume=resume,
                )
                for resume in (False, True)
            }
            made = {
                resume: o.with_settings(callbacks=functools.partial(sizes, o, seen))
                for resume, o in made.items()
            }
            one_trial(made[False], units)  # TensorFlow's start-up and the data, once
            times: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(args.trials):
                for resume in (False, True):
                    times[resume].append(one_trial(made[resume], units))
            plain, resumed = (statistics.median(times[r]) for r in (False, True))
            params = build(units).count_params()
            per_save = 1000 * (resumed - plain) / args.epochs
            print(
                f"| {units} | {params:,} | {plain:.2f} | {resumed:.2f} | {resumed / plain:.2f} "
                f"| {statistics.median(seen) / 1e6:.3f} | {per_save:.1f} |"
            )


if __name__ == "__main__":
    main()
