"""Example data that works offline: digits, MNIST-1D (generated), and an addition task."""

from keras_distill._src.studies.datasets import (
    ADDITION_END,
    ADDITION_TOKENS,
    Split,
    addition_text,
    load_digits,
    load_mnist1d,
    make_addition,
)

__all__ = [
    "ADDITION_END",
    "ADDITION_TOKENS",
    "Split",
    "addition_text",
    "load_digits",
    "load_mnist1d",
    "make_addition",
]
