"""The main job: distil a small student on scikit-learn's digits, offline.

`keras-distill demo` (or `make demo`) trains a teacher MLP, distils a much
smaller student with an annealed temperature, trains the same student
architecture from scratch as the baseline, repeats both with labels for only
10% of the training images (the teacher's outputs on all of them), and prints
a table.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from keras_distill import datasets, markdown, recipes


def mlp(hidden: list[int], seed: int, dropout: float = 0.0, name: str | None = None):
    """An MLP classifier for the 64 digits features, returning logits.

    Args:
        hidden: Units of each hidden layer.
        seed: Seed of the weight initialisation.
        dropout: Dropout rate after each hidden layer.
        name: Model name.

    Returns:
        An uncompiled `keras.Sequential`.

    Example:
    >>> mlp([8], seed=0).count_params()
    610
    """
    keras.utils.set_random_seed(seed)
    layers: list = [keras.Input((64,))]
    for units in hidden:
        layers.append(keras.layers.Dense(units, activation="relu"))
        if dropout:
            layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(10))
    return keras.Sequential(layers, name=name)


@dataclass
class DemoResult:
    """Parameters and test accuracy of the demo's models.

    Example:
    >>> result = DemoResult(85002, 610, 0.987, 0.958, 0.962)
    >>> round(result.compression_ratio)
    139
    """

    teacher_params: int
    student_params: int
    teacher_accuracy: float
    scratch_accuracy: float
    distilled_accuracy: float
    few_labels_scratch_accuracy: float | None = None
    few_labels_distilled_accuracy: float | None = None

    @property
    def compression_ratio(self) -> float:
        """Teacher parameters per student parameter."""
        return self.teacher_params / self.student_params

    def table(self) -> str:
        """The result as a Markdown table with a one-line summary.

        Returns:
            The table text.

        Example:
        >>> print(DemoResult(100, 10, 0.9, 0.8, 0.85).table().splitlines()[0])
        | model | parameters | test accuracy |
        """
        rows = [
            ("teacher", self.teacher_params, self.teacher_accuracy),
            ("student, trained from scratch", self.student_params, self.scratch_accuracy),
            ("student, distilled", self.student_params, self.distilled_accuracy),
        ]
        if self.few_labels_scratch_accuracy is not None:
            rows += [
                ("student, 10% of the labels, trained alone", self.student_params,
                 self.few_labels_scratch_accuracy),
                ("student, 10% of the labels + teacher on all inputs", self.student_params,
                 self.few_labels_distilled_accuracy),
            ]  # fmt: skip
        cells = [(name, f"{params:,}", f"{acc:.1%}") for name, params, acc in rows]
        lines = [markdown.table(["model", "parameters", "test accuracy"], cells)]
        retained = self.distilled_accuracy / self.teacher_accuracy
        gain = self.distilled_accuracy - self.scratch_accuracy
        lines.append(
            f"\nCompression ratio {self.compression_ratio:.0f}x; the distilled student "
            f"keeps {retained:.1%} of the teacher's accuracy "
            f"({gain * 100:+.1f} points against the same student trained alone)."
        )
        if self.few_labels_scratch_accuracy is not None:
            few_gain = self.few_labels_distilled_accuracy - self.few_labels_scratch_accuracy
            lines.append(
                f"With labels for only 10% of the training images, the teacher's outputs on the "
                f"rest are worth {few_gain * 100:+.1f} points."
            )
        return "\n".join(lines)


def run_demo(
    epochs: int = 100,
    teacher_epochs: int = 100,
    student_units: int = 8,
    seed: int = 0,
    verbose: int = 2,
) -> DemoResult:
    """Trains teacher, scratch student and distilled student on digits.

    Args:
        epochs: Training epochs of each student.
        teacher_epochs: Training epochs of the teacher.
        student_units: Hidden units of the one-hidden-layer student.
        seed: Seed of the split and the initialisations.
        verbose: Keras `fit` verbosity (2: a line per epoch).

    Returns:
        A `DemoResult`; `print(result.table())` shows it.

    Example:
    >>> result = run_demo(epochs=1, teacher_epochs=1, verbose=0)
    >>> result.student_params < result.teacher_params
    True
    """
    split = datasets.load_digits(seed=seed)

    def announce(text: str) -> None:
        if verbose:
            print(f"\n== {text}")

    teacher = mlp([256, 256], seed=seed, dropout=0.3, name="teacher")
    announce(f"Teacher: MLP 64-256-256-10, {teacher.count_params():,} parameters")
    teacher_accuracy = recipes.train_from_scratch(
        teacher, split, epochs=teacher_epochs, verbose=verbose
    )
    scratch = mlp([student_units], seed=seed + 1, name="scratch_student")
    announce(f"Student 64-{student_units}-10 trained from scratch")
    scratch_accuracy = recipes.train_from_scratch(scratch, split, epochs=epochs, verbose=verbose)
    student = mlp([student_units], seed=seed + 1, name="student")
    announce("Same student distilled from the teacher (temperature annealed 2 -> 1, alpha 0.5)")
    distilled_accuracy = recipes.train_distilled(
        teacher, student, split, epochs=epochs, temperature=2.0, final_temperature=1.0,
        verbose=verbose,
    )  # fmt: skip

    labeled = np.random.default_rng(seed).random(len(split.y_train)) < 0.1
    few = recipes.Data(split.x_train[labeled], split.y_train[labeled], split.x_test, split.y_test)
    announce(f"Same student on {labeled.sum()} labels (10%) alone, ten times the epochs (quiet)")
    few_scratch = recipes.train_from_scratch(
        mlp([student_units], seed=seed + 1), few, epochs=10 * epochs
    )
    if verbose:
        print(f"test accuracy {few_scratch:.1%}")
    announce("Same student on those labels plus the teacher's outputs on all training images")
    transfer = recipes.Data(
        split.x_train,
        {"labels": np.where(labeled, split.y_train, 0), "label_mask": labeled.astype("float32")},
        split.x_test,
        split.y_test,
    )
    few_distilled = recipes.train_distilled(
        teacher, mlp([student_units], seed=seed + 1), transfer, epochs=epochs, temperature=2.0,
        final_temperature=1.0, verbose=verbose,
    )  # fmt: skip

    return DemoResult(
        teacher_params=teacher.count_params(),
        student_params=student.count_params(),
        teacher_accuracy=teacher_accuracy,
        scratch_accuracy=scratch_accuracy,
        distilled_accuracy=distilled_accuracy,
        few_labels_scratch_accuracy=few_scratch,
        few_labels_distilled_accuracy=few_distilled,
    )
