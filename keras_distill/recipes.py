"""The library's recommended training recipes for classifiers, as plain functions.

`train_from_scratch` and `train_distilled` train a Keras classifier (integer
labels, logits out) and return its test accuracy. `sweep`,
`teacher_assistant_chain`, the demo and the quality and defaults benchmarks
train through them, so their comparisons use the same optimizer, schedule and
data handling.
"""

from __future__ import annotations

import keras

from keras_distill.callbacks import TemperatureScheduler
from keras_distill.datasets import Split
from keras_distill.distiller import Distiller
from keras_distill.schedules import Linear

# Chosen by benchmarks/defaults_benchmark.py (5 seeds, smallest students of digits and
# MNIST-1D): T = 1 with alpha = 0.5 was the only setting tried that was not worse
# than scratch with all labels (+0.0 and +0.3 points) while beating it most with
# 10% labels and a transfer set (+7.6 and +20.7 points). Annealing from T = 2 cost
# 0.5-2.5 points with all labels; the keras.io settings (T = 10, alpha = 0.1) up to 10.
# `train_distilled` anneals linearly from `temperature` to `final_temperature`; with
# these defaults both are 1, so nothing is annealed unless a caller asks for it.
RECOMMENDED_TEMPERATURE = 1.0
RECOMMENDED_FINAL_TEMPERATURE = 1.0
RECOMMENDED_ALPHA = 0.5


# The train/test arrays the recipes take (one type with `datasets.Split`).
Data = Split


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _fit(model, data: Data, epochs: int, batch_size: int, verbose: int, callbacks=()):
    model.fit(
        data.x_train,
        data.y_train,
        epochs=epochs,
        batch_size=batch_size,
        verbose=verbose,
        callbacks=list(callbacks),
        validation_data=(data.x_test, data.y_test) if verbose else None,
    )
    return float(model.evaluate(data.x_test, data.y_test, return_dict=True, verbose=0)["accuracy"])


def train_from_scratch(
    model: keras.Model,
    data: Data,
    *,
    epochs: int,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    verbose: int = 0,
) -> float:
    """Trains a classifier on the labels alone (Adam, sparse cross-entropy).

    Args:
        model: An uncompiled Keras classifier that outputs logits.
        data: A `Data` (or `keras_distill.datasets.Split`).
        epochs: Training epochs.
        batch_size: Batch size.
        learning_rate: Adam learning rate.
        verbose: Keras `fit` verbosity; with verbose > 0 the test set is shown
            as validation data.

    Returns:
        Test accuracy.

    Example:
    >>> import numpy as np
    >>> x, y = np.random.rand(32, 4), np.arange(32) % 2
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> 0.0 <= train_from_scratch(model, Data(x, y, x, y), epochs=1) <= 1.0
    True
    """
    model.compile(keras.optimizers.Adam(learning_rate), _loss(), metrics=["accuracy"])
    return _fit(model, data, epochs, batch_size, verbose)


def train_distilled(
    teacher: keras.Model,
    student: keras.Model,
    data: Data,
    *,
    epochs: int,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    temperature: float = RECOMMENDED_TEMPERATURE,
    final_temperature: float = RECOMMENDED_FINAL_TEMPERATURE,
    alpha: float = RECOMMENDED_ALPHA,
    verbose: int = 0,
) -> float:
    """Distils a classifier with the recommended recipe (or a linear annealing of T).

    Args:
        teacher: A trained Keras classifier.
        student: An uncompiled Keras classifier that outputs logits.
        data: A `Data` (or `keras_distill.datasets.Split`).
        epochs: Training epochs.
        batch_size: Batch size.
        learning_rate: Adam learning rate.
        temperature: Temperature at the first epoch.
        final_temperature: Temperature at the last epoch (linear in between).
        alpha: Weight of the hard-label loss.
        verbose: Keras `fit` verbosity.

    Returns:
        The student's test accuracy.

    Example:
    >>> import numpy as np
    >>> x, y = np.random.rand(32, 4), np.arange(32) % 2
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> 0.0 <= train_distilled(teacher, student, Data(x, y, x, y), epochs=2) <= 1.0
    True
    """
    distiller = Distiller(teacher, student, temperature=temperature, alpha=alpha)
    distiller.compile(keras.optimizers.Adam(learning_rate), _loss(), metrics=["accuracy"])
    annealing = TemperatureScheduler(Linear(temperature, final_temperature, max(epochs - 1, 1)))
    return _fit(distiller, data, epochs, batch_size, verbose, callbacks=[annealing])
