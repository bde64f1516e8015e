"""The library's recommended training recipes for classifiers, as plain functions.

`train_from_scratch`, `train_distilled` and `train_function_matching` train a
Keras classifier (integer labels, logits out) and return its test accuracy.
`sweep`, `teacher_assistant_chain`, the demo and the quality and defaults
benchmarks train through them, so their comparisons use the same optimizer,
schedule and data handling. A scratch baseline given the same `augment` as a
distilled student trains on the same augmented views (mixup and cutmix then
mix its one-hot labels), so augmentation is never credited to distillation.
"""

from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf

from keras_distill.objective.features import FeatureDistillation
from keras_distill.studies.datasets import Split
from keras_distill.training import augment as augment_lib
from keras_distill.training.callbacks import TemperatureScheduler
from keras_distill.training.distiller import Distiller
from keras_distill.training.initialization import init_from_teacher
from keras_distill.training.schedules import Linear
from keras_distill.utils import model_inspection as models

# Chosen by benchmarks/defaults_benchmark.py (5 seeds, smallest students of digits and
# MNIST-1D): T = 1 with alpha = 0.5 was the only setting tried that was not worse
# than scratch with all labels (+0.0 and +0.3 points) while beating it most with
# 10% labels and a transfer set (+7.6 and +20.7 points). Annealing from T = 2 cost
# 0.5-2.5 points with all labels; the keras.io settings (T = 10, alpha = 0.1) up to 10.
# `train_distilled` anneals linearly from `temperature` to `final_temperature`; with
# these defaults both are 1, so nothing is annealed unless a caller asks for it.
RECOMMENDED_TEMPERATURE = 1.0
RECOMMENDED_ALPHA = 0.5


# The train/test arrays the recipes take (one type with `datasets.Split`).
Data = Split


# Function matching (Beyer et al. 2022), chosen by benchmarks/quality_benchmark.py: the
# teacher on the student's augmented view (shift, noise, input mixup), pure KL at T = 1
# (alpha = 0), Adam with cosine decay over a long schedule. See the README for the numbers.
FUNCTION_MATCHING_TEMPERATURE = 1.0
FUNCTION_MATCHING_ALPHA = 0.0
FUNCTION_MATCHING_BATCH_SIZE = 128
FUNCTION_MATCHING_LEARNING_RATE = 3e-3
SCHEDULES = ("constant", "cosine")


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _optimizer(learning_rate: float, schedule: str, steps: int) -> keras.optimizers.Optimizer:
    if schedule not in SCHEDULES:
        raise ValueError(f"`schedule` must be one of {SCHEDULES}; received {schedule!r}.")
    if schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, max(steps, 1))
    return keras.optimizers.Adam(learning_rate)


def _steps(data: Data, epochs: int, batch_size: int) -> int:
    return epochs * int(np.ceil(len(data.x_train) / batch_size))


def test_accuracy(model: keras.Model, data: Data) -> float:
    """Top-1 accuracy of a classifier on the test split.

    Example:
    >>> x, y = np.eye(2, dtype="float32"), np.array([0, 1])
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Identity()])
    >>> test_accuracy(model, Data(x, y, x, y))
    1.0
    """
    outputs = models.predictions(model, data.x_test)
    return float(np.mean(np.argmax(outputs, axis=-1) == np.asarray(data.y_test)))


def _fit(model, x, y, data: Data, epochs: int, batch_size: int, verbose: int, callbacks=()):
    pipeline = isinstance(x, tf.data.Dataset)  # shuffled by the pipeline itself
    model.fit(
        x,
        y,
        epochs=epochs,
        batch_size=None if pipeline else batch_size,
        shuffle=not pipeline,
        verbose=verbose,
        callbacks=list(callbacks),
    )
    accuracy = test_accuracy(model, data)
    if verbose:
        print(f"test accuracy {accuracy:.1%}")
    return accuracy


def _augmented_labels(data: Data, batch_size: int, augmentation, classes: int):
    """A shuffled `tf.data` pipeline of augmented inputs with (mixed) one-hot labels."""
    one_hot = tf.one_hot(np.asarray(data.y_train), classes)
    dataset = tf.data.Dataset.from_tensor_slices((data.x_train, one_hot))
    dataset = dataset.shuffle(len(data.x_train), reshuffle_each_iteration=True).batch(batch_size)
    mapped = dataset.map(lambda x, y: augment_lib.with_mixed_labels(augmentation, x, y))
    return mapped.prefetch(tf.data.AUTOTUNE)


def train_from_scratch(
    model: keras.Model,
    data: Data,
    *,
    epochs: int,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    augment=None,
    schedule: str = "constant",
    verbose: int = 0,
    callbacks=(),
) -> float:
    """Trains a classifier on the labels alone (Adam, cross-entropy).

    Args:
        model: An uncompiled Keras classifier that outputs logits.
        data: A `Data` (or `keras_distill.studies.datasets.Split`) with integer labels.
        epochs: Training epochs.
        batch_size: Batch size.
        learning_rate: Adam learning rate.
        augment: Optional augmentation (a layer or `keras.Sequential`), applied
            to every training batch as a distilled student's would be; mixup and
            cutmix layers mix the one-hot labels alike.
        schedule: `"constant"` learning rate, or `"cosine"` decay to 0 over
            the run.
        verbose: Keras `fit` verbosity; with verbose > 0 the test accuracy is
            printed at the end.
        callbacks: Extra Keras callbacks for `fit` (e.g. an
            `keras_distill.utils.progress.EpochProgressBar`).

    Returns:
        Test accuracy.

    Raises:
        ValueError: If `schedule` is unknown.

    Example:
    >>> x, y = np.random.rand(32, 4), np.arange(32) % 2
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> 0.0 <= train_from_scratch(model, Data(x, y, x, y), epochs=1) <= 1.0
    True
    """
    optimizer = _optimizer(learning_rate, schedule, _steps(data, epochs, batch_size))
    if augment is None:
        model.compile(optimizer, _loss(), metrics=["accuracy"])
        return _fit(model, data.x_train, data.y_train, data, epochs, batch_size, verbose, callbacks)
    classes = int(model.outputs[0].shape[-1])
    model.compile(optimizer, keras.losses.CategoricalCrossentropy(from_logits=True))
    train = _augmented_labels(data, batch_size, augment, classes)
    return _fit(model, train, None, data, epochs, batch_size, verbose, callbacks)


def train_distilled(
    teacher: keras.Model,
    student: keras.Model,
    data: Data,
    *,
    epochs: int,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    temperature: float = RECOMMENDED_TEMPERATURE,
    final_temperature: float | None = None,
    alpha: float = RECOMMENDED_ALPHA,
    distillation_loss="kl_divergence",
    augment=None,
    schedule: str = "constant",
    verbose: int = 0,
    callbacks=(),
    distillation_loss_weights=None,
) -> float:
    """Distils a classifier with the recommended recipe (or a linear annealing of T).

    Args:
        teacher: A trained Keras classifier.
        student: An uncompiled Keras classifier that outputs logits.
        data: A `Data` (or `keras_distill.studies.datasets.Split`); its training
            labels may be a dict with `"labels"` and `"label_mask"`.
        epochs: Training epochs.
        batch_size: Batch size.
        learning_rate: Adam learning rate.
        temperature: Temperature at the first epoch.
        final_temperature: Temperature at the last epoch (linear in between);
            by default the same as `temperature`.
        alpha: Weight of the hard-label loss.
        distillation_loss: Anything `keras_distill.losses.get` accepts.
        augment: Optional augmentation applied inside the training step to
            the batch both models see (`Distiller(augment=...)`).
        schedule: `"constant"` learning rate, or `"cosine"` decay.
        verbose: Keras `fit` verbosity.
        callbacks: Extra Keras callbacks for `fit`.
        distillation_loss_weights: Weights of a list `distillation_loss`.

    Returns:
        The student's test accuracy.

    Raises:
        ValueError: If `schedule` is unknown (and as `Distiller` raises).

    Example:
    >>> x, y = np.random.rand(32, 4), np.arange(32) % 2
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> 0.0 <= train_distilled(teacher, student, Data(x, y, x, y), epochs=2) <= 1.0
    True
    """
    distiller = Distiller(
        teacher,
        student,
        temperature=temperature,
        alpha=alpha,
        distillation_loss=distillation_loss,
        augment=augment,
        distillation_loss_weights=distillation_loss_weights,
    )
    optimizer = _optimizer(learning_rate, schedule, _steps(data, epochs, batch_size))
    distiller.compile(optimizer, _loss(), metrics=["accuracy"])
    final = temperature if final_temperature is None else final_temperature
    callbacks = list(callbacks)
    if final != temperature:
        callbacks.append(TemperatureScheduler(Linear(temperature, final, max(epochs - 1, 1))))
    x, y = data.x_train, data.y_train
    return _fit(distiller, x, y, data, epochs, batch_size, verbose, callbacks=callbacks)


def train_function_matching(
    teacher: keras.Model,
    student: keras.Model,
    data: Data,
    *,
    epochs: int,
    augment="default",
    temperature: float = FUNCTION_MATCHING_TEMPERATURE,
    alpha: float = FUNCTION_MATCHING_ALPHA,
    distillation_loss="kl_divergence",
    batch_size: int = FUNCTION_MATCHING_BATCH_SIZE,
    learning_rate: float = FUNCTION_MATCHING_LEARNING_RATE,
    seed: int | None = None,
    verbose: int = 0,
    callbacks=(),
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
        data: A `Data` (or `keras_distill.studies.datasets.Split`).
        epochs: Training epochs (long: see the README).
        augment: `"default"` (`keras_distill.training.augment.default_augmentation` for
            the input rank: flat vectors get noise and mixup), a layer (e.g.
            `default_augmentation(shape, "signal")`), a callable
            `fn(x, training)`, or None.
        temperature: The temperature (1 measured best).
        alpha: Weight of the hard labels (0: the teacher alone, as in the paper).
        distillation_loss: Anything `keras_distill.losses.get` accepts.
        batch_size: Batch size.
        learning_rate: Peak Adam learning rate (cosine decay to 0).
        seed: Seed of the default augmentation.
        verbose: Keras `fit` verbosity.
        callbacks: Extra Keras callbacks for `fit`.

    Returns:
        The student's test accuracy.

    Example:
    >>> x, y = np.random.rand(64, 16).astype("float32"), np.arange(64) % 2
    >>> teacher = keras.Sequential([keras.Input((16,)), keras.layers.Dense(2)])
    >>> student = keras.Sequential([keras.Input((16,)), keras.layers.Dense(2)])
    >>> 0.0 <= train_function_matching(teacher, student, Data(x, y, x, y), epochs=2) <= 1.0
    True
    """
    if isinstance(augment, str) and augment == "default":
        augment = augment_lib.default_augmentation(tuple(data.x_train.shape[1:]), seed=seed)
    return train_distilled(
        teacher,
        student,
        data,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        temperature=temperature,
        alpha=alpha,
        distillation_loss=distillation_loss,
        augment=augment,
        schedule="cosine",
        verbose=verbose,
        callbacks=callbacks,
    )


def _held_out(data: Data, fraction: float, seed: int) -> Data:
    """`data` with `fraction` of its training split as the test split (the test is untouched)."""
    order = np.random.default_rng(seed).permutation(len(data.x_train))
    held = order[: max(1, int(len(order) * fraction))]
    kept = order[len(held) :]
    x, y = np.asarray(data.x_train), np.asarray(data.y_train)
    return Data(x[kept], y[kept], x[held], y[held])


# DistilBERT (Sanh et al. 2019; the Hugging Face training script's defaults): 5 x the soft-target
# cross-entropy at T = 2 (T**2-scaled), 2 x the hard (masked-LM) loss, 1 x the cosine loss between
# the teacher's and the student's hidden states; the student starts from every other teacher block.
DISTILBERT_TEMPERATURE = 2.0
DISTILBERT_WEIGHTS = {"soft": 5.0, "hard": 2.0, "cosine": 1.0}


def distilbert_objective(hidden_pairs) -> dict:
    """`Distiller` arguments for DistilBERT's objective, in keras-distill's terms.

    `alpha * hard + (1 - alpha) * (w_kl * KL + w_cos * cosine)` with the
    paper's 5 : 2 : 1 weights becomes alpha = 2/8 and weights 5/6 and 1/6
    (the cosine weight shared by the hidden-state pairs).

    Args:
        hidden_pairs: `(teacher layer, student layer)` name pairs whose outputs
            the cosine loss aligns (DistilBERT: the last hidden states).

    Returns:
        `temperature`, `alpha`, `distillation_loss` and `distillation_loss_weights`.

    Example:
    >>> objective = distilbert_objective([("encoder_4", "encoder_2")])
    >>> objective["alpha"], objective["distillation_loss_weights"]
    (0.25, [0.8333333333333334, 0.16666666666666666])
    """
    soft, hard, cosine = (DISTILBERT_WEIGHTS[k] for k in ("soft", "hard", "cosine"))
    pairs = list(hidden_pairs)
    features = [FeatureDistillation(t, s, loss="cosine") for t, s in pairs]
    return {
        "temperature": DISTILBERT_TEMPERATURE,
        "alpha": hard / (soft + hard + cosine),
        "distillation_loss": ["kl_divergence", *features],
        "distillation_loss_weights": [soft / (soft + cosine)]
        + [cosine / (soft + cosine) / len(pairs)] * len(pairs),
    }


def train_distilbert_style(
    teacher: keras.Model,
    student: keras.Model,
    data: Data,
    *,
    hidden_pairs,
    epochs: int,
    init: bool = True,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    verbose: int = 0,
    callbacks=(),
) -> tuple[float, object]:
    """The DistilBERT recipe: student initialised from the teacher, then KL + hard + cosine.

    Args:
        teacher: A trained Keras classifier (e.g. a stack of encoder blocks).
        student: An uncompiled student, typically the same architecture with
            half the blocks.
        data: A `Data` with integer labels.
        hidden_pairs: See `distilbert_objective`.
        epochs: Training epochs.
        init: Initialise the student with `init_from_teacher` first.
        batch_size: Batch size.
        learning_rate: Adam learning rate.
        verbose: Keras `fit` verbosity.
        callbacks: Extra Keras callbacks for `fit`.

    Returns:
        `(test accuracy, the InitReport or None)`.

    Example:
    >>> def stack(blocks):
    ...     return keras.Sequential([keras.Input((8,))] + [
    ...         keras.layers.Dense(8, activation="relu", name=f"block_{i}")
    ...         for i in range(blocks)] + [keras.layers.Dense(2, name="head")])
    >>> x, y = np.random.rand(32, 8).astype("float32"), np.arange(32) % 2
    >>> accuracy, report = train_distilbert_style(stack(4), stack(2), Data(x, y, x, y),
    ...     hidden_pairs=[("block_3", "block_1")], epochs=1)
    >>> report.copied[1]
    ('block_1', 'block_2')
    """
    report = init_from_teacher(student, teacher) if init else None
    accuracy = train_distilled(
        teacher,
        student,
        data,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        verbose=verbose,
        callbacks=callbacks,
        **distilbert_objective(hidden_pairs),
    )
    return accuracy, report


RECOMMENDED_CANDIDATES = ("distilled", "function_matching")


def train_recommended(
    teacher: keras.Model,
    make_student,
    data: Data,
    *,
    epochs: int,
    make_augment,
    candidates=RECOMMENDED_CANDIDATES,
    validation_fraction: float = 0.2,
    seed: int = 0,
    verbose: int = 0,
) -> tuple[float, dict]:
    """The recommended recipe: the better of plain distillation and function matching.

    No single recipe won on every student in the project's benchmark (see the
    README): function matching paid several points where the student had room
    to learn the teacher's function, and tied or lost a little on students
    that the labels already fill. This holds out `validation_fraction` of the
    training split, trains each candidate there for the full `epochs`, and
    trains the better one on the whole training split. The test split is only
    used for the returned accuracy. It costs `len(candidates) + 1` runs.

    Candidates: `"distilled"` (`train_distilled`: T 1, alpha 0.5, no
    augmentation) and `"function_matching"` (`train_function_matching` with
    the augmentation); both use Adam with cosine decay at batch 128.

    Args:
        teacher: A trained Keras classifier.
        make_student: A callable returning a new, uncompiled student.
        data: A `Data` with integer labels.
        epochs: Training epochs of every run.
        make_augment: A callable returning the function-matching augmentation
            (a fresh layer for every run, e.g. `lambda:
            augment.default_augmentation(shape, "signal")`), or None for none.
        candidates: A subset of `RECOMMENDED_CANDIDATES`.
        validation_fraction: Share of the training split held out, in (0, 1).
        seed: Seed of the hold-out split.
        verbose: Keras `fit` verbosity.

    Returns:
        `(test accuracy, {"chosen": name, "validation": {name: accuracy},
        "seconds": total time})`.

    Raises:
        ValueError: If a candidate is unknown or the fraction is not in (0, 1).

    Example:
    >>> x, y = np.random.rand(64, 16).astype("float32"), np.arange(64) % 2
    >>> teacher = keras.Sequential([keras.Input((16,)), keras.layers.Dense(2)])
    >>> def make_student():
    ...     return keras.Sequential([keras.Input((16,)), keras.layers.Dense(2)])
    >>> accuracy, info = train_recommended(teacher, make_student, Data(x, y, x, y), epochs=1,
    ...                                    make_augment=None)
    >>> info["chosen"] in RECOMMENDED_CANDIDATES
    True
    """
    unknown = set(candidates) - set(RECOMMENDED_CANDIDATES)
    if unknown or not candidates or not 0.0 < validation_fraction < 1.0:
        raise ValueError(
            f"`candidates` must be a non-empty subset of {RECOMMENDED_CANDIDATES} and "
            f"`validation_fraction` in (0, 1); received candidates={candidates!r}, "
            f"validation_fraction={validation_fraction!r}."
        )
    started = time.perf_counter()

    def run(name, split):
        if name == "distilled":
            return train_distilled(
                teacher,
                make_student(),
                split,
                epochs=epochs,
                batch_size=FUNCTION_MATCHING_BATCH_SIZE,
                learning_rate=FUNCTION_MATCHING_LEARNING_RATE,
                schedule="cosine",
                verbose=verbose,
            )
        views = None if make_augment is None else make_augment()
        return train_function_matching(
            teacher, make_student(), split, epochs=epochs, augment=views, verbose=verbose
        )

    held_out = _held_out(data, validation_fraction, seed)
    validation = {name: run(name, held_out) for name in candidates}
    chosen = max(validation, key=validation.get)
    accuracy = run(chosen, data)
    info = {"chosen": chosen, "validation": validation, "seconds": time.perf_counter() - started}
    return accuracy, info


def choose_temperature(
    teacher: keras.Model,
    make_student,
    data: Data,
    *,
    candidates=(1.0, 2.0, 4.0),
    epochs: int = 30,
    validation_fraction: float = 0.2,
    seed: int = 0,
    **recipe,
) -> tuple[float, dict, float]:
    """Picks the function-matching temperature for a student with a few short runs.

    One fixed temperature does not fit students of every capacity. This holds
    out `validation_fraction` of the training split, trains a fresh student
    (`make_student()`) with `train_function_matching` for `epochs` at each
    candidate temperature, and returns the best on the held-out part. The test
    split is never looked at.

    Args:
        teacher: A trained Keras classifier.
        make_student: A callable returning a new, uncompiled student.
        data: A `Data`.
        candidates: Temperatures to try.
        epochs: Epochs of each short run.
        validation_fraction: Share of the training split held out, in (0, 1).
        seed: Seed of the hold-out split.
        **recipe: Passed to `train_function_matching`.

    Returns:
        `(best temperature, {temperature: held-out accuracy}, seconds spent)`.

    Raises:
        ValueError: If there are no candidates or the fraction is not in (0, 1).

    Example:
    >>> x, y = np.random.rand(64, 16).astype("float32"), np.arange(64) % 2
    >>> teacher = keras.Sequential([keras.Input((16,)), keras.layers.Dense(2)])
    >>> def make_student():
    ...     return keras.Sequential([keras.Input((16,)), keras.layers.Dense(2)])
    >>> best, scores, seconds = choose_temperature(teacher, make_student, Data(x, y, x, y),
    ...                                            candidates=(1.0, 2.0), epochs=1)
    >>> best in scores
    True
    """
    if not candidates or not 0.0 < validation_fraction < 1.0:
        raise ValueError(
            "Need at least one candidate temperature and a validation_fraction in (0, 1); "
            f"received candidates={candidates!r}, validation_fraction={validation_fraction!r}."
        )
    started = time.perf_counter()
    split = _held_out(data, validation_fraction, seed)
    scores = {
        float(t): train_function_matching(
            teacher, make_student(), split, epochs=epochs, temperature=t, **recipe
        )
        for t in candidates
    }
    best = max(scores, key=scores.get)
    return best, scores, time.perf_counter() - started
