"""The error raised when a model cannot be exported to a microcontroller."""

import re

# What to use instead of layers whose ops TFLite Micro (or the int8 converter) lacks.
HINTS = {
    "GELU": "use activation='relu' (or 'relu6'/'hard_swish') in that layer",
    "TOPK_V2": "sorting and top-k are not TFLM kernels; do them in firmware on the output",
    "Erf": "erf-based activations such as exact GELU are not TFLite builtins; use 'relu'",
    "FlexOps": "replace the layer by standard Dense/Conv2D/pooling/activation layers",
}

# What to use instead of Keras layers (by class) that the int8 converter leaves partly in float.
LAYER_HINTS = {
    "LayerNormalization": "TFLite has no int8 layer normalization (its arithmetic stays float); "
    "use BatchNormalization, which the converter folds into the layer before it, or none",
}


class MicroExportError(ValueError):
    """A model, its data or its budget does not allow a TFLite Micro export.

    The message says what was wrong and what to do instead. No file has been
    written when it is raised.

    Example:
    >>> try:
    ...     raise MicroExportError("arena 300 KB > RAM 256 KB")
    ... except ValueError as error:
    ...     print(error)
    arena 300 KB > RAM 256 KB
    """


def layers_mentioned(text: str, layer_names) -> list[str]:
    """The Keras layer names that occur as a path component in a tensor or op name.

    Traced names carry a `_1`-style suffix (`sequential_1/dense_1/MatMul`), which
    is allowed.

    Args:
        text: A TFLite tensor name or converter message.
        layer_names: Names of the model's layers.

    Returns:
        The sorted names found.

    Example:
    >>> layers_mentioned("functional_1/fancy_1/Gelu/mul", ["fancy", "dense"])
    ['fancy']
    """
    return sorted(
        {name for name in layer_names if re.search(rf"(^|/){re.escape(name)}(_\d+)?/", text)}
    )
