"""The TFLite interpreter: LiteRT's when `ai-edge-litert` is installed, else TensorFlow's.

`tf.lite.Interpreter` is deprecated in TensorFlow 2.20+ in favour of LiteRT
(`ai_edge_litert.interpreter.Interpreter`, the same API). keras-distill uses
LiteRT when it is installed (the `[micro]` extra installs it) and otherwise
falls back to TensorFlow's interpreter without passing its deprecation
warning on to the user.
"""

from __future__ import annotations

import warnings


def tflite_interpreter(model_bytes: bytes, num_threads: int | None = None):
    """A TFLite interpreter for a flatbuffer (tensors not allocated yet).

    Args:
        model_bytes: The `.tflite` model.
        num_threads: Interpreter threads, or None for the default.

    Returns:
        An `ai_edge_litert.interpreter.Interpreter` if LiteRT is installed,
        else a `tf.lite.Interpreter`.

    Example:
    >>> import keras, numpy as np
    >>> from keras_distill._src.micro.convert import to_int8_tflite
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> interpreter = tflite_interpreter(to_int8_tflite(model, np.random.rand(8, 4)))
    >>> interpreter.allocate_tensors()
    >>> interpreter.get_input_details()[0]["dtype"].__name__
    'int8'
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        with warnings.catch_warnings():  # the deprecation notice pointing at LiteRT
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
            return tf.lite.Interpreter(model_content=model_bytes, num_threads=num_threads)
    return Interpreter(model_content=model_bytes, num_threads=num_threads)


def backend() -> str:
    """Which interpreter `tflite_interpreter` returns: "LiteRT" or "tf.lite"."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return "tf.lite"
    return "LiteRT"
