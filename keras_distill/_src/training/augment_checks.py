"""Checks on a `Distiller`'s `augment`: at construction, at `fit` start and in the step.

An augmentation runs inside the compiled training step, so what it does in
Python (NumPy or `random` calls) happens once, when the step is traced: its
"random" values become constants. These checks catch that, and views whose
structure, shape or dtype differ from the batch's.
"""

from __future__ import annotations

import inspect
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_distill._src.utils.model_inspection import same_structure

# Layers that read a rank-3 batch (batch, length, channels) as one image (height, width, channels).
IMAGE_LAYERS = ("RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomCrop")


def name_of(augment) -> str:
    """The augmentation's name for messages.

    Example:
    >>> def jitter(x, training):
    ...     return x
    >>> name_of(jitter)
    'jitter'
    """
    return getattr(augment, "name", None) or getattr(augment, "__name__", repr(augment))


def check_augment(augment, teacher) -> None:
    """Raises unless `augment` is None, or callable with a live teacher."""
    if augment is None:
        return
    if not callable(augment):
        raise TypeError(
            "`augment` must be a Keras layer (e.g. a keras.Sequential of preprocessing layers) "
            f"or a callable fn(x, training) -> x or fn(x) -> x; received {augment!r}."
        )
    if teacher is None:
        raise ValueError(
            "`augment` needs a live teacher: stored teacher outputs (teacher=None) describe "
            "the inputs they were computed on, not the augmented views the student would see, "
            "so they would teach the wrong targets. Pass the teacher model, or drop `augment`."
        )


def takes_training(augment) -> bool:
    """Whether `augment` takes a `training` argument (Keras layers do; `fn(x)` does not).

    Example:
    >>> takes_training(lambda x, training: x), takes_training(lambda x: x)
    (True, False)
    """
    if isinstance(augment, keras.layers.Layer):
        return True
    try:
        parameters = inspect.signature(augment).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a builtin): try it with the argument
        return True
    return any(p.name == "training" or p.kind is p.VAR_KEYWORD for p in parameters)


def apply(augment, x):
    """`augment(x, training=True)`, or `augment(x)` for a function without `training`.

    Example:
    >>> float(apply(lambda v: v + 1.0, tf.zeros(())))
    1.0
    """
    return augment(x, training=True) if takes_training(augment) else augment(x)


def _layers_of(augment) -> list:
    layers = [augment]
    for layer in getattr(augment, "layers", None) or []:
        layers.extend(_layers_of(layer))
    return layers


def warn_image_layers_on_signals(augment, student) -> None:
    """Warns when an image layer would treat a `(batch, length, channels)` batch as one image.

    Example:
    >>> student = keras.Sequential([keras.Input((8, 1)), keras.layers.Flatten()])
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_image_layers_on_signals(keras.layers.RandomFlip(), student)
    >>> "one image" in str(caught[0].message)
    True
    """
    if augment is None:
        return
    try:
        inputs = keras.tree.flatten(student.inputs or [])
    except (AttributeError, ValueError):
        return
    if len(inputs) != 1 or len(inputs[0].shape) != 3:
        return
    found = [type(layer).__name__ for layer in _layers_of(augment)]
    found = [name for name in found if name in IMAGE_LAYERS]
    if found:
        warnings.warn(
            f"`augment` holds {found}, image layers, but the student's batches have shape "
            f"{tuple(inputs[0].shape)} (batch, length, channels): such a layer reads a rank-3 "
            "batch as one image and transforms the whole batch as one image. Use layers "
            "written for signals (e.g. kd.augment.RandomShift1D), or "
            "reshape the batch to (batch, height, width, channels).",
            stacklevel=5,
        )


def _shape_changed(old: tuple, new: tuple) -> bool:
    return len(old) != len(new) or any(
        a is not None and b is not None and a != b for a, b in zip(old, new, strict=True)
    )


def _check_leaf(before, after, name: str) -> None:
    if not (tf.is_tensor(after) or isinstance(after, keras.KerasTensor)):
        raise ValueError(
            f"`augment` ({name}) returned a {type(after).__name__}, not a tensor; it must "
            "return a batch of the same shape as its input."
        )
    old, new = tuple(before.shape), tuple(after.shape)
    if _shape_changed(old, new):
        raise ValueError(
            f"`augment` ({name}) changed the batch shape from {old} to {new}; it must keep "
            "the batch size and the input shape (both models see the same view)."
        )
    if keras.backend.standardize_dtype(before.dtype) != keras.backend.standardize_dtype(
        after.dtype
    ):
        raise ValueError(
            f"`augment` ({name}) changed the dtype from {before.dtype.name} to "
            f"{after.dtype.name}; it must return the batch's dtype (cast inside it if needed)."
        )
    if old[0] is None or new[0] is None:
        tf.debugging.assert_equal(
            tf.shape(after)[0],
            tf.shape(before)[0],
            message=f"`augment` ({name}) changed the batch size",
        )


def checked_view(view, x, augment):
    """The augmented batch, if it has the structure, type, shape and dtype of the inputs.

    Example:
    >>> x = tf.zeros((2, 3))
    >>> checked_view(x + 1.0, x, lambda v, training: v + 1.0).shape
    TensorShape([2, 3])
    """
    name = name_of(augment)
    if not same_structure(view, x):
        raise ValueError(
            f"`augment` ({name}) returned {type(view).__name__} for inputs of structure "
            f"{type(x).__name__}; it must return the same structure of tensors."
        )
    for before, after in zip(keras.tree.flatten(x), keras.tree.flatten(view), strict=True):
        _check_leaf(before, after, name)
    return view


def _same(a, b) -> bool:
    return all(
        np.array_equal(np.asarray(u), np.asarray(v))
        for u, v in zip(keras.tree.flatten(a), keras.tree.flatten(b), strict=True)
    )


def check_not_frozen(augment, x) -> None:
    """Raises if `augment` is random when called eagerly but constant once traced.

    Python and NumPy randomness runs once, when the training step is traced:
    the "random" values are then the same at every step. Called at `fit`
    start on the first batch `x`, for callables that are not Keras layers.

    Example:
    >>> def noise(v, training):
    ...     return v + np.random.normal(size=v.shape).astype("float32")
    >>> try:
    ...     check_not_frozen(noise, np.zeros((2, 3), "float32"))
    ... except ValueError as error:
    ...     print("keras.random" in str(error))
    True
    """
    if augment is None or isinstance(augment, keras.layers.Layer):
        return
    x = keras.tree.map_structure(tf.convert_to_tensor, x)
    eager = [apply(augment, x) for _ in range(2)]
    traced = tf.function(lambda batch: apply(augment, batch))
    graph = [traced(x) for _ in range(2)]
    if not _same(*eager) and _same(*graph):
        raise ValueError(
            f"`augment` ({name_of(augment)}) gives a new result at every eager call but the "
            "same one at every call of the compiled step: it draws its randomness in Python "
            "or NumPy (e.g. np.random), which runs once, when the step is traced, so every "
            "batch would get the same 'noise'. Draw it with keras.random and a "
            "keras.random.SeedGenerator (e.g. keras.random.normal(shape, seed=generator)), "
            "or use a Keras preprocessing layer."
        )
