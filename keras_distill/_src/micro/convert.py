"""Fully integer TFLite conversion of a Keras model for TFLite Micro."""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import warnings

import numpy as np

from keras_distill._src.micro.errors import HINTS, MicroExportError, layers_mentioned
from keras_distill._src.utils import inputs
from keras_distill._src.utils.model_inspection import is_tf_keras

DEFAULT_NUM_SAMPLES = 200


def representative_samples(
    data, input_shape: tuple, num_samples: int = DEFAULT_NUM_SAMPLES
) -> np.ndarray:
    """Takes up to `num_samples` float32 inputs from arrays or a `tf.data` dataset.

    Dataset elements may be `x` or `(x, y, ...)`, batched or not.

    Args:
        data: A NumPy array of inputs (or nested lists of numbers), or a
            `tf.data.Dataset`.
        input_shape: The model's input shape without the batch axis.
        num_samples: How many examples to take at most.

    Returns:
        Float32 array of shape `(n, *input_shape)`, `1 <= n <= num_samples`.

    Raises:
        MicroExportError: If the data is empty, not numbers, or its shape does
            not match.

    Example:
    >>> representative_samples(np.zeros((500, 4)), (4,)).shape
    (200, 4)
    """
    try:
        samples, _ = inputs.collect(
            as_array_if_numbers(data), example_rank=len(input_shape), limit=num_samples
        )
        samples = samples.astype("float32")
    except (TypeError, ValueError) as error:
        raise MicroExportError(
            f"The representative data ({type(data).__name__}) cannot be read as examples of "
            f"numbers ({error}); give an array of shape (examples, *{tuple(input_shape)}), "
            "nested lists of numbers, or a tf.data.Dataset of x or (x, y)."
        ) from None
    if samples.size == 0:
        raise MicroExportError(
            "The representative data is empty; give at least one (ideally a few hundred) "
            "typical inputs so that the int8 ranges can be calibrated."
        )
    if not np.isfinite(samples).all():
        bad = int((~np.isfinite(samples.reshape(len(samples), -1))).any(-1).sum())
        raise MicroExportError(
            f"The representative data holds NaN or infinite values ({bad} of {len(samples)} "
            "examples); int8 ranges cannot be calibrated on them. Clean the data first."
        )
    expected = tuple(input_shape)
    if samples.ndim == len(expected):  # a single example without batch axis
        samples = samples[None]
    got = tuple(samples.shape[1:])
    if len(got) != len(expected) or any(
        e is not None and e != g for e, g in zip(expected, got, strict=True)
    ):
        raise MicroExportError(
            f"The representative data has examples of shape {got}, but the model expects "
            f"inputs of shape {expected} (without the batch axis)."
        )
    return samples


def as_array_if_numbers(data):
    """Nested lists of numbers (e.g. a list of examples) as one array; other data unchanged.

    A list of `(x, y)` elements, or of batches of different sizes, is still
    read element by element.

    Example:
    >>> as_array_if_numbers([[0.5, 1.0], [0.0, 2.0]]).shape
    (2, 2)
    """
    if not isinstance(data, list):
        return data
    try:
        array = np.asarray(data)
    except (ValueError, TypeError):  # ragged: elements or batches, read one by one
        return data
    return array if array.dtype.kind in "biuf" else data


def to_int8_tflite(
    model, samples: np.ndarray, float_io: bool = False, batch_size: int | None = 1
) -> bytes:
    """Converts a Keras model to a fully integer (int8) TFLite flatbuffer.

    Weights and activations are int8; the input and output are int8 too unless
    `float_io=True`, in which case the model quantizes and dequantizes them.
    Only TFLite builtin int8 kernels are allowed, which is what TFLite Micro runs,
    and the batch size is fixed to one by default, as on a device.

    Args:
        model: A Keras 3 or tf_keras model with a single input.
        samples: Representative inputs (see `representative_samples`); may be
            `None` for a quantization-aware (tfmot) model.
        float_io: Keep float32 input and output.
        batch_size: Fixed batch size, or `None` for a resizable batch axis (for
            batched TFLite interpreter runs; adds shape ops TFLM users avoid).

    Returns:
        The `.tflite` model bytes.

    Raises:
        MicroExportError: If the converter cannot express the model with TFLite
            builtin int8 kernels; the message names the ops and layers.

    Example:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> tflite = to_int8_tflite(model, np.random.rand(20, 4).astype("float32"))
    >>> tflite[4:8]
    b'TFL3'
    """
    converter = int8_converter(model, samples, float_io, batch_size)
    try:
        with quiet_conversion():
            return converter.convert()
    except Exception as error:  # the converter raises several private error types
        raise MicroExportError(_explain_conversion_error(str(error), model)) from None


def int8_converter(model, samples, float_io: bool = False, batch_size: int | None = 1):
    """The `tf.lite.TFLiteConverter` that `to_int8_tflite` runs (for debuggers, too).

    Example:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> int8_converter(model, np.zeros((2, 4))).inference_input_type.name
    'int8'
    """
    import tensorflow as tf

    # a tf_keras model (e.g. a tensorflow-model-optimization student) is wrapped with tf_keras
    flavour = importlib.import_module("tf_keras" if is_tf_keras(model) else "keras")
    # A fixed batch of one, as on the device: no dynamic-shape ops (SHAPE,
    # STRIDED_SLICE, PACK) around reshapes such as Flatten. Fixed names for the
    # wrapper and its input: the flatbuffer stores tensor names, and Keras'
    # automatic ones grow longer with the models the process made before.
    shape = tuple(model.inputs[0].shape[1:])
    inputs = flavour.Input(shape, batch_size=batch_size, name="input")
    wrapper = flavour.Model(inputs, model(inputs), name="int8")
    converter = tf.lite.TFLiteConverter.from_keras_model(wrapper)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if samples is not None:
        samples = np.asarray(samples, dtype="float32")
        converter.representative_dataset = lambda: (
            [samples[i : i + 1]] for i in range(len(samples))
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    # else: a quantization-aware model carries its own ranges; the converter then
    # refuses the INT8-only op set, and the TFLM check catches any float op left.
    if not float_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter


@contextlib.contextmanager
def quiet_conversion():
    """Silences what the converter prints and warns that is not news to the user.

    Example:
    >>> with quiet_conversion():
    ...     print("Saved artifact at /tmp/x")
    """
    import tensorflow as tf

    logger, level = tf.get_logger(), tf.get_logger().level
    logger.setLevel("ERROR")  # "Assets written to ..." is not news to the user
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            # The converter prints its SavedModel and warns about input statistics
            # that the representative dataset provides.
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
            yield
    finally:
        logger.setLevel(level)


def _explain_conversion_error(message: str, model) -> str:
    ops = sorted(set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", message)))
    layers = layers_mentioned(message, [layer.name for layer in getattr(model, "layers", [])])
    if not ops:
        first_line = message.strip().splitlines()[0] if message.strip() else "unknown error"
        return f"TFLite int8 conversion failed: {first_line}"
    hints = "; ".join(f"{op}: {HINTS.get(op, HINTS['FlexOps'])}" for op in ops)
    return (
        f"The model uses TensorFlow ops that TFLite Micro cannot run: {', '.join(ops)}"
        f" (in layer{'s' if len(layers) != 1 else ''} {', '.join(layers) or 'unknown'}). "
        f"Hint: {hints}."
    )
