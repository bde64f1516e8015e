"""Identifying teachers whose insides are not known: fingerprints and output probes.

A Keras teacher is identified by its weights; any other callable (a black
box, e.g. a remote model behind an API) by the `teacher_id` its user gives,
a `teacher_id` attribute (`keras_distill._src.teachers.generation.keras_generator`
sets one), its name, and by what it answers on the first examples
(`outputs_digest`).
"""

from __future__ import annotations

import hashlib

import numpy as np

from keras_distill._src.utils.model_inspection import weights_digest

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
    if hasattr(
        teacher, "teacher_id"
    ):  # e.g. keras_distill._src.teachers.generation.keras_generator's
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
    return fingerprint_chunks(*(None if a is None else (a.shape, a.dtype, [a]) for a in arrays))


def fingerprint_chunks(*arrays) -> str:
    """`fingerprint_arrays` of arrays read in consecutive chunks along their first axis.

    For data too large to hold at once (streamed, or staged shard by shard):
    the same examples give the same fingerprint in one piece or in chunks.

    Args:
        *arrays: For each array, None (skipped) or `(shape, dtype, chunks)`:
            the whole array's shape and dtype, and an iterable of its chunks.

    Example:
    >>> x = np.arange(6.0).reshape(3, 2)
    >>> fingerprint_chunks((x.shape, x.dtype, [x[:2], x[2:]])) == fingerprint_arrays(x)
    True
    """
    digest = hashlib.sha256()
    for array in arrays:
        if array is not None:
            shape, dtype, chunks = array
            digest.update(str((tuple(shape), np.dtype(dtype))).encode())
            for chunk in chunks:
                digest.update(np.ascontiguousarray(chunk).tobytes())
    return digest.hexdigest()[:16]
