"""A real training, offline: scikit-learn's MLPClassifier on its bundled digits
data (`load_digits`, 1,797 8x8 images, shipped with scikit-learn: nothing is
downloaded), one `partial_fit` pass over the training split per epoch, the
validation accuracy after each. Shared by the Guild op (train.py) and the plain
Optuna script (benchmarks/optuna_side_by_side.py), so both train alike.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

VAL_FRACTION = 0.3
DATA_SEED = 0
"""The split is the same in every trial: only the model's seed varies."""


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and validation splits of the digits, scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = digits.data / 16.0, digits.target
    order = np.random.default_rng(DATA_SEED).permutation(len(x))
    cut = int(len(x) * (1 - VAL_FRACTION))
    train, val = order[:cut], order[cut:]
    return x[train], y[train], x[val], y[val]


def train(
    lr: float,
    hidden: int,
    alpha: float,
    epochs: int,
    seed: int,
    report: Callable[[int, float], bool],
    data=None,
) -> float:
    """Trains for `epochs`, calling `report(epoch, val_acc)` after each (0
    based); stops early when it returns True. Returns the last accuracy."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x_train, y_train, x_val, y_val = data or load_split()
    model = MLPClassifier(
        hidden_layer_sizes=(hidden,),
        learning_rate_init=lr,
        alpha=alpha,
        batch_size=8,
        random_state=seed,
    )
    classes = np.arange(10)
    rng = np.random.default_rng(seed)
    acc = 0.0
    for epoch in range(epochs):
        order = rng.permutation(len(x_train))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.partial_fit(x_train[order], y_train[order], classes=classes)
        acc = float(model.score(x_val, y_val))
        if report(epoch, acc):
            break
    return acc
