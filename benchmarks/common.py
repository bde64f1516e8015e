"""Helpers shared by the benchmark scripts."""

import pathlib
import time

import keras
import numpy as np


def write_report(lines: list[str], path: str) -> None:
    """Writes the Markdown lines to `path` (creating its folder) and prints them."""
    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def mean_std(values, scale: float = 100.0) -> str:
    """`"mean ± std"` of accuracies, as percentages by default (one decimal)."""
    return f"{scale * np.mean(values):.1f} ± {scale * np.std(values):.1f}"


class EpochTimer(keras.callbacks.Callback):
    """Records the seconds of each epoch of a `fit` (teacher passes before it excluded)."""

    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)
