"""Reading data given as `x`, `(x, y)` or a dataset of them, as `fit` accepts it."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def unpack(element) -> tuple[np.ndarray, np.ndarray | None]:
    """`(x, y or None)` as NumPy arrays from `x`, `(x,)`, `(x, y)` or `(x, y, weights)`.

    Example:
    >>> x, y = unpack((np.zeros((2, 3)), np.ones(2)))
    >>> x.shape, y.shape
    ((2, 3), (2,))
    """
    if isinstance(element, (tuple, list)):
        x = np.asarray(element[0])
        y = np.asarray(element[1]) if len(element) > 1 and element[1] is not None else None
        return x, y
    return np.asarray(element), None


def collect(
    data, example_rank: int | None = None, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """`(x, y or None)` arrays from arrays, an `(x, y)` tuple, or an iterable of elements.

    Args:
        data: An array `x`, a tuple `(x, y)`, or an iterable (e.g. a
            `tf.data.Dataset`) of batched or single elements `x` or `(x, y)`.
        example_rank: The rank of one example without the batch axis; elements
            of that rank get one. By default elements are taken as batches.
        limit: Stop after this many examples.

    Returns:
        The inputs and the labels (None if there are none), concatenated.

    Example:
    >>> elements = [(np.zeros(3), 1), (np.ones(3), 0)]
    >>> x, y = collect(elements, example_rank=1)
    >>> x.shape, y.tolist()
    ((2, 3), [1, 0])
    """
    if isinstance(data, (np.ndarray, tuple)):
        x, y = unpack(data)
        return (x, y) if limit is None else (x[:limit], None if y is None else y[:limit])
    xs, ys, count = [], [], 0
    for element in _iterate(data):
        x, y = unpack(element)
        if example_rank is not None and x.ndim == example_rank:
            x, y = x[None], None if y is None else y.reshape(1, *y.shape)
        xs.append(x)
        if y is not None:
            ys.append(y)
        count += len(x)
        if limit is not None and count >= limit:
            break
    if not xs:
        return np.zeros((0,)), None
    x = np.concatenate(xs)
    y = np.concatenate(ys) if ys else None
    return (x, y) if limit is None else (x[:limit], None if y is None else y[:limit])


def _iterate(data) -> Iterable:
    as_numpy = getattr(data, "as_numpy_iterator", None)
    return as_numpy() if as_numpy is not None else data
