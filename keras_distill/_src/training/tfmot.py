"""Quantization-aware and pruned students with tensorflow-model-optimization (tfmot).

tfmot 0.8 wraps tf_keras (Keras 2) models only. Set `TF_USE_LEGACY_KERAS=1`
before TensorFlow is imported (so that `tf.keras` is tf_keras), build teacher
and student with `tf.keras`, wrap the student with these helpers, and distil as
usual: `Distiller(teacher, student)` detects the tf_keras models.
"""

from __future__ import annotations

from keras_distill._src.utils import model_inspection

_LEGACY_HINT = (
    "tensorflow-model-optimization 0.8 only wraps tf_keras (Keras 2) models. Set "
    "TF_USE_LEGACY_KERAS=1 before TensorFlow is imported (for example "
    "`os.environ['TF_USE_LEGACY_KERAS'] = '1'` as the first line of your script, or "
    "`TF_USE_LEGACY_KERAS=1 python train.py`), then build the student with tf.keras, "
    "which is then tf_keras."
)


def require_legacy_keras(model=None) -> None:
    """Raises a clear error unless tfmot can work here (and on `model`).

    Args:
        model: Optionally, the model about to be wrapped.

    Raises:
        RuntimeError: If `tf.keras` is not tf_keras (TF_USE_LEGACY_KERAS unset).
        TypeError: If `model` is a Keras 3 model.

    Example:
    >>> import keras
    >>> require_legacy_keras(keras.Sequential())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    RuntimeError: tensorflow-model-optimization 0.8 only wraps tf_keras (Keras 2) models...
    """
    import tensorflow as tf

    if not tf.keras.__name__.startswith("tf_keras"):
        raise RuntimeError(f"{_LEGACY_HINT} Here tf.keras is {tf.keras.__name__}.")
    if model is not None and not model_inspection.is_tf_keras(model):
        raise TypeError(
            f"{_LEGACY_HINT} This model is a Keras 3 {type(model).__name__}; rebuild it with "
            "tf.keras."
        )


def quantization_aware(student):
    """Wraps a tf_keras student for quantization-aware training (int8 fake-quant).

    Args:
        student: A tf_keras Sequential or Functional model.

    Returns:
        The `tfmot.quantization.keras.quantize_model` model, to distil into.

    Raises:
        RuntimeError, TypeError: See `require_legacy_keras`.
    """
    require_legacy_keras(student)
    import tensorflow_model_optimization as tfmot

    return tfmot.quantization.keras.quantize_model(student)


def prune(
    student, target_sparsity: float, end_step: int, *, begin_step: int = 0, frequency: int = 50
):
    """Wraps a tf_keras student for magnitude pruning up to `target_sparsity`.

    The sparsity grows polynomially from 0 at `begin_step` to `target_sparsity`
    at `end_step` (optimizer steps). Pass the returned callbacks to `fit`
    (tfmot's `UpdatePruningStep`), next to `TemperatureScheduler` if you like.

    Args:
        student: A tf_keras Sequential or Functional model.
        target_sparsity: Final fraction of zero weights, in (0, 1).
        end_step: Step at which the target is reached.
        begin_step: Step at which pruning starts.
        frequency: Steps between pruning updates.

    Returns:
        `(pruned_student, callbacks)`.

    Raises:
        ValueError: If `target_sparsity` is not in (0, 1) or the steps are inconsistent.
        RuntimeError, TypeError: See `require_legacy_keras`.

    Example:
    >>> pruned, callbacks = prune(student, 0.8, end_step=1000)  # doctest: +SKIP
    """
    if not 0.0 < target_sparsity < 1.0:
        raise ValueError(f"`target_sparsity` must be in (0, 1); received {target_sparsity!r}.")
    if not 0 <= begin_step < end_step:
        raise ValueError(
            f"Need 0 <= begin_step < end_step; received begin_step={begin_step}, "
            f"end_step={end_step}."
        )
    require_legacy_keras(student)
    import tensorflow_model_optimization as tfmot

    schedule = tfmot.sparsity.keras.PolynomialDecay(
        0.0, target_sparsity, begin_step=begin_step, end_step=end_step, frequency=frequency
    )
    pruned = tfmot.sparsity.keras.prune_low_magnitude(student, pruning_schedule=schedule)
    return pruned, [tfmot.sparsity.keras.UpdatePruningStep()]


def strip(model):
    """Removes pruning wrappers (QAT models are exported as they are).

    Example:
    >>> exportable = strip(pruned_student)  # doctest: +SKIP
    """
    require_legacy_keras(model)
    import tensorflow_model_optimization as tfmot

    return tfmot.sparsity.keras.strip_pruning(model)


# Kernel sparsity is a property of any model; it lives with the model helpers.
sparsity = model_inspection.sparsity
