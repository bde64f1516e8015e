"""The arguments of labelling's entry points, checked for type and range where they enter.

`label_with_teacher`, `label_responses` and `load_teacher_labels` check what
they are given before anything is read or written, naming the argument, the
value received and what was expected; where Keras gives an argument a meaning
(`fit(shuffle=True)`), it means the same here.
"""

from __future__ import annotations

import numbers

SHUFFLE_BUFFER = 10_000  # load_teacher_labels(shuffle=True): records in the shuffle buffer


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(name: str, value, allow_none: bool = False) -> int | None:
    """`value` as an `int` >= 1 (or None if allowed); else a `ValueError` naming it."""
    if value is None and allow_none:
        return None
    if not _is_int(value) or value < 1:
        expected = "an integer >= 1" + (" or None" if allow_none else "")
        raise ValueError(f"`{name}` must be {expected}; received {value!r}.")
    return int(value)


def optional_int(name: str, value) -> int | None:
    """`value` as an `int` (any sign) or None; else a `ValueError` naming it."""
    if value is not None and not _is_int(value):
        raise ValueError(f"`{name}` must be an integer or None; received {value!r}.")
    return None if value is None else int(value)


def flag(name: str, value) -> bool:
    """`value` if it is a bool (or a NumPy bool); else a `ValueError` naming it."""
    if not (isinstance(value, bool) or type(value).__name__ == "bool_"):
        raise ValueError(f"`{name}` must be True or False; received {value!r}.")
    return bool(value)


def shuffle_buffer(shuffle, num_examples: int) -> int:
    """The shuffle buffer of `load_teacher_labels(shuffle=...)`: 0 for none.

    As in Keras' `fit`, `shuffle=True` shuffles (with a buffer of
    `SHUFFLE_BUFFER` records, or all of them if fewer) and False or None
    keeps the stored order; an integer >= 1 is the buffer size.

    Raises:
        ValueError: For anything else (a string, a float, a number < 1).
    """
    if shuffle is None or shuffle is False:
        return 0
    if shuffle is True:
        return min(SHUFFLE_BUFFER, num_examples)
    if not _is_int(shuffle) or shuffle < 1:
        raise ValueError(
            "`shuffle` must be True (a buffer of "
            f"{SHUFFLE_BUFFER:,} records), False or None (the stored order), or a buffer size "
            f">= 1; received {shuffle!r}."
        )
    return int(shuffle)


def optional_index(name: str, value) -> int | None:
    """`value` as an `int` >= 0, or None; else a `ValueError` naming it."""
    if value is not None and (not _is_int(value) or value < 0):
        raise ValueError(f"`{name}` must be an integer >= 0 or None; received {value!r}.")
    return None if value is None else int(value)
