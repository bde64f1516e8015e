"""Refusing a model that is not fully integer, with what made it float and what to do.

TFLite Micro deployments assume int8 kernels (size, arena, speed); `export`
promises a fully integer model and never writes a float one. A `.tflite`
given as it is cannot be re-quantized without the model it was converted
from; a conversion that fell back to float names the layers it kept in float.
"""

from __future__ import annotations

import os

from keras_distill._src.micro.errors import HINTS, LAYER_HINTS, MicroExportError, layers_mentioned
from keras_distill._src.micro.model_info import QUANTIZED_TYPES, ModelInfo
from keras_distill._src.micro.model_loading import sublayers

_NAMED = 5  # float tensors named in a message at most


def check_fully_integer(info: ModelInfo, float_io: bool, keras_model, source) -> None:
    """Refuses a model with float tensors inside its graph (or float I/O not asked for).

    Args:
        info: The `inspect_model` result of the model to export.
        float_io: Whether float32 input and output were asked for (converted
            models only; a given `.tflite` keeps its own input and output).
        keras_model: The Keras model it was converted from, or None for a
            `.tflite` given as it is.
        source: What the user passed as the model (a path names it in the message).

    Raises:
        MicroExportError: For a float or partly float `.tflite` (with what to
            pass instead), or a conversion that left float tensors (with the
            layers they come from and a hint for each).

    Example:
    >>> float_model = ModelInfo(("FULLY_CONNECTED",), {}, (), (), compute_types=("float32",))
    >>> check_fully_integer(float_model, False, None, "float.tflite")
    Traceback (most recent call last):
    ...
    keras_distill._src.micro.errors.MicroExportError: 'float.tflite' holds a float32 TFLite ...
    """
    if keras_model is None:
        if not info.fully_integer:
            raise MicroExportError(_float_tflite_message(info, source))
        return
    boundary = [
        f"{kind} {i} ({t.dtype})"
        for kind, tensors in (("input", info.inputs), ("output", info.outputs))
        for i, t in enumerate(tensors)
        if t.dtype != "int8" and not float_io
    ]
    if not info.fully_integer or boundary:
        raise MicroExportError(fallback_message(info, boundary, keras_model))


def _named(tensors) -> str:
    more = len(tensors) - _NAMED
    return ", ".join(tensors[:_NAMED]) + (f" and {more} more" if more > 0 else "")


def _float_tflite_message(info: ModelInfo, source) -> str:
    given = (
        f"{os.fspath(source)!r} holds"
        if isinstance(source, (str, os.PathLike))
        else "The .tflite bytes given hold"
    )
    return (
        f"{given} a {info.kind} TFLite model, not a fully integer one. TFLite Micro export "
        "makes int8 models only, and a .tflite model cannot be re-quantized without the model "
        "it was converted from: pass that model instead (the keras.Model, its .keras file or "
        "its SavedModel folder) with `representative_data`, and kd.micro.export converts it to "
        "int8. Nothing was written."
    )


def fallback_message(info: ModelInfo, boundary: list, keras_model) -> str:
    """The refusal of a conversion left partly float: its float tensors, their layers, hints.

    Args:
        info: The converted model's `inspect_model` result.
        boundary: Its float inputs and outputs not asked for, in words.
        keras_model: The Keras model it was converted from (its layers are named).

    Returns:
        The message, ending with "Nothing was written."
    """
    partly_quantized = any(t in QUANTIZED_TYPES for t in info.compute_types)
    layers = _float_layers(info.float_tensors, keras_model) if partly_quantized else {}
    named = _named(boundary + list(info.float_tensors)) or "none inside"
    if not layers:
        return (
            f"The converted model is {info.kind}, not fully integer: float tensors {named}. "
            "The converter "
            "fell back to float, e.g. for representative data without a usable range; check "
            "the data, or the layers these tensors come from. Nothing was written."
        )
    hints = "; ".join(
        f"{name}: {LAYER_HINTS.get(kind, HINTS['FlexOps'])}" for name, kind in layers.items()
    )
    described = ", ".join(f"{name} ({kind})" for name, kind in layers.items())
    return (
        f"The converted model is not fully integer: TFLite's int8 converter kept layer"
        f"{'s' if len(layers) > 1 else ''} {described} in float (float tensors {named}). "
        f"Hint: {hints}. Nothing was written."
    )


def _float_layers(tensors, keras_model) -> dict:
    """Name -> class of the innermost layers that the float tensors come from."""
    classes = {
        layer.name: type(layer).__name__
        for layer in sublayers(keras_model)
        if layer is not keras_model and not hasattr(layer, "layers")  # not a nested model
    }
    found = sorted({name for tensor in tensors for name in layers_mentioned(tensor, classes)})
    return {name: classes[name] for name in found}
