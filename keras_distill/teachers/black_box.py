"""Identifying teachers whose insides are not known: fingerprints and output probes.

A Keras teacher is identified by its weights; any other callable (a black
box, e.g. a remote model behind an API) by the `teacher_id` its user gives,
a `teacher_id` attribute (`keras_distill.teachers.generation.keras_generator`
sets one), its name, and by what it answers on the first examples
(`outputs_digest`).
"""

from __future__ import annotations

import hashlib

import numpy as np

from keras_distill.utils.model_inspection import weights_digest

PROBE_EXAMPLES = 8  # a callable teacher's outputs on these first examples identify it


def fingerprint_teacher(teacher, teacher_id: str | None) -> str:
    """What a manifest records of a teacher: its id, its weights, or its name.

    Args:
        teacher: A `keras.Model` or a callable.
        teacher_id: The user's name for the teacher's version, or None.

    Returns:
        `"id:<teacher_id>"`, `"keras:<name>:<weights digest>"` or `"callable:<module.name>"`.

    Example:
    >>> fingerprint_teacher(len, "api-v1")
    'id:api-v1'
    """
    import keras

    if teacher_id is not None:
        return f"id:{teacher_id}"
    if isinstance(teacher, keras.Model):
        return f"keras:{teacher.name}:{weights_digest(teacher)}"
    if hasattr(teacher, "teacher_id"):  # e.g. keras_distill.teachers.generation.keras_generator's
        return f"id:{teacher.teacher_id}"
    name = getattr(teacher, "__qualname__", type(teacher).__qualname__)
    return f"callable:{getattr(teacher, '__module__', '')}.{name}"


def outputs_digest(outputs: np.ndarray) -> str:
    """A hash of a teacher's outputs (floats rounded to 4 decimals): what it answers.

    Example:
    >>> outputs_digest(np.zeros((2, 3))) == outputs_digest(np.full((2, 3), 1e-6))
    True
    """
    outputs = np.asarray(outputs)
    values = np.round(outputs.astype("float64"), 4) if outputs.dtype.kind == "f" else outputs
    return hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()[:16]


def fingerprint_arrays(*arrays) -> str:
    """A hash of arrays' shapes, dtypes and bytes (None skipped): the data's fingerprint.

    Example:
    >>> fingerprint_arrays(np.zeros(2)) == fingerprint_arrays(np.zeros(2), None)
    True
    """
    digest = hashlib.sha256()
    for array in arrays:
        if array is not None:
            digest.update(str((array.shape, array.dtype)).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]
