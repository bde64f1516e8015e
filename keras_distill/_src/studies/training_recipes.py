"""Training a classifier alone, distilled, or by function matching, with shared settings.

`TrainingSettings` (epochs, batch, Adam learning rate and schedule,
augmentation, verbosity, callbacks) is what every recipe trains with;
`DistillationSettings` (temperature, its annealing, alpha, the loss) is what a
distilled run adds. The recipes take their fields as keyword arguments and
pass them on whole, so that no recipe re-declares another's parameter list.
A scratch baseline given the same `augment` as a distilled student trains on
the same augmented views (mixup and cutmix then mix its one-hot labels), so
augmentation is never credited to distillation.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from keras_distill._src.studies import input_checks
from keras_distill._src.studies.datasets import Split
from keras_distill._src.training.augment import default_augmentation, with_mixed_labels
from keras_distill._src.training.callbacks import TemperatureScheduler
from keras_distill._src.training.distiller import Distiller
from keras_distill._src.training.schedules import Linear
from keras_distill._src.utils import model_inspection

# Chosen by benchmarks/defaults_benchmark.py (5 seeds, smallest students of digits and
# MNIST-1D): T = 1 with alpha = 0.5 was the only setting tried that was not worse
# than scratch with all labels (+0.0 and +0.3 points) while beating it most with
# 10% labels and a transfer set (+7.6 and +20.7 points). Annealing from T = 2 cost
# 0.5-2.5 points with all labels; the keras.io settings (T = 10, alpha = 0.1) up to 10.
# `train_distilled` anneals linearly from `temperature` to `final_temperature`; with
# these defaults both are 1, so nothing is annealed unless a caller asks for it.
RECOMMENDED_TEMPERATURE = 1.0
RECOMMENDED_ALPHA = 0.5

# Function matching (Beyer et al. 2022), chosen by benchmarks/quality_benchmark.py: the
# teacher on the student's augmented view (shift, noise, input mixup), pure KL at T = 1
# (alpha = 0), Adam with cosine decay over a long schedule. See the README for the numbers.
FUNCTION_MATCHING_TEMPERATURE = 1.0
FUNCTION_MATCHING_ALPHA = 0.0
FUNCTION_MATCHING_BATCH_SIZE = 128
FUNCTION_MATCHING_LEARNING_RATE = 3e-3
FUNCTION_MATCHING_SETTINGS = {
    "temperature": FUNCTION_MATCHING_TEMPERATURE,
    "alpha": FUNCTION_MATCHING_ALPHA,
    "batch_size": FUNCTION_MATCHING_BATCH_SIZE,
    "learning_rate": FUNCTION_MATCHING_LEARNING_RATE,
    "schedule": "cosine",
}
SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """How a recipe trains: Adam with a constant or cosine schedule, on (augmented) batches.

    Attributes:
        epochs: Training epochs (a positive integer).
        batch_size: Batch size.
        learning_rate: Adam (peak) learning rate.
        schedule: `"constant"` learning rate, or `"cosine"` decay to 0 over the run.
        augment: Optional augmentation (a layer, `keras.Sequential` or callable
            `fn(x, training)`), applied to every training batch.
        verbose: Keras `fit` verbosity; with verbose > 0 the test accuracy is
            printed at the end.
        callbacks: Extra Keras callbacks for `fit` (e.g. a
            `keras.callbacks.EarlyStopping`).

    Example:
    >>> TrainingSettings(epochs=3).batch_size
    32
    >>> TrainingSettings(epochs=3, schedule="linear")
    Traceback (most recent call last):
    ...
    ValueError: `schedule` must be one of ('constant', 'cosine'); received 'linear'.
    """

    epochs: int
    batch_size: int = 32
    learning_rate: float = 1e-3
    schedule: str = "constant"
    augment: object = None
    verbose: int = 0
    callbacks: tuple = ()

    def __post_init__(self):
        input_checks.positive_int("epochs", self.epochs)
        input_checks.positive_int("batch_size", self.batch_size)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"`schedule` must be one of {SCHEDULES}; received {self.schedule!r}.")
        if isinstance(self.learning_rate, bool) or not (
            isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0
        ):
            raise ValueError(
                f"`learning_rate` must be a positive number; received {self.learning_rate!r}."
            )
        if self.augment is not None and not callable(self.augment):
            raise ValueError(
                "`augment` must be a Keras layer, a callable `fn(x, training)` or None; "
                f"received {self.augment!r}."
            )
        object.__setattr__(self, "callbacks", tuple(self.callbacks))

    def optimizer(self, examples: int) -> keras.optimizers.Optimizer:
        """Adam at `learning_rate`, decayed by cosine over the run's steps if asked.

        Example:
        >>> type(TrainingSettings(epochs=2, schedule="cosine").optimizer(64)).__name__
        'Adam'
        """
        learning_rate = self.learning_rate
        if self.schedule == "cosine":
            steps = self.epochs * int(np.ceil(examples / self.batch_size))
            learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, max(steps, 1))
        return keras.optimizers.Adam(learning_rate)

    def fit(self, model: keras.Model, x, y, data: Split, callbacks=()) -> float:
        """Fits a compiled `model` on `(x, y)`; returns its accuracy on the test split.

        Example:
        >>> x, y = np.eye(2, dtype="float32"), np.array([0, 1])
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        >>> model.compile("adam", "sparse_categorical_crossentropy")
        >>> 0.0 <= TrainingSettings(epochs=1).fit(model, x, y, Split(x, y, x, y)) <= 1.0
        True
        """
        pipeline = isinstance(x, tf.data.Dataset)  # shuffled by the pipeline itself
        model.fit(
            x,
            y,
            epochs=self.epochs,
            batch_size=None if pipeline else self.batch_size,
            shuffle=not pipeline,
            verbose=self.verbose,
            callbacks=[*self.callbacks, *callbacks],
        )
        accuracy = test_accuracy(model, data)
        if self.verbose:
            print(f"test accuracy {accuracy:.1%}")
        return accuracy


@dataclasses.dataclass(frozen=True)
class DistillationSettings:
    """What a distilled run adds to `TrainingSettings`: the objective and its temperature.

    Attributes:
        temperature: Temperature at the first epoch.
        final_temperature: Temperature at the last epoch (linear in between);
            by default the same as `temperature`.
        alpha: Weight of the hard-label loss.
        distillation_loss: Anything `kd.losses.get` accepts.
        distillation_loss_weights: Weights of a list `distillation_loss`.

    Example:
    >>> DistillationSettings().temperature_callbacks(epochs=5)
    []
    >>> len(DistillationSettings(temperature=2.0, final_temperature=1.0)
    ...     .temperature_callbacks(epochs=5))
    1
    """

    temperature: float = RECOMMENDED_TEMPERATURE
    final_temperature: float | None = None
    alpha: float = RECOMMENDED_ALPHA
    distillation_loss: object = "kl_divergence"
    distillation_loss_weights: object = None

    def temperature_callbacks(self, epochs: int) -> list:
        """A `TemperatureScheduler` annealing linearly to `final_temperature`, if it differs."""
        final = self.temperature if self.final_temperature is None else self.final_temperature
        if final == self.temperature:
            return []
        return [TemperatureScheduler(Linear(self.temperature, final, max(epochs - 1, 1)))]


def settings_from(recipe: str, keywords: dict, *records: type) -> list:
    """Builds each settings record in `records` from its share of `keywords`.

    Args:
        recipe: The recipe's name, for the message.
        keywords: The keyword arguments the recipe was called with.
        *records: Settings dataclasses (`TrainingSettings`, ...).

    Returns:
        One instance per record.

    Raises:
        TypeError: If a keyword belongs to none of them, or `epochs` is missing.

    Example:
    >>> training, = settings_from("train", {"epochs": 2}, TrainingSettings)
    >>> training.epochs
    2
    """
    names = [[field.name for field in dataclasses.fields(record)] for record in records]
    unknown = sorted(set(keywords) - {name for group in names for name in group})
    if unknown or "epochs" not in keywords:
        accepted = ", ".join(name for group in names for name in group)
        problem = f"unknown settings {unknown}" if unknown else "`epochs` is required"
        raise TypeError(f"`{recipe}`: {problem}; it takes the keyword arguments {accepted}.")
    return [
        record(**{name: keywords[name] for name in group if name in keywords})
        for record, group in zip(records, names, strict=True)
    ]


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def test_accuracy(model: keras.Model, data: Split) -> float:
    """Top-1 accuracy of a classifier on the test split.

    Example:
    >>> x, y = np.eye(2, dtype="float32"), np.array([0, 1])
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Identity()])
    >>> test_accuracy(model, Split(x, y, x, y))
    1.0
    """
    outputs = model_inspection.predictions(model, data.x_test)
    return float(np.mean(np.argmax(outputs, axis=-1) == np.asarray(data.y_test).reshape(-1)))


def _augmented_labels(data: Split, batch_size: int, augmentation, classes: int):
    """A shuffled `tf.data` pipeline of augmented inputs with (mixed) one-hot labels."""
    one_hot = tf.one_hot(np.asarray(data.y_train).reshape(-1), classes)
    dataset = tf.data.Dataset.from_tensor_slices((data.x_train, one_hot))
    dataset = dataset.shuffle(len(data.x_train), reshuffle_each_iteration=True).batch(batch_size)
    mapped = dataset.map(lambda x, y: with_mixed_labels(augmentation, x, y))
    return mapped.prefetch(tf.data.AUTOTUNE)


def train_from_scratch(model: keras.Model, data: Split, **settings) -> float:
    """Trains a classifier on the labels alone (Adam, cross-entropy).

    Args:
        model: An uncompiled Keras classifier that outputs logits.
        data: A `kd.datasets.Split` with integer labels.
        **settings: The fields of `TrainingSettings` (`epochs` is required;
            `batch_size`, `learning_rate`, `schedule`, `augment`, `verbose`,
            `callbacks`). An `augment` is applied to every training batch as a
            distilled student's would be; mixup and cutmix layers mix the
            one-hot labels alike.

    Returns:
        Test accuracy.

    Raises:
        ValueError: If a setting or the data is invalid (quoted in the message).
        TypeError: If `data` is not a `Split` or a setting is unknown.

    Example:
    >>> x, y = np.random.rand(32, 4), np.arange(32) % 2
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> 0.0 <= train_from_scratch(model, Split(x, y, x, y), epochs=1) <= 1.0
    True
    """
    (training,) = settings_from("train_from_scratch", settings, TrainingSettings)
    data = input_checks.checked_split(data)
    optimizer = training.optimizer(len(data.x_train))
    if training.augment is None:
        model.compile(optimizer, _loss(), metrics=["accuracy"])
        return training.fit(model, data.x_train, data.y_train, data)
    classes = int(model.outputs[0].shape[-1])
    model.compile(optimizer, keras.losses.CategoricalCrossentropy(from_logits=True))
    views = _augmented_labels(data, training.batch_size, training.augment, classes)
    return training.fit(model, views, None, data)


def train_distilled(teacher: keras.Model, student: keras.Model, data: Split, **settings) -> float:
    """Distils a classifier with the recommended recipe (or a linear annealing of T).

    Args:
        teacher: A trained Keras classifier.
        student: An uncompiled Keras classifier that outputs logits.
        data: A `kd.datasets.Split`; its training labels may
            be a dict with `"labels"` and `"label_mask"`.
        **settings: The fields of `TrainingSettings` (`epochs` is required) and
            of `DistillationSettings` (`temperature`, `final_temperature`,
            `alpha`, `distillation_loss`, `distillation_loss_weights`). An
            `augment` is applied inside the training step to the batch both
            models see (`Distiller(augment=...)`).

    Returns:
        The student's test accuracy.

    Raises:
        ValueError: If a setting or the data is invalid (and as `Distiller` raises).
        TypeError: If `data` is not a `Split` or a setting is unknown.

    Example:
    >>> x, y = np.random.rand(32, 4), np.arange(32) % 2
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> 0.0 <= train_distilled(teacher, student, Split(x, y, x, y), epochs=2) <= 1.0
    True
    """
    training, objective = settings_from(
        "train_distilled", settings, TrainingSettings, DistillationSettings
    )
    data = input_checks.checked_split(data)
    distiller = Distiller(
        teacher,
        student,
        temperature=objective.temperature,
        alpha=objective.alpha,
        distillation_loss=objective.distillation_loss,
        augment=training.augment,
        distillation_loss_weights=objective.distillation_loss_weights,
    )
    distiller.compile(training.optimizer(len(data.x_train)), _loss(), metrics=["accuracy"])
    annealing = objective.temperature_callbacks(training.epochs)
    return training.fit(distiller, data.x_train, data.y_train, data, callbacks=annealing)


def train_function_matching(
    teacher: keras.Model,
    student: keras.Model,
    data: Split,
    *,
    augment="default",
    seed: int | None = None,
    **settings,
) -> float:
    """Distils with function matching: the teacher on the student's augmented view.

    The recipe of Beyer et al. (2022), "A good teacher is patient and
    consistent": every training batch is augmented inside the training step
    and both models see the same view; the student learns the teacher's
    function on inputs around the training set rather than the labels, which
    is why it can beat the same student trained alone even with all labels.
    It is patient: it needs several times the epochs of training on the labels
    (the README reports the measured cost). Compare it with
    `train_from_scratch(..., augment=same_augmentation, schedule="cosine")`.

    Args:
        teacher: A trained Keras classifier.
        student: An uncompiled Keras classifier that outputs logits.
        data: A `kd.datasets.Split`.
        augment: `"default"` (`kd.augment.default_augmentation` for the
            input rank: flat vectors get noise and mixup), a layer (e.g.
            `kd.augment.default_augmentation(shape, "signal")`), a callable
            `fn(x, training)`, or None.
        seed: Seed of the default augmentation.
        **settings: Passed to `train_distilled`, over the function-matching
            defaults `FUNCTION_MATCHING_SETTINGS` (T 1, alpha 0 (the teacher
            alone, as in the paper), batch 128, peak learning rate 3e-3,
            cosine decay); `epochs` is required (long: see the README).

    Returns:
        The student's test accuracy.

    Example:
    >>> x, y = np.random.rand(64, 16).astype("float32"), np.arange(64) % 2
    >>> teacher = keras.Sequential([keras.Input((16,)), keras.layers.Dense(2)])
    >>> student = keras.Sequential([keras.Input((16,)), keras.layers.Dense(2)])
    >>> 0.0 <= train_function_matching(teacher, student, Split(x, y, x, y), epochs=2) <= 1.0
    True
    """
    if isinstance(augment, str) and augment == "default":
        shape = tuple(input_checks.checked_split(data).x_train.shape[1:])
        augment = default_augmentation(shape, seed=seed)
    settings = {**FUNCTION_MATCHING_SETTINGS, **settings, "augment": augment}
    return train_distilled(teacher, student, data, **settings)
