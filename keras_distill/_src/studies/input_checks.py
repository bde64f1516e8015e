"""Checks of what the recipes, sweeps and comparisons are given, raised before any training.

Each check names the argument, what was received and what to pass instead, so
that a mistake fails at once with the library's message rather than later with
a foreign exception from inside Keras or NumPy.
"""

from __future__ import annotations

import keras
import numpy as np

from keras_distill._src.studies.datasets import Split


def positive_int(name: str, value) -> int:
    """`value` if it is a positive integer, else a `ValueError` naming `name`.

    Example:
    >>> positive_int("epochs", 3)
    3
    >>> positive_int("epochs", "3")
    Traceback (most recent call last):
    ...
    ValueError: `epochs` must be a positive integer; received '3' (str).
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(
            f"`{name}` must be a positive integer; received {value!r} ({type(value).__name__})."
        )
    return int(value)


def checked_split(data, *, needs_test: bool = True) -> Split:
    """`data` as a `Split`, after checking its parts: refuses what training would trip on.

    Args:
        data: A `kd.datasets.Split` (or any object with
            `x_train`, `y_train`, `x_test` and `y_test`).
        needs_test: Whether the test split is used (it must then hold examples).

    Returns:
        The same arrays as a `Split`.

    Raises:
        TypeError: If `data` is not a split (e.g. a tuple `(x, y)`).
        ValueError: If a part is empty, the lengths differ, or the labels are
            not integer classes (one-hot, for example).

    Example:
    >>> x, y = np.zeros((4, 2)), np.array([0, 1, 0, 1])
    >>> checked_split(Split(x, y, x, y)).x_test.shape
    (4, 2)
    >>> checked_split((x, y))
    Traceback (most recent call last):
    ...
    TypeError: `data` must be a ...Split(...); received a tuple of 2 items. ...
    """
    fields = ("x_train", "y_train", "x_test", "y_test")
    if not all(hasattr(data, field) for field in fields):
        what = f"a tuple of {len(data)} items" if isinstance(data, tuple) else type(data).__name__
        raise TypeError(
            "`data` must be a kd.datasets.Split(x_train, y_train, x_test, "
            f"y_test); received {what}. Build one with Split(x_train, y_train, x_test, y_test)."
        )
    split = Split(*(getattr(data, field) for field in fields))
    _check_part(split.x_train, split.y_train, "training")
    if needs_test:
        _check_part(split.x_test, split.y_test, "test")
    return split


def _check_part(x, y, part: str) -> None:
    if x is None or len(x) == 0:
        raise ValueError(
            f"The {part} split is empty: `x_{part[:5]}` holds no examples. A recipe trains on "
            "the training split and reports accuracy on the test split; give both examples."
        )
    labels = y["labels"] if isinstance(y, dict) else y
    check_labels(x, labels, f"y_{part[:5]}")


def check_labels(x, y, name: str = "y") -> None:
    """Refuses labels that are not one integer class per example of `x`.

    Args:
        x: The inputs.
        y: Their labels: shape `(n,)` or `(n, 1)`.
        name: The argument's name in the message.

    Raises:
        ValueError: If `y` is missing, has another length than `x`, or is
            one-hot (or any other per-class array).

    Example:
    >>> check_labels(np.zeros((2, 3)), np.eye(2), "y_train")
    Traceback (most recent call last):
    ...
    ValueError: `y_train` must hold one integer class per example, ... (one-hot labels?). ...
    """
    if y is None:
        raise ValueError(f"`{name}` is missing: give one integer class per example.")
    shape = np.shape(y)
    if len(shape) > 1 and int(np.prod(shape[1:])) > 1:
        raise ValueError(
            f"`{name}` must hold one integer class per example, shape ({len(x)},); received "
            f"shape {shape} (one-hot labels?). Pass np.argmax({name}, axis=-1)."
        )
    if len(y) != len(x):
        raise ValueError(
            f"`{name}` has {len(y)} labels but its inputs have {len(x)} examples; give one "
            "label per example."
        )


def check_builder(value, name: str, builds: str) -> None:
    """Refuses a model or layer where a callable building a fresh one is expected.

    Args:
        value: What was passed.
        name: The argument's name.
        builds: What the callable returns, for the message.

    Raises:
        TypeError: If `value` is a Keras layer or model, or not callable.

    Example:
    >>> check_builder(keras.layers.Dense(2), "make_student", "a new student")
    Traceback (most recent call last):
    ...
    TypeError: `make_student` must be a callable that returns a new student ...
    """
    if isinstance(value, keras.layers.Layer) or not callable(value):
        received = (
            f"the {type(value).__name__} object {value.name!r}"
            if isinstance(value, keras.layers.Layer)
            else repr(value)
        )
        raise TypeError(
            f"`{name}` must be a callable that returns {builds} on every call (e.g. `lambda: "
            f"build_model()`); received {received}. Wrap it in a function that builds a fresh one."
        )
