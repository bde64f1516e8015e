"""What a teacher returns: logits, probabilities or log-probabilities, per class or token, how many.

Every path that takes a teacher (`Distiller`, `OnPolicyDistiller`,
`label_with_teacher`, its Beam twin, ensembles, plain callables) reads the
teacher's outputs here, in one order:

1. What the graph shows, when it can be seen: a softmax or log-softmax at the
   end, as a layer, an activation, a Functional model's operation or inside a
   `Lambda` (`model_inspection.probability_outputs`, which every path asks).
2. The first batch's values (`values_kind`): rows of non-negative numbers that
   sum to 1 are probabilities, rows whose log-sum-exp is 0 are
   log-probabilities; NaN or infinite values stop everything, naming the
   teacher (`check_finite`, and `finite_in_graph` inside a compiled step).
3. One wording everywhere, one error type (`TeacherOutputError`): what cannot
   be trained on is refused, what may be misread is warned about, naming the
   setting that fixes it.

The last axis holds the classes (per-class outputs, `(batch, classes)`) or the
vocabulary (per-token outputs, `(batch, length, vocabulary)`); its size is
checked against the student's before the first step (`check_stored_counts`,
`check_vocabularies`).
"""

from __future__ import annotations

import warnings

import numpy as np

from keras_distill._src.utils.model_inspection import (
    LOG_PROBABILITIES,
    LOGITS,
    PROBABILITIES,
)

# How far a row's sum (or log-sum-exp) may be from 1 (0) for float32 and for 16-bit floats.
TOLERANCE = {"float16": 1e-2, "bfloat16": 1e-2}
DEFAULT_TOLERANCE = 1e-3
SHOWN_EXAMPLES = 10


class TeacherOutputError(ValueError):
    """A teacher's outputs cannot be distilled from: NaN/inf, another kind or another size.

    Raised by every path that takes a teacher, before anything is trained on
    or stored; a `ValueError`.

    Example:
    >>> import keras
    >>> import numpy as np
    >>> import keras_distill as kd
    >>> teacher = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    >>> teacher.set_weights([np.full((2, 2), np.nan), np.zeros(2)])
    >>> try:
    ...     kd.label_with_teacher(teacher, np.ones((4, 2), "float32"), "ram://nan", verbose=0)
    ... except kd.teachers.TeacherOutputError as error:
    ...     print(type(error).__name__)
    TeacherOutputError
    """


def teacher_name(teacher) -> str:
    """A model's `name`, a function's `__name__`, else the teacher's type name."""
    for attribute in ("name", "__name__"):
        name = getattr(teacher, attribute, None)
        if isinstance(name, str):
            return name
    return type(teacher).__name__


def _tolerance(values) -> float:
    return TOLERANCE.get(str(getattr(values, "dtype", "")), DEFAULT_TOLERANCE)


def logsumexp(values: np.ndarray, keepdims: bool = False) -> np.ndarray:
    """`log(sum(exp(values)))` over the last axis of a NumPy array, without overflow."""
    peak = values.max(-1, keepdims=True)
    result = peak + np.log(np.exp(values - peak).sum(-1, keepdims=True))
    return result if keepdims else result[..., 0]


def values_kind(values) -> str:
    """What finite values are, row by row along the last axis.

    Rows of non-negative numbers that sum to 1 are probabilities; rows of
    numbers <= 0 whose log-sum-exp is 0 are log-probabilities; anything else
    (and a last axis of one value) is logits.
    """
    tolerance = _tolerance(values)
    values = np.asarray(values)
    if values.ndim == 0 or values.size == 0 or values.shape[-1] < 2:
        return LOGITS
    # Sums in float64; a copy only where the cheap test (the sign) leaves a question.
    if values.min() >= 0 and np.allclose(values.sum(-1, dtype="float64"), 1.0, atol=tolerance):
        return PROBABILITIES
    wide = values.astype("float64") if values.max() <= tolerance else None
    if wide is not None and np.allclose(logsumexp(wide), 0.0, atol=tolerance):
        return LOG_PROBABILITIES
    return LOGITS


def non_finite_message(teacher: str, where: str) -> str:
    """The one wording for a teacher's NaN or infinite outputs (the in-graph check's too).

    Args:
        teacher: The teacher's name.
        where: Which outputs: `"for examples [3, 7]"`, `"in this step"`, ...
    """
    return (
        f"The teacher {teacher!r} produced non-finite outputs: NaN or infinite values {where}. "
        "Nothing was trained on or stored from them; check the teacher and its inputs."
    )


def check_finite(values, teacher: str, start: int = 0, unit: str = "examples") -> None:
    """Raises `TeacherOutputError` naming the teacher and the first rows that are not finite.

    Args:
        values: A batch of outputs, one row per example (or sequence).
        teacher: The teacher's name.
        start: The index of the batch's first row (the rows named count from it).
        unit: What a row is, for the message.
    """
    values = np.asarray(values)
    rows = values.reshape(len(values), -1) if values.ndim else values.reshape(1, 1)
    finite = np.isfinite(rows).all(axis=1)
    if finite.all():
        return
    bad = np.flatnonzero(~finite) + start
    more = f" ({len(bad)} of {len(rows)})" if len(bad) > SHOWN_EXAMPLES else ""
    where = f"for {unit} {bad[:SHOWN_EXAMPLES].tolist()}{more}"
    raise TeacherOutputError(non_finite_message(teacher, where))


def finite_in_graph(outputs, teacher: str):
    """`outputs` (a tensor or structure) as a compiled step reads them: finite, or the step stops.

    Each floating-point tensor passes through `tf.debugging.check_numerics`,
    one kernel that returns its input and raises `InvalidArgumentError` with
    `non_finite_message` at the step where a NaN or inf appears: no reduction,
    `Assert` or control dependency on the step's path. Other tensors pass as they are.
    """
    import keras
    import tensorflow as tf

    message = non_finite_message(teacher, "in this step")

    def checked(output):
        if not output.dtype.is_floating:
            return output
        return tf.debugging.check_numerics(output, message)

    return keras.tree.map_structure(checked, outputs)


def probabilities_message(teacher: str, read_as: str, remedy: str) -> str:
    """The one wording for outputs that look like probabilities but are read as something else."""
    return (
        f"The outputs of the teacher {teacher!r} are non-negative and each row sums to 1: they "
        "look like probabilities (from a softmax its graph does not show: a subclassed model, a "
        f"callable, a softmax written out), but are read as {read_as}. {remedy}"
    )


def _not_probabilities_message(values, teacher: str, setting: str, where: str) -> str:
    sums = values.sum(-1)
    return (
        f"The outputs of the teacher {teacher!r} are read as probabilities, which need "
        f"non-negative values that sum to 1 over the last axis; these range {values.min():.4g}.."
        f"{values.max():.4g} and their rows sum to {sums.min():.4g}..{sums.max():.4g} ({where}). "
        f"Pass {setting}='logits' for unnormalized scores."
    )


def check_values(values, teacher: str, probabilities: bool, setting: str, start: int = 0) -> None:
    """Checks outputs against how they are read: finite, and probabilities exactly when read so.

    Args:
        values: The teacher's outputs (an array or a structure of arrays).
        teacher: The teacher's name.
        probabilities: Whether the outputs are read as probabilities.
        setting: The argument that says so, for the messages
            (`"teacher_output"`, `"output"`).
        start: The index of the first example (the messages count from it).

    Raises:
        TeacherOutputError: For NaN or infinite values, or values read as
            probabilities that are not.

    Warns:
        When values read as logits look like probabilities.
    """
    import keras

    for array in keras.tree.flatten(values):
        check_finite(array, teacher, start)
        kind = values_kind(array)
        if probabilities and kind != PROBABILITIES:
            where = f"examples {start}-{start + len(array) - 1}"
            array = np.asarray(array, "float64")
            raise TeacherOutputError(_not_probabilities_message(array, teacher, setting, where))
        if not probabilities and kind == PROBABILITIES:
            warnings.warn(
                probabilities_message(
                    teacher, "logits", f"Pass {setting}='probabilities' if they are."
                ),
                stacklevel=4,
            )


def checked_log_probabilities(
    values, teacher: str, top_k: bool, start: int = 0, unit: str = "sequences"
) -> np.ndarray:
    """Next-token log-probabilities (or logits) as float32, if finite and not probabilities.

    Args:
        values: `(batch, length, vocabulary)` log-probabilities or logits, or
            the `(batch, length, k)` log-probabilities of a top-k pair.
        teacher: The teacher's name.
        top_k: Whether `values` are the top k of each position (then they must
            be log-probabilities: <= 0, their probabilities summing to at most 1).
        start: The index of the batch's first row (the rows named count from it).
        unit: What a row is, for the message.

    Raises:
        TeacherOutputError: For NaN or infinite values, probabilities, or
            top-k values that are not log-probabilities.
    """
    values = np.asarray(values)
    check_finite(values, teacher, start, unit)
    if not top_k and values_kind(values) == PROBABILITIES:
        raise TeacherOutputError(
            probabilities_message(
                teacher, "log-probabilities", "Return their log (or the logits) instead."
            )
        )
    if top_k:
        _check_top_k_log_probabilities(values, teacher)
    return values.astype("float32")


def _check_top_k_log_probabilities(values: np.ndarray, teacher: str) -> None:
    """Top-k values are log-probabilities: <= 0, their probabilities summing to at most 1."""
    tolerance = _tolerance(values)
    wide = values.astype("float64")
    sums = logsumexp(wide)
    if wide.max() > tolerance or sums.max() > tolerance:
        raise TeacherOutputError(
            f"The top-k values of the teacher {teacher!r} are not log-probabilities: they range "
            f"{wide.min():.4g}..{wide.max():.4g}, and their probabilities sum to up to "
            f"{np.exp(sums).max():.4g} at a position; log-probabilities are <= 0 and "
            "the k largest probabilities sum to at most 1. Return the log of the probabilities."
        )


def check_vocabularies(teacher_size: int | None, student_size: int) -> None:
    """Refuses a teacher whose next-token distribution has another size than the student's."""
    if teacher_size is not None and teacher_size != student_size:
        raise TeacherOutputError(
            f"The teacher's vocabulary has {teacher_size} tokens and the student's "
            f"{student_size}: on-policy distillation compares their next-token distributions "
            "token by token, so both must use the same tokenizer (the same vocabulary)."
        )


def _stored_count(stored: dict, key: str) -> int | None:
    value = stored.get(key)
    return None if value is None or not np.size(value) else int(np.max(np.asarray(value)))


def check_stored_counts(stored: dict, student_outputs: list) -> None:
    """Refuses stored teacher outputs with other classes or a larger vocabulary than the student's.

    Runs on the first batch of stored targets, before the first step.

    Args:
        stored: The `teacher_*` entries of a batch of targets.
        student_outputs: The student's flat symbolic outputs (one output is checked).

    Raises:
        TeacherOutputError: If the manifest's class count (`teacher_classes`)
            or the stored logits' last axis differ from the student's classes,
            a stored top-k index is not one of them, or the stored sequences'
            `vocabulary_size` exceeds the student's vocabulary.
    """
    if len(student_outputs) != 1 or student_outputs[0].shape[-1] is None:
        return
    size = int(student_outputs[0].shape[-1])
    logits = stored.get("teacher_logits")
    classes = _stored_count(stored, "teacher_classes")
    if classes is None and logits is not None and len(np.shape(logits)) > 1:
        classes = int(np.shape(logits)[-1])
    largest = _stored_count(stored, "teacher_topk_indices")
    vocabulary = _stored_count(stored, "teacher_vocabulary_size")
    if classes is not None and classes != size:
        problem = f"are of a teacher with {classes} classes"
    elif largest is not None and largest >= size and vocabulary is None:
        problem = f"name class {largest}"
    elif vocabulary is not None and vocabulary > size:
        problem = f"are sequences of a vocabulary of {vocabulary} tokens (the manifest's)"
    else:
        return
    raise TeacherOutputError(
        f"The stored teacher outputs {problem}, but the student has {size} classes (its last "
        "output axis). Give the student the teacher's classes (or vocabulary), or label with a "
        "teacher of the student's."
    )
