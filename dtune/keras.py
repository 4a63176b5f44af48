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
- with ``resume=True``, saves a checkpoint after every epoch, so that a trial that runs
  again after its driver or its worker died, or that a promotion-type ASHA paused and
  then promoted (``ASHA(1, epochs, variant="promotion")``), goes on from its last epoch;
- returns the monitored metric at the best epoch, the other metrics of that epoch, the
  best epoch and the epochs run.

An objective of your own can load TensorFlow with :func:`import_tensorflow`, without
its C++ start-up lines on every worker, as these trials do.

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
import importlib
import json
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from dtune.exceptions import TrialAbandoned, TrialPaused, TrialPruned
from dtune.jsonable import jsonable
from dtune.reporting import TrialContext, checkpoint_file, current_trial, report

if TYPE_CHECKING:
    from dtune.trial import Trial

__all__ = ["KerasObjective", "import_tensorflow", "load_digits_data", "load_model"]

Data = tuple[Any, Any, Any, Any]
_DATA: dict[tuple[str, str], Data] = {}  # per worker process: data loaded once
_configured = False
_CHECKPOINT = ".npz"  # a resumable trial's checkpoint: artifacts/checkpoints/{key}.npz


def import_tensorflow() -> Any:
    """TensorFlow, imported as dtune's Keras trials import it, for an objective that
    builds its own models: without its C++ start-up lines (oneDNN, CUDA probing) on
    every worker. ``TF_CPP_MIN_LOG_LEVEL`` is set to 2 unless you set it yourself, and
    the lines below that level that TensorFlow logs before absl reads it are dropped."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        # One thread redirects standard error while TensorFlow loads; the others wait
        # here, then find it loaded (two redirects at once could leave it redirected).
        with _LOADING:
            if "tensorflow" not in sys.modules:
                with _below_the_log_level_dropped():
                    importlib.import_module("tensorflow")
        import tensorflow as tf  # as loaded (or, if another import is under way, once done)
    except ImportError as exc:
        raise ImportError(
            "dtune.keras needs TensorFlow on the workers: pip install 'dtune[tf]'"
        ) from exc
    return tf


_LOADING = threading.Lock()
# A C++ log line of absl's: its severity (I, W, E or F), then MMDD and the time.
_ABSL_LINE = re.compile(rb"^([IWEF])\d{4} ")
_ABSL_PRE_INIT = b"WARNING: All log messages before absl::InitializeLog() is called"


@contextlib.contextmanager
def _below_the_log_level_dropped() -> Iterator[None]:
    """Standard error through a file while TensorFlow loads, then written back without
    its C++ lines below ``TF_CPP_MIN_LOG_LEVEL``. TensorFlow 2.20 and later log the
    oneDNN notice before absl's logging reads that level, with absl's warning that it
    was not set up yet, so the level alone no longer keeps them off every worker's
    output. Everything else written meanwhile (errors, other threads' logs) is kept."""
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0")
    dropped = "IWEF"[: int(level)] if level in ("1", "2", "3") else ""
    if not dropped:
        yield
        return
    sys.stderr.flush()
    with tempfile.TemporaryFile() as capture:
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:  # written back even if loading failed
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.readlines() if not _below(line, dropped)]
            if kept:
                os.write(2, b"".join(kept))


def _below(line: bytes, dropped: str) -> bool:
    """Whether ``line`` is absl's warning that it is not set up yet, or an absl line
    whose severity is one of ``dropped``."""
    match = _ABSL_LINE.match(line)
    return line.startswith(_ABSL_PRE_INIT) or bool(match and match.group(1).decode() in dropped)


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
    resume
        Save a checkpoint after every epoch (the weights, the optimizer's state and the
        fit's progress, in ``artifacts/checkpoints``, under the trial's study and number:
        :func:`dtune.current_trial`), so that a trial that runs again after its driver
        or its worker died, or promoted after a pause (a promotion-type ASHA), goes on
        from its last epoch instead of the first, with the reports of its earlier epochs
        kept. The checkpoint goes when the trial ends, and stays while it is paused.
        Outside a search (``retrain_best``, a call by hand) it makes none. Default
        False: each epoch writes the model's size four times over with Adam (the
        weights, two moments and the best epoch's weights; measured in
        docs/PERFORMANCE.md, "Checkpoints").
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
    resume: bool = False

    def __post_init__(self) -> None:
        if not callable(self.build_model) or not callable(self.load_data):
            raise TypeError("build_model and load_data must be callables")
        for name in ("epochs", "batch_size", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive int")
        if self.resume and self.artifacts is None:
            raise ValueError("resume=True needs an artifacts folder for its checkpoints")
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

    def checkpoint_path(self, trial: TrialContext) -> str:
        """Where ``trial``'s checkpoint is kept while it runs (``resume=True``)."""
        if self.artifacts is None:
            raise ValueError("no checkpoints without an artifacts folder")
        return os.path.join(self._checkpoints(), f"{trial.key}{_CHECKPOINT}")

    def _checkpoints(self) -> str:
        assert self.artifacts is not None
        return os.path.join(self.artifacts, "checkpoints")

    def __call__(self, **params: Any) -> dict[str, Any]:
        if not self.resume or current_trial() is None:
            return self._train(params, None)
        # Kept only when the trial was abandoned: it runs again when its study resumes.
        with checkpoint_file(self._checkpoints(), _CHECKPOINT) as path:
            return self._train(params, _Checkpoint(str(path)))

    def _train(self, params: dict[str, Any], checkpoint: _Checkpoint | None) -> dict[str, Any]:
        tf = import_tensorflow()
        _configure_gpus(tf)
        keras = tf.keras
        keras.backend.clear_session()
        x_train, y_train, x_val, y_val = _load(self.load_data)
        saved = None if checkpoint is None else checkpoint.load()
        several = len(tf.config.list_logical_devices("GPU")) > 1
        with tf.distribute.MirroredStrategy().scope() if several else contextlib.nullcontext():
            model = self.build_model(**params)
            if saved is not None:
                saved.restore(model)
        mode = "min" if self.direction == "minimize" else "max"
        stop = keras.callbacks.EarlyStopping(
            monitor=self.monitor, mode=mode, patience=self.patience, restore_best_weights=True
        )
        extra = list(self.callbacks()) if self.callbacks is not None else []
        path = self.model_path(params)
        reporter = _reporter(keras, self.monitor, mode, keep_best=path is not None)
        ours = [stop, reporter]
        if checkpoint is not None:
            saver = checkpoint.callback(keras, stop, reporter, saved)
            reporter.on_pause = saver.save_epoch  # paused: go on after this epoch
            ours.append(saver)
        try:
            history = model.fit(
                x_train,
                y_train,
                validation_data=(x_val, y_val),
                epochs=self.epochs,
                initial_epoch=0 if saved is None else saved.epochs,
                batch_size=self.batch_size,
                callbacks=[*ours, *extra],
                verbose=0,
                **self.fit_kwargs,
            ).history
        except TrialAbandoned:
            raise  # its driver is gone: no result to return
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
        if saved is not None:  # the epochs of its earlier runs first
            keys = dict.fromkeys([*saved.history, *history])
            history = {k: [*saved.history.get(k, []), *history.get(k, [])] for k in keys}
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


@dataclass(frozen=True)
class _Saved:
    """What a checkpoint holds: the epochs done, their logs, the weights and the
    optimizer's variables after the last, and the best epoch's weights and where the
    EarlyStopping and reporting callbacks stood."""

    epochs: int
    history: dict[str, list[float]]
    weights: list[Any]
    optimizer: list[Any]
    best_weights: list[Any] | None
    stop: dict[str, Any]
    reporter: dict[str, Any]

    def restore(self, model: Any) -> None:
        """Put the weights and the optimizer's state back into a newly built ``model``."""
        model.set_weights(self.weights)
        optimizer = model.optimizer
        optimizer.build(model.trainable_variables)
        if len(optimizer.variables) != len(self.optimizer):
            raise ValueError(
                f"the checkpoint holds {len(self.optimizer)} optimizer variables and the "
                f"model built for it {len(optimizer.variables)}: was build_model changed?"
            )
        for variable, value in zip(optimizer.variables, self.optimizer, strict=True):
            variable.assign(value)

    def put_back(self, stop: Any, reporter: Any) -> None:
        """Where the callbacks stood after the last epoch saved."""
        stop.wait, stop.best, stop.best_epoch = (self.stop[k] for k in ("wait", "best", "epoch"))
        stop.best_weights = reporter.best_weights = self.best_weights
        reporter.best, reporter.best_epoch = self.reporter["best"], self.reporter["epoch"]
        reporter.epochs = self.epochs


class _Checkpoint:
    """A running trial's checkpoint (``resume=True``): one ``.npz`` file, written anew
    after every epoch under a temporary name and then renamed over the last, so that a
    kill mid-write leaves the last whole one."""

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self) -> _Saved | None:
        """The saved progress; None if there is none (a first run)."""
        import numpy as np

        if not os.path.exists(self.path):
            return None
        with np.load(self.path, allow_pickle=False) as data:
            state = json.loads(str(data["state"]))
            arrays = {key: data[key] for key in data.files}

        def series(prefix: str) -> list[Any]:
            return [arrays[f"{prefix}{i}"] for i in range(state["counts"][prefix])]

        return _Saved(
            epochs=state["epochs"],
            history=state["history"],
            weights=series("w"),
            optimizer=series("o"),
            best_weights=series("b") if state["counts"]["b"] else None,
            stop=state["stop"],
            reporter=state["reporter"],
        )

    def save(
        self, model: Any, stop: Any, reporter: Any, epochs: int, history: dict[str, list[float]]
    ) -> None:
        import numpy as np

        groups = {
            "w": model.get_weights(),
            "o": [variable.numpy() for variable in model.optimizer.variables],
            "b": stop.best_weights or [],
        }
        arrays: dict[str, Any] = {
            f"{p}{i}": np.asarray(a) for p, values in groups.items() for i, a in enumerate(values)
        }
        state = {
            "epochs": epochs,
            "history": history,
            "counts": {prefix: len(values) for prefix, values in groups.items()},
            "stop": {"wait": stop.wait, "best": _plain(stop.best), "epoch": stop.best_epoch},
            "reporter": {"best": reporter.best, "epoch": reporter.best_epoch},
        }
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        temporary = f"{self.path}.{os.getpid()}.tmp"
        with open(temporary, "wb") as file:
            np.savez(file, state=np.array(json.dumps(state)), **arrays)
        os.replace(temporary, self.path)

    def callback(self, keras: Any, stop: Any, reporter: Any, saved: _Saved | None) -> Any:
        """A Keras callback, after ``stop`` and ``reporter``: it puts back where they
        stood when training begins, and saves a checkpoint after each epoch."""
        checkpoint = self
        history = {k: list(v) for k, v in saved.history.items()} if saved is not None else {}

        class Saver(keras.callbacks.Callback):
            def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
                if saved is not None:
                    saved.put_back(stop, reporter)

            def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
                self.save_epoch(self.model, epoch, logs)

            def save_epoch(self, model: Any, epoch: int, logs: Mapping[str, Any] | None) -> None:
                for key, value in (logs or {}).items():
                    history.setdefault(key, []).append(float(value))
                checkpoint.save(model, stop, reporter, epoch + 1, history)

        return Saver()


def _plain(value: Any) -> float | None:
    return None if value is None else float(value)


def _reporter(keras: Any, monitor: str, mode: str, keep_best: bool) -> Any:
    """A Keras callback that reports ``monitor`` every epoch (:func:`dtune.report`, the
    epoch as the step) and keeps the best weights so far, for a pruned trial to save.
    Paused (:class:`TrialPaused`), it calls ``on_pause(model, epoch, logs)`` first (the
    checkpoint's saver: a promoted trial goes on after the epoch it paused at)."""

    class Reporter(keras.callbacks.Callback):
        best: float | None = None
        best_epoch = epochs = 0
        best_weights: Any = None
        on_pause: Callable[[Any, int, Mapping[str, Any] | None], None] | None = None

        def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
            metrics = dict(logs or {})
            if monitor not in metrics:
                return
            value = float(metrics.pop(monitor))
            self.epochs = epoch + 1
            if self.best is None or (value < self.best if mode == "min" else value > self.best):
                self.best, self.best_epoch = value, epoch + 1
                if keep_best:
                    self.best_weights = self.model.get_weights()
            try:
                report(value, epoch + 1, **{k: jsonable(v) for k, v in metrics.items()})
            except TrialPaused:
                if self.on_pause is not None:
                    self.on_pause(self.model, epoch, logs)
                raise

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
    return import_tensorflow().keras.models.load_model(path)


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
