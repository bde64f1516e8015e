"""Checks a `Distiller` makes when `fit` starts, before the first (compiled) step.

Mistakes that would otherwise train nothing, or fail deep inside a TensorFlow
graph error, are named here: no labels with `alpha=1`, labels a sparse loss cannot
read (strings, one-hot rows, classes out of range), a pruned student without
tfmot's callback. The teacher's outputs, live or stored, are checked by
`teachers.outputs` (`check_values`, `check_stored_counts`).
"""

from __future__ import annotations

import math
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_distill._src.objective import stored_kinds

PROBE_EXAMPLES = 32
PRUNING_WRAPPER = "PruneLowMagnitude"
PRUNING_CALLBACK = "UpdatePruningStep"


def is_dataset(x) -> bool:
    """Whether `x` is a `tf.data.Dataset`.

    Example:
    >>> is_dataset(np.zeros(2)), is_dataset(tf.data.Dataset.range(2))
    (False, True)
    """
    return isinstance(x, tf.data.Dataset)


def first_batch(x, y):
    """`(x, y)` of the first examples for arrays, or the first batch of a `tf.data` dataset.

    Returns None for other inputs (generators, `PyDataset`s), which cannot be
    read without consuming them.

    Example:
    >>> first_batch(np.zeros((40, 2)), None)[0].shape
    (32, 2)
    """
    if isinstance(x, tf.data.Dataset):
        for element in x.take(1):
            inputs, targets, _ = keras.utils.unpack_x_y_sample_weight(element)
            return inputs, targets
        return None
    leaves = keras.tree.flatten(x) if x is not None else []
    if not leaves or not all(isinstance(v, np.ndarray) or tf.is_tensor(v) for v in leaves):
        return None
    if len(leaves[0]) == 0:
        return None
    head = lambda v: v[:PROBE_EXAMPLES]  # noqa: E731
    return keras.tree.map_structure(head, x), (
        None if y is None else keras.tree.map_structure(head, y)
    )


def labels_given(batch) -> bool | None:
    """Whether the targets hold hard labels (None when the first batch is unknown).

    Example:
    >>> labels_given((np.zeros((2, 3)), None)), labels_given((np.zeros((2, 3)), np.ones(2)))
    (False, True)
    """
    if batch is None:
        return None
    return stored_kinds.read_targets(batch[1]).labels is not None


def metric_names(compile_arguments: dict) -> tuple:
    """The names of the metrics given to `compile` (`metrics=` and `weighted_metrics=`).

    Example:
    >>> metric_names({"metrics": ["accuracy", keras.metrics.AUC(name="auc")]})
    ('accuracy', 'auc')
    """
    found = []
    for key in ("metrics", "weighted_metrics"):
        for metric in keras.tree.flatten(compile_arguments.get(key) or []):
            found.append(metric if isinstance(metric, str) else getattr(metric, "name", None))
    return tuple(name or "metric" for name in found)


def check_labels(labels: bool | None, alpha: float, metrics: tuple = ()) -> None:
    """Refuses `alpha=1` without labels; warns once that only the teacher teaches otherwise.

    The compiled `metrics` compare predictions with labels: without labels they
    are left out of the logs, and the warning says so.

    Example:
    >>> try:
    ...     check_labels(False, 1.0)
    ... except ValueError as error:
    ...     print("alpha=1.0" in str(error))
    True
    """
    if labels is not False:
        return
    if alpha >= 1.0:
        raise ValueError(
            "fit got no labels (x only, or a dataset of (x,)) and alpha=1.0 weighs the "
            "hard-label loss only: the loss would be 0 and nothing would train. Pass labels "
            "(fit(x, y)), or set alpha < 1 (e.g. distiller.alpha = 0.0) to learn from the "
            "teacher alone."
        )
    left_out = (
        f" The compiled metrics {list(metrics)} need labels and are left out of the logs."
        if metrics
        else ""
    )
    warnings.warn(
        f"fit got no labels: the student learns from the teacher alone (the distillation "
        f"term, weighted {1.0 - alpha:g}); no `student_loss` is logged.{left_out} Pass labels "
        "(fit(x, y)) to add the hard-label loss.",
        stacklevel=4,
    )


def class_weight_as_sample_weight(arguments: dict) -> dict:
    """`fit` arguments that give `class_weight` to target dicts of arrays as sample weights.

    Keras takes `class_weight` for a single output only, and a target dict
    (labels beside stored teacher outputs) looks like several; its labels give the
    weights as Keras would compute them.

    Example:
    >>> class_weight_as_sample_weight(
    ...     {"y": {"labels": np.array([0, 1])}, "class_weight": {0: 0.5, 1: 2.0}}
    ... )["sample_weight"].tolist()
    [0.5, 2.0]
    """
    class_weight, y = arguments.get("class_weight"), arguments.get("y")
    if class_weight is None or not (isinstance(y, dict) and y.keys() <= stored_kinds.TARGET_KEYS):
        return {}
    labels = np.asarray(stored_kinds.read_targets(y).labels)
    if arguments.get("sample_weight") is not None:
        raise ValueError(
            "fit got both `class_weight` and `sample_weight`; Keras takes one of them. "
            "Multiply the class weights into the sample weights."
        )
    if labels.ndim > 1 and labels.shape[-1] > 1:  # one-hot rows, as Keras reads them
        labels = labels.argmax(-1)
    classes = labels.reshape(len(labels), -1)[:, 0].astype("int64")
    weights = np.array([class_weight.get(int(c), 1.0) for c in classes], "float32")
    return {"class_weight": None, "sample_weight": weights}


def labels_to_check(y, batch):
    """The hard labels to check: all of them for arrays, else those of the first batch.

    Example:
    >>> labels_to_check(np.arange(40), (None, np.arange(32))).shape
    (40,)
    """
    in_memory = y is not None and all(
        isinstance(v, np.ndarray) or tf.is_tensor(v) for v in keras.tree.flatten(y)
    )
    targets = stored_kinds.read_targets(y if in_memory else batch[1])
    labels = targets.labels
    if labels is None or keras.tree.is_nested(labels):
        return None
    labels = np.asarray(labels)
    mask = None if targets.label_mask is None else np.asarray(targets.label_mask)
    if mask is not None and mask.shape == labels.shape[: mask.ndim]:
        labels = labels[mask > 0]  # unlabelled examples may hold any placeholder
    return labels


def _sparse_categorical(loss):
    """(Whether `loss` reads labels as class indices, the class it ignores or None)."""
    name = loss if isinstance(loss, str) else getattr(loss, "__name__", type(loss).__name__)
    if name not in ("sparse_categorical_crossentropy", "SparseCategoricalCrossentropy"):
        return False, None
    config = loss.get_config() if hasattr(loss, "get_config") else {}
    return True, config.get("ignore_class")


def check_label_values(labels, loss, student_outputs) -> None:
    """Names labels that the compiled loss cannot read, before the first step.

    Strings are refused for every loss; for a sparse categorical loss, one-hot
    rows and class indices outside `[0, classes)` of the student's single output.

    Example:
    >>> try:
    ...     check_label_values(np.array([0, 5]), "sparse_categorical_crossentropy",
    ...                        keras.KerasTensor((None, 3)))
    ... except ValueError as error:
    ...     print("out of range" in str(error))
    True
    """
    if labels is None or labels.size == 0:
        return
    if labels.dtype.kind in "USO":
        raise ValueError(
            f"The labels are strings or objects (dtype {labels.dtype}, e.g. {labels.flat[0]!r}): "
            "losses take numbers. Map them to class indices first (e.g. "
            "np.unique(labels, return_inverse=True), or keras.layers.StringLookup)."
        )
    sparse, ignored = _sparse_categorical(loss)
    outputs = keras.tree.flatten(student_outputs) if student_outputs is not None else []
    if not sparse or len(outputs) != 1 or outputs[0].shape[-1] is None:
        return
    classes, rank = int(outputs[0].shape[-1]), len(outputs[0].shape)
    if labels.ndim == rank and labels.shape[-1] == classes > 1:
        raise ValueError(
            f"The labels have shape {labels.shape}, one-hot rows of the student's {classes} "
            "classes, but the loss is a sparse categorical cross-entropy, which takes class "
            "indices. Pass labels.argmax(-1), or compile with "
            "keras.losses.CategoricalCrossentropy."
        )
    values = labels[labels != ignored] if ignored is not None else labels
    if values.size and (values.min() < 0 or values.max() >= classes):
        bad = values.min() if values.min() < 0 else values.max()
        raise ValueError(
            f"A label is {bad:g}, out of range for the student's {classes} classes (a sparse "
            f"categorical loss takes class indices 0 to {classes - 1}). Check the labels, or "
            "give the student as many outputs as there are classes."
        )


def _pruning_wrappers(model) -> list:
    found = []
    for layer in getattr(model, "layers", None) or []:
        if type(layer).__name__ == PRUNING_WRAPPER:
            found.append(layer)
        found.extend(_pruning_wrappers(layer))
    return found


def check_pruning(student, callbacks, steps: int | None) -> None:
    """Refuses a pruned student without `UpdatePruningStep`; warns if pruning cannot end.

    Args:
        student: The student (tfmot wraps pruned layers in `PruneLowMagnitude`).
        callbacks: `fit`'s callbacks.
        steps: The optimizer steps this `fit` runs, if known.
    """
    wrappers = _pruning_wrappers(student)
    if not wrappers:
        return
    if not any(type(c).__name__ == PRUNING_CALLBACK for c in callbacks or []):
        raise ValueError(
            f"The student {student.name!r} is pruned ({len(wrappers)} PruneLowMagnitude "
            "layers) but fit got no tfmot UpdatePruningStep callback, which pruning needs "
            "at every step. Pass the callbacks that kd.prune "
            "returned: fit(..., callbacks=callbacks)."
        )
    ends = [getattr(getattr(w, "pruning_schedule", None), "end_step", None) for w in wrappers]
    ends = [end for end in ends if isinstance(end, int) and end > 0]
    if steps is not None and ends and max(ends) > steps:
        warnings.warn(
            f"The pruning schedule reaches its target sparsity at step {max(ends)}, but this "
            f"fit runs {steps} steps: the student will be far less sparse than the target. "
            "Pass prune(..., end_step=) at most the steps of training.",
            stacklevel=4,
        )


def fit_steps(x, batch_size, epochs, steps_per_epoch) -> int | None:
    """The number of optimizer steps `fit` will run, when it can be known.

    Example:
    >>> fit_steps(np.zeros((100, 2)), None, 2, None)
    8
    """
    if steps_per_epoch is None:
        if isinstance(x, tf.data.Dataset):
            cardinality = int(x.cardinality())
            steps_per_epoch = cardinality if cardinality > 0 else None
        elif first_batch(x, None) is not None:
            steps_per_epoch = math.ceil(len(keras.tree.flatten(x)[0]) / (batch_size or 32))
    return None if steps_per_epoch is None else steps_per_epoch * (epochs or 1)
