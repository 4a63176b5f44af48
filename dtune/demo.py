"""The demo search: a small neural network (scikit-learn's ``MLPClassifier``) on the
8×8 digits that ship with scikit-learn, so it runs anywhere without downloads."""

from __future__ import annotations

import warnings
from typing import Any

from dtune.space import Categorical, Integer, Real

__all__ = ["DIGITS_SPACE", "digits_objective"]

DIGITS_SPACE = {
    "hidden_units": Integer(16, 256, prior="log-uniform"),
    "alpha": Real(1e-6, 1e-1, prior="log-uniform"),
    "learning_rate_init": Real(1e-4, 1e-1, prior="log-uniform"),
    "activation": Categorical(["relu", "tanh", "logistic"]),
}


def digits_objective(
    hidden_units: int, alpha: float, learning_rate_init: float, activation: str
) -> dict[str, Any]:
    """Train an MLP on 75 % of the digits; report validation log-loss and accuracy."""
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, log_loss
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    X, y = load_digits(return_X_y=True)
    X_train, X_val, y_train, y_val = train_test_split(
        X / 16.0, y, test_size=0.25, random_state=0, stratify=y
    )
    model = MLPClassifier(
        hidden_layer_sizes=(hidden_units,),
        alpha=alpha,
        learning_rate_init=learning_rate_init,
        activation=activation,
        max_iter=40,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X_train, y_train)
    proba = model.predict_proba(X_val)
    return {
        "val_loss": float(log_loss(y_val, proba, labels=model.classes_)),
        "val_accuracy": float(accuracy_score(y_val, proba.argmax(axis=1))),
        "epochs": int(model.n_iter_),
    }
