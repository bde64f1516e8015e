"""Small real data sets that work offline, for the demo, tutorials and tests."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Split(NamedTuple):
    """A train/test split of a classification data set.

    Example:
    >>> split = Split(np.zeros((2, 3)), np.zeros(2), np.ones((1, 3)), np.ones(1))
    >>> split.x_test.shape
    (1, 3)
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> Split:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes).

    The pixels are scaled to [0, 1] and flattened to 64 float32 features; the
    split is stratified, so every class keeps its share in both parts. No
    network is used: the data ships inside the scikit-learn wheel.

    Args:
        test_fraction: Share of the examples held out for testing, in (0, 1).
        seed: Seed of the split.

    Returns:
        A `Split` with `x` of shape `(n, 64)` and integer labels `y`.

    Raises:
        ValueError: If `test_fraction` is not in (0, 1).
        ImportError: If scikit-learn is not installed.

    Example:
    >>> split = load_digits()
    >>> split.x_train.shape, split.x_test.shape
    ((1347, 64), (450, 64))
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"`test_fraction` must be in (0, 1); received {test_fraction!r}.")
    try:
        from sklearn import datasets, model_selection
    except ImportError as error:
        raise ImportError(
            "The digits data set comes with scikit-learn: pip install 'keras-distill[examples]'."
        ) from error
    digits = datasets.load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int32")
    x_train, x_test, y_train, y_test = model_selection.train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return Split(x_train, y_train, x_test, y_test)
