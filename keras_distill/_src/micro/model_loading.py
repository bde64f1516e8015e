"""What `export` accepts as a model, and the model kinds it must refuse or treat apart.

A Keras model (Keras 3 or tf_keras), a `.keras`/`.h5`/`.tflite` path, a
SavedModel folder (wrapped in a Keras model around its serving signature), or
`.tflite` bytes. A distiller is refused with the student to export named; a
model still wrapped for pruning is refused with the call that strips it. Both
are recognised by what they hold (duck typing), as `micro` imports nothing of
the training package.
"""

from __future__ import annotations

import os
import pathlib

from keras_distill._src.micro.errors import MicroExportError
from keras_distill._src.utils import model_inspection

PRUNING_WRAPPER = "PruneLowMagnitude"  # tensorflow-model-optimization's pruning wrapper class
FAKE_QUANT_OP = "FakeQuantWithMinMax"  # TensorFlow's fake-quantization op types start so


def load_model(model) -> tuple:
    """`(Keras model or None, .tflite bytes or None)` of what `export` was given.

    Raises:
        MicroExportError: For a distiller (export its student), a missing or
            unreadable file, a SavedModel whose serving signature does not take
            one input and return one output, or another type.

    Example:
    >>> load_model(b"TFL3")
    (None, b'TFL3')
    >>> class Distiller:
    ...     teacher, student = object(), object()
    >>> load_model(Distiller())
    Traceback (most recent call last):
    ...
    keras_distill._src.micro.errors.MicroExportError: This is a distiller ...
    """
    import keras

    if hasattr(model, "student") and hasattr(model, "teacher"):
        raise MicroExportError(
            f"This is a distiller ({type(model).__name__}), which holds a teacher and a student; "
            "export the model that goes on the device: `micro.export(distiller.student, ...)`."
        )
    if isinstance(model, keras.Model) or model_inspection.is_tf_keras(model):
        return model, None
    if isinstance(model, (bytes, bytearray)):
        return None, bytes(model)
    if isinstance(model, (str, os.PathLike)):
        return _load_file(pathlib.Path(model))
    raise MicroExportError(
        f"`model` must be a keras.Model, a .keras/.tflite path, a SavedModel folder or "
        f".tflite bytes; received "
        f"{type(model).__name__}."
    )


def _load_file(path: pathlib.Path) -> tuple:
    import keras

    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise MicroExportError(
                f"{str(path)!r} is a folder without saved_model.pb; give a SavedModel folder, "
                "a .keras file or a .tflite file."
            )
        return _load_saved_model(path), None
    if not path.is_file():
        raise MicroExportError(f"No model file at {str(path)!r}.")
    if path.suffix == ".tflite":
        return None, path.read_bytes()
    if path.suffix in (".keras", ".h5"):
        try:
            return keras.models.load_model(path, compile=False), None
        except Exception as error:  # Keras raises many types for a bad file
            raise MicroExportError(
                f"{str(path)!r} is not a loadable Keras model: {error}"
            ) from None
    raise MicroExportError(
        f"{str(path)!r} is neither a .keras nor a .tflite file; give a Keras model, a "
        ".keras file, a SavedModel folder or a .tflite file."
    )


def _load_saved_model(path: pathlib.Path):
    """A Keras model around a SavedModel's `serving_default` signature (one input, one output)."""
    import keras
    import tensorflow as tf

    try:
        signatures = tf.saved_model.load(str(path)).signatures
    except Exception as error:  # TensorFlow raises many types for a bad SavedModel
        raise MicroExportError(f"{str(path)!r} is not a loadable SavedModel: {error}") from None
    signature = signatures.get("serving_default")
    if signature is None:
        raise MicroExportError(
            f"The SavedModel {str(path)!r} has no 'serving_default' signature (it has "
            f"{sorted(signatures)}); save it with keras.Model.export(path), which adds one."
        )
    specs = signature.structured_input_signature[1]
    outputs = signature.structured_outputs
    if len(specs) != 1 or (isinstance(outputs, dict) and len(outputs) != 1):
        raise MicroExportError(
            f"Only single-input, single-output models can be exported; the SavedModel "
            f"{str(path)!r} takes {sorted(specs)} and returns "
            f"{sorted(outputs) if isinstance(outputs, dict) else outputs}."
        )
    (spec,) = specs.values()
    inputs = keras.Input(shape=tuple(spec.shape[1:]), dtype=spec.dtype.name)
    output = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")(inputs)
    output = next(iter(output.values())) if isinstance(output, dict) else output
    return keras.Model(inputs, output, name=path.name)


def check_no_pruning_wrappers(model) -> None:
    """Refuses a pruned model that still holds its pruning wrappers.

    Raises:
        MicroExportError: Naming the wrapped layers and the call that strips them.

    Example:
    >>> import keras
    >>> class PruneLowMagnitude(keras.layers.Wrapper):  # tfmot's wrapper, by its class name
    ...     def call(self, x):
    ...         return self.layer(x)
    >>> model = keras.Sequential([keras.Input((4,)),
    ...                           PruneLowMagnitude(keras.layers.Dense(2), name="pruned")])
    >>> check_no_pruning_wrappers(model)
    Traceback (most recent call last):
    ...
    keras_distill._src.micro.errors.MicroExportError: The model still holds pruning wrappers ...
    """
    wrapped = [layer.name for layer in model.layers if type(layer).__name__ == PRUNING_WRAPPER]
    if wrapped:
        raise MicroExportError(
            f"The model still holds pruning wrappers ({PRUNING_WRAPPER} around layer"
            f"{'s' if len(wrapped) > 1 else ''} {', '.join(wrapped)}), which TFLite cannot "
            "convert. Strip them first: `kd.strip(model)` (tfmot's "
            "`strip_pruning`), then export the stripped model. Nothing was written."
        )


def quantization_aware(model) -> bool:
    """Whether a model carries its own int8 ranges, so that it converts without calibration data.

    A tfmot quantization-aware model (its `Quantize*` wrapper layers), or a
    model whose graph holds fake-quantization ops
    (`keras.quantizers.fake_quant_with_min_max_vars`, TensorFlow's
    `FakeQuantWithMinMaxVars*`), which the converter turns into int8 ranges.

    Example:
    >>> import keras
    >>> quantization_aware(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
    False
    >>> fake_quant = keras.layers.Lambda(
    ...     lambda x: keras.quantizers.fake_quant_with_min_max_vars(x, 0.0, 1.0))
    >>> quantization_aware(keras.Sequential([keras.Input((2,)), fake_quant]))
    True
    """
    if any(type(layer).__name__.startswith("Quantize") for layer in model.layers):
        return True
    return bool(fake_quant_ops(model))


def fake_quant_ops(model) -> list[str]:
    """Names of the fake-quantization ops in a single-input model's graph (batch of one).

    Example:
    >>> import keras
    >>> fake_quant_ops(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
    []
    """
    import tensorflow as tf

    spec = tf.TensorSpec((1, *model.inputs[0].shape[1:]), model.inputs[0].dtype)
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph
    return [op.name for op in graph.get_operations() if op.type.startswith(FAKE_QUANT_OP)]


def sublayers(layer):
    """The layer and every layer inside it (nested models, wrappers, bidirectional halves).

    Example:
    >>> import keras
    >>> inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="head")],
    ...                          name="block")
    >>> [layer.name for layer in sublayers(keras.Sequential([keras.Input((4,)), inner]))][1:]
    ['block', 'head']
    """
    yield layer
    for attribute in ("layers", "layer", "forward_layer", "backward_layer"):
        inner = getattr(layer, attribute, None)
        for child in inner if isinstance(inner, (list, tuple)) else [inner]:
            if child is not None and child is not layer and hasattr(child, "name"):
                yield from sublayers(child)
