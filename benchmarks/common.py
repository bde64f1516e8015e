"""What the benchmark scripts share: their models, their command line and their reports.

Each script keeps only what it measures. Its report starts with `provenance()`, the command that
made it and the machine and versions it ran on, so that a figure can be traced and rerun.
"""

import argparse
import os
import pathlib
import platform
import shlex
import subprocess
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import keras_distill
from keras_distill._src.studies.datasets import Split

ROOT = pathlib.Path(__file__).resolve().parents[1]
QUICK_HELP = "a short run (fewer seeds, epochs or examples) that checks the script works"


def mlp(
    inputs: int,
    hidden: list[int],
    seed: int = 0,
    *,
    dropout: float = 0.0,
    prefix: str | None = None,
    outputs: int = 10,
) -> keras.Sequential:
    """An `inputs`-`hidden`-`outputs` ReLU MLP, its weights drawn after seeding Keras with `seed`.

    A `Dropout(dropout)` follows each hidden layer when `dropout` > 0. With a `prefix`, the Dense
    layers are named `{prefix}_0`, `{prefix}_1`, ... and `{prefix}_logits` (for feature terms).
    """
    keras.utils.set_random_seed(seed)

    def name(suffix):
        return None if prefix is None else f"{prefix}_{suffix}"

    layers = [keras.Input((inputs,))]
    for i, units in enumerate(hidden):
        layers.append(keras.layers.Dense(units, activation="relu", name=name(i)))
        if dropout:
            layers.append(keras.layers.Dropout(dropout))
    return keras.Sequential(layers + [keras.layers.Dense(outputs, name=name("logits"))])


def digits_cnn(filters: int, dense: int, seed: int = 0) -> keras.Sequential:
    """A CNN for 8x8x1 digits: two 3x3 convolutions (`filters`, 2 x `filters`), `dense`, 10."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(filters, 3, activation="relu", padding="same"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(2 * filters, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(dense, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def label_scarce(data: Split, seed: int, fraction: float = 0.1) -> tuple[Split, Split]:
    """The label-scarce protocol: (labelled subset tiled to the full set's size, transfer set).

    The subset is repeated 1 / fraction times, so that its scratch baseline takes as
    many gradient steps per epoch as the students trained on the full set. The transfer set is
    the whole training set, its labels masked (`label_mask` 0) outside the subset.
    """
    labeled = np.random.default_rng(seed).random(len(data.y_train)) < fraction
    repeats = int(round(1 / fraction))
    x_few = np.tile(data.x_train[labeled], (repeats, 1))
    few = Split(x_few, np.tile(data.y_train[labeled], repeats), data.x_test, data.y_test)
    transfer = Split(
        data.x_train,
        {"labels": np.where(labeled, data.y_train, 0), "label_mask": labeled.astype("float32")},
        data.x_test,
        data.y_test,
    )
    return few, transfer


def parser(
    doc: str, out: str | None, quick: str | None = QUICK_HELP, out_help: str = "the report (.md)"
) -> argparse.ArgumentParser:
    """The command line every script starts from: `--quick` (unless `quick` is None) and `--out`.

    `doc` is the script's docstring (its first line describes the script); `out` the default
    report path. A script adds its own arguments to the parser it gets.
    """
    result = argparse.ArgumentParser(description=doc.splitlines()[0])
    if quick is not None:
        result.add_argument("--quick", action="store_true", help=quick)
    result.add_argument("--out", default=out, help=out_help)
    return result


def command() -> str:
    """The command line this process was started with, as it can be typed again from the root."""
    script = pathlib.Path(sys.argv[0]).resolve()
    shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    return shlex.join(["python", str(shown), *sys.argv[1:]])


def commit() -> str:
    """The checkout's short commit hash, or "unknown" outside a git checkout."""
    try:
        found = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    return found.stdout.strip() if found.returncode == 0 else "unknown"


def provenance() -> str:
    """The report's first sentences: the command, the commit, the machine and the versions."""
    return (
        f"Command: `{command()}` (commit {commit()}). Machine: {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, TensorFlow "
        f"{tf.__version__}, Keras {keras.__version__}, keras-distill {keras_distill.__version__}."
    )


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
