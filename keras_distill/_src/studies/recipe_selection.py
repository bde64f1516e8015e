"""Choosing a recipe or a temperature on a held-out part of the training split.

`train_recommended` picks plain distillation or function matching,
`choose_temperature` the function-matching temperature; both train short or
full runs on a part of the training split held out for the choice, so the test
split is only ever used for the returned accuracy.
"""

from __future__ import annotations

import time
import warnings

import keras
import numpy as np

from keras_distill._src.studies import input_checks, training_recipes
from keras_distill._src.studies.datasets import Split

RECOMMENDED_CANDIDATES = ("distilled", "function_matching")
# The "distilled" candidate: the recommended T and alpha, no augmentation, trained as long and
# with the same optimizer as function matching (Adam, cosine decay, batch 128).
DISTILLED_CANDIDATE_SETTINGS = {
    "batch_size": training_recipes.FUNCTION_MATCHING_BATCH_SIZE,
    "learning_rate": training_recipes.FUNCTION_MATCHING_LEARNING_RATE,
    "schedule": "cosine",
}


def held_out(data: Split, fraction: float, seed: int) -> Split:
    """`data` with `fraction` of its training split as the test split (the test is untouched).

    Raises:
        ValueError: If the fraction is not in (0, 1) or leaves a part empty.

    Example:
    >>> x, y = np.arange(10.0)[:, None], np.arange(10) % 2
    >>> [len(part) for part in held_out(Split(x, y, None, None), 0.2, seed=0)]
    [8, 8, 2, 2]
    """
    examples = len(data.x_train)
    held = max(1, int(examples * fraction)) if 0.0 < fraction < 1.0 else 0
    if not 0 < held < examples:
        raise ValueError(
            f"Holding out validation_fraction={fraction!r} of {examples} training examples "
            "must leave examples on both sides: give a fraction in (0, 1) and at least 2 "
            f"training examples (received {examples})."
        )
    order = np.random.default_rng(seed).permutation(examples)
    x, y = np.asarray(data.x_train), np.asarray(data.y_train)
    return Split(x[order[held:]], y[order[held:]], x[order[:held]], y[order[:held]])


def _check_candidates(candidates, validation_fraction: float) -> None:
    unknown = set(candidates) - set(RECOMMENDED_CANDIDATES)
    if unknown or not candidates or not 0.0 < validation_fraction < 1.0:
        raise ValueError(
            f"`candidates` must be a non-empty subset of {RECOMMENDED_CANDIDATES} and "
            f"`validation_fraction` in (0, 1); received candidates={candidates!r}, "
            f"validation_fraction={validation_fraction!r}."
        )


def _train_candidate(name: str, teacher, make_student, make_augment, split, **settings):
    """One run of the candidate recipe `name` on `split`; returns its test accuracy."""
    if name == "distilled":
        return training_recipes.train_distilled(
            teacher, make_student(), split, **DISTILLED_CANDIDATE_SETTINGS, **settings
        )
    views = None if make_augment is None else make_augment()
    return training_recipes.train_function_matching(
        teacher, make_student(), split, augment=views, **settings
    )


def _choose(validation: dict, held: int) -> tuple[str, bool]:
    """The best candidate, and whether it tied with another (then said in a warning)."""
    chosen = max(validation, key=validation.get)
    tied = [name for name, value in validation.items() if value == validation[chosen]]
    if len(tied) > 1:
        scores = ", ".join(f"{name} {validation[name]:.1%}" for name in tied)
        warnings.warn(
            f"train_recommended: the candidates tie on the {held} held-out examples "
            f"({scores}); chose {chosen!r}, the first of them in `candidates`. The held-out "
            "part is too small to tell the recipes apart: give more training data or a larger "
            "`validation_fraction`.",
            stacklevel=3,
        )
    return chosen, len(tied) > 1


def train_recommended(
    teacher: keras.Model,
    make_student,
    data: Split,
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
    used for the returned accuracy. It costs `len(candidates) + 1` runs. A tie
    on the held-out part is said in a warning (the first tied candidate wins).

    Candidates: `"distilled"` (`train_distilled`: T 1, alpha 0.5, no
    augmentation) and `"function_matching"` (`train_function_matching` with
    the augmentation); both use Adam with cosine decay at batch 128.

    Args:
        teacher: A trained Keras classifier.
        make_student: A callable returning a new, uncompiled student.
        data: A `kd.datasets.Split` with integer labels.
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
        "tied": whether the choice was a tie, "seconds": total time})`.

    Raises:
        ValueError: If a candidate is unknown, the fraction is not in (0, 1),
            the data cannot be split so, or a setting is invalid.
        TypeError: If `make_student` or `make_augment` is a model or layer
            rather than a callable building one, or `data` is not a `Split`.

    Example:
    >>> x, y = np.random.rand(64, 16).astype("float32"), np.arange(64) % 2
    >>> teacher = keras.Sequential([keras.Input((16,)), keras.layers.Dense(2)])
    >>> def make_student():
    ...     return keras.Sequential([keras.Input((16,)), keras.layers.Dense(2)])
    >>> accuracy, info = train_recommended(teacher, make_student, Split(x, y, x, y), epochs=1,
    ...                                    make_augment=None)
    >>> info["chosen"] in RECOMMENDED_CANDIDATES
    True
    """
    _check_candidates(candidates, validation_fraction)
    input_checks.check_builder(make_student, "make_student", "a new, uncompiled student")
    if make_augment is not None:
        input_checks.check_builder(make_augment, "make_augment", "a fresh augmentation layer")
    input_checks.positive_int("epochs", epochs)
    data = input_checks.checked_split(data)
    started = time.perf_counter()
    split = held_out(data, validation_fraction, seed)
    recipe = dict(epochs=epochs, verbose=verbose)
    parts = (teacher, make_student, make_augment)
    validation = {name: _train_candidate(name, *parts, split, **recipe) for name in candidates}
    chosen, tied = _choose(validation, len(split.x_test))
    accuracy = _train_candidate(chosen, *parts, data, **recipe)
    seconds = time.perf_counter() - started
    return accuracy, {"chosen": chosen, "validation": validation, "tied": tied, "seconds": seconds}


def choose_temperature(
    teacher: keras.Model,
    make_student,
    data: Split,
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
        data: A `kd.datasets.Split`.
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
    >>> best, scores, seconds = choose_temperature(teacher, make_student, Split(x, y, x, y),
    ...                                            candidates=(1.0, 2.0), epochs=1)
    >>> best in scores
    True
    """
    if not candidates or not 0.0 < validation_fraction < 1.0:
        raise ValueError(
            "Need at least one candidate temperature and a validation_fraction in (0, 1); "
            f"received candidates={candidates!r}, validation_fraction={validation_fraction!r}."
        )
    input_checks.check_builder(make_student, "make_student", "a new, uncompiled student")
    started = time.perf_counter()
    split = held_out(input_checks.checked_split(data, needs_test=False), validation_fraction, seed)
    scores = {
        float(t): training_recipes.train_function_matching(
            teacher, make_student(), split, epochs=epochs, temperature=t, **recipe
        )
        for t in candidates
    }
    best = max(scores, key=scores.get)
    return best, scores, time.perf_counter() - started
