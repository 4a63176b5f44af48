"""What ``KerasObjective(resume=True)`` costs: a checkpoint after every epoch.

Runs the same Keras trials on the digits (TensorFlow on CPU) with ``resume=False`` and
``resume=True``, alternately, for each model size. The trials run in this process under
dtune's simulated cluster, which runs each objective under its trial
(:func:`dtune.current_trial`), so the checkpoints are made as on a worker. Reports each
setting's median epoch (training, validation and dtune's callbacks, the checkpoint's
write among them), their difference, and the checkpoint's size.

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


def probe(objective: KerasObjective, epochs: list[float], sizes: list[int]) -> list[Any]:
    """A callback that records each epoch's seconds, from its start to the end of the
    objective's own callbacks (which write the checkpoint), and the checkpoint's size."""
    import tensorflow as tf

    trial = dtune.current_trial()

    class Probe(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.began = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            epochs.append(time.perf_counter() - self.began)
            if objective.resume and trial is not None:
                sizes.append(os.path.getsize(objective.checkpoint_path(trial)))

    return [Probe()]


def one_trial(objective: KerasObjective, units: int) -> None:
    study = dtune.Study({"units": dtune.Categorical([units])}, objective_key="val_loss")
    study.optimize(objective, 1, client=SimulatedCluster(1), progress=False, dashboard=False)
    (trial,) = study.trials
    if trial.state is not dtune.TrialState.COMPLETE:
        raise RuntimeError(f"the trial did not complete: {trial.error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=27)
    parser.add_argument("--units", default="16,1024")
    args = parser.parse_args()
    print(
        "| units | parameters | epoch s, resume=False | resume=True | ratio "
        "| ms per checkpoint | checkpoint MB |"
    )
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for units in (int(u) for u in args.units.split(",")):
            epochs: dict[bool, list[float]] = {False: [], True: []}
            sizes: list[int] = []
            made = {}
            for resume in (False, True):
                objective = KerasObjective(
                    build,
                    load_digits_data,
                    epochs=args.epochs,
                    patience=args.epochs,
                    artifacts=folder,
                    resume=resume,
                )
                callbacks = functools.partial(probe, objective, epochs[resume], sizes)
                made[resume] = objective.with_settings(callbacks=callbacks)
            one_trial(made[False], units)  # TensorFlow's start-up and the data, once
            epochs[False].clear()
            for _ in range(args.trials):
                for resume in (False, True):
                    one_trial(made[resume], units)
            plain, resumed = (statistics.median(epochs[r]) for r in (False, True))
            params = build(units).count_params()
            print(
                f"| {units} | {params:,} | {plain:.4f} | {resumed:.4f} | {resumed / plain:.3f} "
                f"| {1000 * (resumed - plain):.1f} | {statistics.median(sizes) / 1e6:.3f} |"
            )


if __name__ == "__main__":
    main()
