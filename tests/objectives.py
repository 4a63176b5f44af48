"""Objectives the driver tests send to real Dask workers (importable by them)."""

from __future__ import annotations

import math
import os
import time
from typing import Any


def branin(x1: float, x2: float) -> float:
    a, b, c = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi
    r, s, t = 6.0, 10.0, 1 / (8 * math.pi)
    return a * (x2 - b * x1**2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s


def quick_branin(x1: float, x2: float) -> float:
    time.sleep(0.05)
    return branin(x1, x2)


def timed_branin(x1: float, x2: float) -> float:
    """Branin taking 0.8–1.1 s: long enough for the driver's model to keep up on a
    loaded 2-core machine, as it does with real trials."""
    time.sleep(0.8 + 0.02 * (x1 + 5))
    return branin(x1, x2)


def first_is_slow(marker: str, x: float) -> float:
    """The first trial to run sleeps 4 s; the others 0.1 s."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        time.sleep(4.0)
    except FileExistsError:
        time.sleep(0.1)
    return (x - 0.3) ** 2


def sometimes_bad(x: float) -> object:
    """Fails in five different ways depending on where x falls."""
    time.sleep(0.05)
    kind = int(x)
    if kind == 0:
        raise RuntimeError(f"diverged at x={x}")
    if kind == 1:
        return None
    if kind == 2:
        return float("nan")
    if kind == 3:
        return "oops"
    if kind == 4:
        return {"accuracy": 0.5}
    return {"val_loss": (x - 7.5) ** 2, "accuracy": 0.9}


def sleepy_square(k: int) -> float:
    time.sleep(0.2)
    return float((k - 5) ** 2)


def device_nap(x: float) -> dict[str, object]:
    """Reports the CUDA_VISIBLE_DEVICES its worker process was started with."""
    time.sleep(0.3)
    return {"loss": (x - 0.5) ** 2, "seen": os.environ.get("CUDA_VISIBLE_DEVICES")}


def kills_its_worker(x: float) -> float:
    """SIGKILLs its own worker process below x=0.25, as a preemption or an OOM kill does."""
    if x < 0.25:
        os.kill(os.getpid(), 9)
    time.sleep(0.1)
    return (x - 0.6) ** 2


def hangs_below(x: float) -> dict[str, float]:
    """Hangs (for 60 s) below x=0.3; otherwise reports the process that ran it."""
    if x < 0.3:
        time.sleep(60)
    return {"loss": (x - 0.6) ** 2, "pid": os.getpid()}


def always_fails(x: float) -> float:
    raise RuntimeError(f"broken objective at x={x:.3f}")


def nap(x: float) -> float:
    time.sleep(0.2)
    return (x - 0.3) ** 2


def build_digits_cnn(learning_rate: float, keep_prob: float, channels: int, pool: str) -> object:
    """The classic search: a small CNN for the 8×8 digits (TensorFlow imported here, on
    the worker)."""
    import tensorflow as tf

    keras = tf.keras
    pooling = keras.layers.MaxPooling2D if pool == "max" else keras.layers.AveragePooling2D
    layers = [
        keras.layers.Conv2D(2**channels, 3, padding="same", activation="relu"),
        pooling(2),
        keras.layers.Flatten(),
        keras.layers.Dropout(1.0 - keep_prob),
    ]
    return _digits_classifier(keras, layers, learning_rate)


def build_dense(learning_rate: float, units: int) -> object:
    """A small dense network for the digits that trains the same way every time (seeded,
    no dropout): with ``shuffle=False``, two fits of it end alike."""
    import tensorflow as tf

    keras = tf.keras
    keras.utils.set_random_seed(0)
    layers = [keras.layers.Flatten(), keras.layers.Dense(units, activation="relu")]
    return _digits_classifier(keras, layers, learning_rate)


def _digits_classifier(keras: Any, layers: list[Any], learning_rate: float) -> object:
    """``layers`` between the 8×8 digits and a softmax over the 10 classes, compiled
    with Adam."""
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), *layers, keras.layers.Dense(10, activation="softmax")]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def worker_dies_once(marker: str, before_epoch: int) -> list[object]:
    """Keras callbacks that kill their worker process as epoch ``before_epoch`` begins,
    the first time only (``marker`` is left behind), as a lost machine would."""
    import tensorflow as tf

    class Dies(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: object = None) -> None:
            if epoch + 1 == before_epoch and not os.path.exists(marker):
                open(marker, "w").close()
                time.sleep(1.0)  # the epochs' reports leave first
                os._exit(1)

    return [Dies()]


def learning_curve(x: float, epochs: int = 9, nap: float = 0.03) -> float:
    """Reports a loss that falls with each epoch towards (x - 0.3)²: bad points are
    visibly bad after one epoch."""
    import dtune

    loss = math.inf
    for epoch in range(1, epochs + 1):
        time.sleep(nap)
        loss = (x - 0.3) ** 2 + 0.5 / epoch
        dtune.report(loss, epoch, lr=0.1)
    return loss


def slow_to_start(x: float, start: float = 0.5, epochs: int = 9, nap: float = 0.1) -> float:
    """:func:`learning_curve` after ``start`` seconds of start-up (building a model,
    loading data): ``start / nap`` epochs' worth."""
    time.sleep(start)
    return learning_curve(x, epochs, nap)


def reports_badly(x: float) -> float:
    """x < 0.3: reports NaN at step 2; x > 0.7: reports step 3 after step 5; else fine."""
    import dtune

    dtune.report(1.0, 1)
    if x < 0.3:
        dtune.report(float("nan"), 2)
    elif x > 0.7:
        dtune.report(0.5, 5)
        dtune.report(0.4, 3)
    return x


class CountsItsPickling:
    """A quadratic in ``x`` that counts, in the process that pickles it, how often it
    was pickled."""

    pickled = 0

    def __call__(self, x: float) -> float:
        return (x - 0.3) ** 2

    def __reduce__(self) -> tuple[type, tuple[()]]:
        type(self).pickled += 1
        return (CountsItsPickling, ())


def knows_its_trial(x: float) -> dict[str, Any]:
    """Returns the study and number it runs as (:func:`dtune.current_trial`)."""
    import dtune

    context = dtune.current_trial()
    assert context is not None, "not in a trial"
    return {"value": x, "study": context.study, "number": context.number}


def resumable_curve(x: float, folder: str, epochs: int = 9, nap: float = 0.1) -> dict[str, Any]:
    """:func:`learning_curve` with a checkpoint (:func:`dtune.checkpoint_file` in
    ``folder``): after each report it saves the epoch it reached, and when it runs again
    it goes on from the epoch saved. Told its search is gone, it leaves a mark."""
    import dtune

    assert dtune.current_trial() is not None, "not in a trial"
    with dtune.checkpoint_file(folder) as path:
        resumed = int(path.read_text()) if path.exists() else 0
        loss = math.inf
        for epoch in range(resumed + 1, epochs + 1):
            time.sleep(nap)
            loss = (x - 0.3) ** 2 + 0.5 / epoch
            try:
                dtune.report(loss, epoch)
            except dtune.TrialAbandoned:
                open(f"{path}-abandoned-at-{epoch}", "w").close()
                raise
            _save_epoch(path, epoch)
        return {"value": loss, "resumed_from": resumed}


def _save_epoch(path: Any, epoch: int) -> None:
    """Save ``epoch`` as a checkpoint at ``path``: to a temporary name, then renamed."""
    temporary = path.parent / f"{path.name}.tmp"
    temporary.write_text(str(epoch))
    temporary.replace(path)


def checkpoints_then_dies(x: float, folder: str, how: str) -> float:
    """Saves a checkpoint (:func:`dtune.checkpoint_file`), reports, then hangs
    (``how="hangs"``, for a ``trial_timeout`` to kill) or exits its process at once."""
    import dtune

    with dtune.checkpoint_file(folder, ".ckpt") as path:
        path.write_text("epoch 1")
        dtune.report(x, 1)
        if how == "hangs":
            time.sleep(60)
        os._exit(3)


def checkpoints_a_folder(x: float, folder: str, epochs: int = 9) -> dict[str, Any]:
    """A learning curve that keeps its checkpoint as a folder of files
    (:func:`dtune.checkpoint_file`); fails in its first epoch where x > 0.8."""
    import dtune

    with dtune.checkpoint_file(folder, ".ckpt") as path:
        loss = math.inf
        for epoch in range(1, epochs + 1):
            path.mkdir(exist_ok=True)
            (path / "weights").write_text(str(epoch))
            if x > 0.8:
                raise RuntimeError(f"x={x} fails at epoch {epoch}")
            loss = (x - 0.3) ** 2 + 0.5 / epoch
            time.sleep(0.02)
            dtune.report(loss, epoch)
        return {"value": loss, "path": str(path)}


def pausable_curve(x: float, folder: str, epochs: int = 9, nap: float = 0.02) -> dict[str, Any]:
    """:func:`resumable_curve` as a promotion-type ASHA wants it: paused at a rung
    (:class:`dtune.TrialPaused`), it saves the epoch it reached before it leaves, and
    goes on from the next one if promoted. Records the epoch each run started from."""
    import dtune

    with dtune.checkpoint_file(folder) as path:
        resumed = int(path.read_text()) if path.exists() else 0
        loss = math.inf
        for epoch in range(resumed + 1, epochs + 1):
            time.sleep(nap)
            loss = (x - 0.3) ** 2 + 0.5 / epoch
            try:
                dtune.report(loss, epoch)
            except dtune.TrialPaused:
                _save_epoch(path, epoch)
                raise
            _save_epoch(path, epoch)
        return {"value": loss, "resumed_from": resumed}
