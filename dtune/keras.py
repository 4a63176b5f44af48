"""Keras objectives for dtune: from "build a compiled model" + "load the data" to a
function a Study can optimize.

TensorFlow is imported only when a trial runs, on the worker; importing this module
does not import it. Each trial, on a long-lived worker process:

- turns on GPU memory growth (once per process, before TensorFlow touches a GPU), so a
  trial takes the memory it needs rather than all of it for the life of the worker;
- clears the Keras session, so models, layer names and graphs of earlier trials go;
- builds the model under ``tf.distribute.MirroredStrategy`` when the worker sees more
  than one GPU (``dtune worker --gpus-per-worker N``), plainly otherwise;
- fits with ``EarlyStopping`` (best weights restored) and any callbacks you add;
- reports the monitored metric every epoch (:func:`dtune.report`, the epoch as the
  step), so a study with a pruner can stop it early: ``epochs`` is the full resource
  (``ASHA(1, epochs)``), and a pruned trial still saves its best model so far;
- saves the best model as ``.keras`` in the artifacts folder and reports its path;
- returns the monitored metric at the best epoch, the other metrics of that epoch, the
  best epoch and the epochs run.

Examples
--------
>>> def build(units, learning_rate):                     # doctest: +SKIP
...     model = keras.Sequential([...])
...     model.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy",
...                   metrics=["accuracy"])
...     return model
>>> objective = KerasObjective(build, load_digits_data, monitor="val_accuracy")  # doctest: +SKIP
>>> study = Study(space, objective_key=objective.objective_key,                  # doctest: +SKIP
...               direction=objective.direction)
>>> study.optimize(objective, n_trials=50)                                        # doctest: +SKIP
>>> model = load_model(study.best_trial)                                          # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from dtune.exceptions import TrialPruned
from dtune.jsonable import jsonable
from dtune.reporting import report

if TYPE_CHECKING:
    from dtune.trial import Trial

__all__ = ["KerasObjective", "load_digits_data", "load_model"]

Data = tuple[Any, Any, Any, Any]
_DATA: dict[tuple[str, str], Data] = {}  # per worker process: data loaded once
_configured = False


def _tensorflow() -> Any:
    # TensorFlow's C++ start-up lines (oneDNN, CUDA probing) on every worker, unless the
    # user asked for them by setting the level themselves.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise ImportError(
            "dtune.keras needs TensorFlow on the workers: pip install 'dtune[tf]'"
        ) from exc
    return tf


def _configure_gpus(tf: Any) -> None:
    """Memory growth on every visible GPU, once per process (TensorFlow refuses it after
    a GPU has been initialised, so it must come before the first model)."""
    global _configured
    if _configured:
        return
    for gpu in tf.config.list_physical_devices("GPU"):
        # RuntimeError: already initialised by the user's own code
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)
    _configured = True


def _load(load_data: Callable[[], Data]) -> Data:
    key = (getattr(load_data, "__module__", ""), getattr(load_data, "__qualname__", ""))
    if key not in _DATA:
        data = load_data()
        if not isinstance(data, Sequence) or len(data) != 4:
            raise TypeError(
                f"load_data() returned {type(data).__name__}; expected "
                "(x_train, y_train, x_val, y_val)"
            )
        _DATA[key] = (data[0], data[1], data[2], data[3])
    return _DATA[key]


@dataclass(frozen=True)
class KerasObjective:
    """A dtune objective that builds, fits and scores a Keras model.

    Parameters
    ----------
    build_model
        ``build_model(**params)`` returns a compiled ``keras.Model``.
    load_data
        ``load_data()`` returns ``(x_train, y_train, x_val, y_val)``; called once per
        worker process and cached. Use data that ships with a package or is generated
        (e.g. :func:`load_digits_data`), or files every worker can read.
    monitor
        The metric to optimize and to stop early on (``"val_loss"``,
        ``"val_accuracy"``, …).
    epochs, batch_size, patience
        Fit settings; ``patience`` epochs without improvement stop a trial.
    callbacks
        A function returning extra Keras callbacks for each trial (a function, because
        callbacks hold state and must be fresh per trial).
    fit_kwargs
        Anything else for ``model.fit``.
    artifacts
        The folder for each trial's best model (made absolute where this object is
        created; workers on other machines need it on a shared file system). None: do not
        save models.
    """

    build_model: Callable[..., Any]
    load_data: Callable[[], Data]
    monitor: str = "val_loss"
    epochs: int = 20
    batch_size: int = 32
    patience: int = 3
    callbacks: Callable[[], Sequence[Any]] | None = None
    fit_kwargs: Mapping[str, Any] = field(default_factory=dict)
    artifacts: str | None = "dtune-artifacts"

    def __post_init__(self) -> None:
        if not callable(self.build_model) or not callable(self.load_data):
            raise TypeError("build_model and load_data must be callables")
        for name in ("epochs", "batch_size", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive int")
        if self.artifacts is not None:
            object.__setattr__(self, "artifacts", os.path.abspath(self.artifacts))

    @property
    def objective_key(self) -> str:
        """The Study's ``objective_key``: the monitored metric."""
        return self.monitor

    @property
    def direction(self) -> str:
        """The Study's ``direction`` for the monitored metric: losses and errors are
        minimized, anything else (accuracy, AUC, …) maximized."""
        lowered = self.monitor.lower()
        minimize = any(word in lowered for word in ("loss", "error", "mse", "mae", "crossentropy"))
        return "minimize" if minimize else "maximize"

    def with_settings(self, **changes: Any) -> KerasObjective:
        """A copy with other fit settings, e.g. ``epochs=100`` to retrain the best."""
        return replace(self, **changes)

    def model_path(self, params: Mapping[str, Any]) -> str | None:
        """Where the best model of a trial with ``params`` is saved."""
        if self.artifacts is None:
            return None
        digest = hashlib.sha1(
            json.dumps({**params, "_epochs": self.epochs}, sort_keys=True).encode()
        ).hexdigest()[:16]
        return os.path.join(self.artifacts, f"model-{digest}.keras")

    def __call__(self, **params: Any) -> dict[str, Any]:
        tf = _tensorflow()
        _configure_gpus(tf)
        keras = tf.keras
        keras.backend.clear_session()
        x_train, y_train, x_val, y_val = _load(self.load_data)
        if len(tf.config.list_logical_devices("GPU")) > 1:
            with tf.distribute.MirroredStrategy().scope():
                model = self.build_model(**params)
        else:
            model = self.build_model(**params)
        mode = "min" if self.direction == "minimize" else "max"
        stop = keras.callbacks.EarlyStopping(
            monitor=self.monitor, mode=mode, patience=self.patience, restore_best_weights=True
        )
        extra = list(self.callbacks()) if self.callbacks is not None else []
        path = self.model_path(params)
        reporter = _reporter(keras, self.monitor, mode, keep_best=path is not None)
        try:
            history = model.fit(
                x_train,
                y_train,
                validation_data=(x_val, y_val),
                epochs=self.epochs,
                batch_size=self.batch_size,
                callbacks=[stop, reporter, *extra],
                verbose=0,
                **self.fit_kwargs,
            ).history
        except TrialPruned:
            # Stopped by the study's pruner (the trial ends PRUNED whatever it returns):
            # keep the best model so far all the same, and say where it is.
            pruned: dict[str, Any] = {
                self.monitor: reporter.best,
                "best_epoch": reporter.best_epoch,
                "epochs": reporter.epochs,
            }
            if path is not None and reporter.best_weights is not None:
                model.set_weights(reporter.best_weights)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                model.save(path)
                pruned["model_path"] = path
            keras.backend.clear_session()
            return pruned
        if self.monitor not in history:
            raise KeyError(
                f"monitor={self.monitor!r} is not among the metrics Keras logged: {sorted(history)}"
            )
        series = history[self.monitor]
        pick = min if mode == "min" else max
        best = series.index(pick(series))
        result: dict[str, Any] = {k: jsonable(v[best]) for k, v in history.items()}
        result.update(best_epoch=best + 1, epochs=len(series))
        if path is not None:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            model.save(path)
            result["model_path"] = path
        keras.backend.clear_session()
        return result


def _reporter(keras: Any, monitor: str, mode: str, keep_best: bool) -> Any:
    """A Keras callback that reports ``monitor`` every epoch (:func:`dtune.report`, the
    epoch as the step) and keeps the best weights so far, for a pruned trial to save."""

    class Reporter(keras.callbacks.Callback):
        best: float | None = None
        best_epoch = epochs = 0
        best_weights: Any = None

        def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
            logs = dict(logs or {})
            if monitor not in logs:
                return
            value = float(logs.pop(monitor))
            self.epochs = epoch + 1
            if self.best is None or (value < self.best if mode == "min" else value > self.best):
                self.best, self.best_epoch = value, epoch + 1
                if keep_best:
                    self.best_weights = self.model.get_weights()
            report(value, epoch + 1, **{k: jsonable(v) for k, v in logs.items()})

    return Reporter()


def load_model(trial: Trial) -> Any:
    """The best model a :class:`KerasObjective` saved for ``trial``.

    Raises
    ------
    ValueError
        When the trial has no saved model (it failed, or models were not saved).
    """
    path = trial.metrics.get("model_path")
    if not path:
        raise ValueError(
            f"trial {trial.number} ({trial.state.value}) has no saved model; it needs a "
            "KerasObjective with an artifacts folder"
        )
    if not os.path.exists(path):
        raise FileNotFoundError(f"trial {trial.number}'s model {path!r} is missing")
    return _tensorflow().keras.models.load_model(path)


def load_digits_data(validation: float = 0.25, seed: int = 0) -> Data:
    """scikit-learn's bundled 8×8 digits as images for a small CNN (no download):
    ``(x_train, y_train, x_val, y_val)`` with ``x`` of shape ``(n, 8, 8, 1)`` in [0, 1].

    Examples
    --------
    >>> x_train, y_train, x_val, y_val = load_digits_data()
    >>> x_train.shape, x_val.shape
    ((1347, 8, 8, 1), (450, 8, 8, 1))
    """
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., np.newaxis]
    x_train, x_val, y_train, y_val = train_test_split(
        x, digits.target, test_size=validation, random_state=seed, stratify=digits.target
    )
    return x_train, y_train, x_val, y_val
