"""The real workload of scripts/bench_multifidelity.py: a small Keras CNN on
scikit-learn's bundled digits (no download), TensorFlow on CPU, one thread per worker.
A module of its own so that Dask and Ray workers import it by name and keep the data
loaded between trials."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

KERAS = "keras-digits"


def keras_space() -> dict[str, Any]:
    """02_keras_digits's space, with the dense layer's width."""
    import dtune

    return {
        "learning_rate": dtune.Real(1e-4, 3e-2, prior="log-uniform"),
        "keep_prob": dtune.Real(0.5, 1.0),
        "channels": dtune.Integer(2, 5),  # 2**channels filters
        "units": dtune.Integer(8, 128, prior="log-uniform"),
        "pool": dtune.Categorical(["max", "avg"]),
    }


_data: list[Any] = []


def digits() -> Any:
    """The digits, split (loaded once per process)."""
    if _data:
        return _data[0]
    from dtune.keras import import_tensorflow

    tf = import_tensorflow()  # without its C++ start-up lines in the bench's log

    # 8 workers share 2 cores: one thread each, set before TensorFlow runs anything.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from dtune.keras import load_digits_data

    _data.append(load_digits_data())
    return _data[0]


def warm() -> None:
    """Import TensorFlow and load the data now (each method then starts alike)."""
    digits()


def mark_epoch(checkpoint: Path, epoch: int) -> None:
    """Record in folder ``checkpoint`` that a trial's checkpoint holds ``epoch``."""
    checkpoint.mkdir(exist_ok=True)
    (checkpoint / "epoch").write_text(str(epoch))


def keras_epochs(
    params: dict[str, Any],
    epochs: int,
    start: int = 0,
    checkpoint: Path | None = None,
    save_at: tuple[float, ...] = (),
) -> Any:
    """The validation error (1 - accuracy) after each epoch of the CNN at ``params``.
    With a ``checkpoint`` folder, the model (with its optimizer's state) is saved there
    after the epochs in ``save_at``; from ``start`` > 0 it is loaded from there."""
    digits()  # first: it sets TensorFlow's threads, which must precede its start
    import tensorflow as tf

    keras = tf.keras
    keras.backend.clear_session()
    if start > 0:
        assert checkpoint is not None
        yield from _fit(keras.models.load_model(checkpoint / "model.keras"), start, epochs,
                        checkpoint, save_at)  # fmt: skip
        return
    keras.utils.set_random_seed(_seed(params))
    layers = keras.layers
    pooling = layers.MaxPooling2D if params["pool"] == "max" else layers.AveragePooling2D
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(2 ** params["channels"], 3, padding="same", activation="relu"),
            pooling(2),
            keras.layers.Flatten(),
            keras.layers.Dense(params["units"], activation="relu"),
            keras.layers.Dropout(1.0 - params["keep_prob"]),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        keras.optimizers.Adam(params["learning_rate"]),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    yield from _fit(model, 0, epochs, checkpoint, save_at)


def _fit(
    model: Any, start: int, epochs: int, checkpoint: Path | None, save_at: tuple[float, ...]
) -> Any:
    """:func:`keras_epochs`'s epochs after ``start``."""
    x_train, y_train, x_val, y_val = digits()
    for epoch in range(start + 1, epochs + 1):
        model.fit(x_train, y_train, batch_size=64, epochs=1, verbose=0)
        _, accuracy = model.evaluate(x_val, y_val, batch_size=450, verbose=0)
        if checkpoint is not None and epoch in save_at:
            checkpoint.mkdir(exist_ok=True)
            model.save(checkpoint / "model.keras")
            mark_epoch(checkpoint, epoch)  # after the model: the checkpoint is whole
        yield 1.0 - float(accuracy)


def _seed(params: dict[str, Any]) -> int:
    """The same weight initialization for the same parameters, whichever method asks."""
    text = repr(sorted(params.items()))
    return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16)
