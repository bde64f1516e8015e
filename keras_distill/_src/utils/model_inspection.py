"""What a model is, as far as distillation cares: its Keras flavour and its output kind.

Both Keras flavours are understood here: Keras 3 models and tf_keras (Keras 2)
models, as tensorflow-model-optimization makes them (its `QuantizeWrapper` and
`PruneLowMagnitude` layers are looked through).
"""

from __future__ import annotations

import warnings
from typing import Any

import keras
import numpy as np
from keras import ops

OUTPUT_KINDS = ("auto", "logits", "probabilities")
LOGITS, PROBABILITIES, LOG_PROBABILITIES = "logits", "probabilities", "log_probabilities"
SOFTMAX_NAMES = ("softmax", "softmax_v2")
LOG_SOFTMAX_NAMES = ("log_softmax", "log_softmax_v2")
# TensorFlow ops that pass a softmax's values on unchanged (or only re-shaped or re-typed).
PASS_THROUGH_OPS = (
    "Identity",
    "IdentityN",
    "Cast",
    "Reshape",
    "StopGradient",
    "ExpandDims",
    "Squeeze",
)

# log(p) of a probability that underflowed to 0 stays finite with this floor; it
# is far below anything float32 resolves.
PROBABILITY_FLOOR = 1e-30


def is_tf_keras(model) -> bool:
    """Whether `model` is a tf_keras (Keras 2) model rather than a Keras 3 one.

    Args:
        model: Any object.

    Returns:
        True for instances of tf_keras classes.
    """
    return any(cls.__module__.startswith("tf_keras") for cls in type(model).__mro__)


def symbolic_outputs(model):
    """The model's symbolic outputs (functional, or built Sequential), else None.

    Example:
    >>> import keras
    >>> len(symbolic_outputs(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])))
    1
    """
    try:
        return model.outputs or None
    except (AttributeError, ValueError):
        return None


def _output_producers(model) -> list | None:
    """The layers or operations that produce the model's outputs, in flat order, if known.

    A Functional model names them (`output_names`); in Keras 3 an output may
    come from an operation that is not a layer (`keras.ops.softmax(logits)`),
    found among `operations`.
    """
    names = getattr(model, "output_names", None) if symbolic_outputs(model) else None
    if names:
        operations = getattr(model, "operations", None) or model.layers
        by_name = {operation.name: operation for operation in operations}
        if all(name in by_name for name in names):
            return [by_name[name] for name in names]
    layers = getattr(model, "layers", None)
    if layers and any(cls.__name__ == "Sequential" for cls in type(model).__mro__):
        return [layers[-1]]
    return None


def output_kinds_in_graph(model) -> list[str] | None:
    """What the model's graph shows each output to be, or None when it cannot be seen.

    A final softmax or log-softmax is found as a layer (`Softmax`, an
    `activation`, a nested model's last layer), as an operation of a
    Functional model (`keras.ops.softmax(logits)`), or inside a layer whose
    code computes it (a `Lambda(lambda z: tf.nn.softmax(z))`, a custom layer),
    which is traced once on its input shape. tfmot's wrappers are looked
    through. A subclassed model shows no graph.

    Returns:
        One of `"logits"`, `"probabilities"`, `"log_probabilities"` per output,
        or None for a model whose graph cannot be seen.

    Example:
    >>> import keras, tensorflow as tf
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
    ...                           keras.layers.Lambda(lambda z: tf.nn.softmax(z))])
    >>> output_kinds_in_graph(model)
    ['probabilities']
    """
    producers = _output_producers(model)
    return None if producers is None else [_produced_kind(p) for p in producers]


def _produced_kind(operation) -> str:
    """What one layer or operation returns: its type, its activation, else its traced graph."""
    while hasattr(operation, "layer"):  # QuantizeWrapper, PruneLowMagnitude
        operation = operation.layer
    if _output_producers(operation) is not None:  # a nested model
        kinds = output_kinds_in_graph(operation)
        return kinds[0] if len(set(kinds)) == 1 else LOGITS
    kind = {"Softmax": PROBABILITIES, "LogSoftmax": LOG_PROBABILITIES}.get(type(operation).__name__)
    activation = getattr(operation, "activation", None)
    activation = getattr(activation, "activation", activation)  # QuantizeAwareActivation
    return kind or _activation_kind(activation) or _traced_kind(operation)


def _activation_kind(activation) -> str | None:
    """A known activation's kind (Keras' and TensorFlow's by name or object), else None."""
    if activation is None:
        return None
    import tensorflow as tf

    name = getattr(activation, "__name__", None)
    if name in SOFTMAX_NAMES or activation in (keras.activations.softmax, tf.nn.softmax):
        return PROBABILITIES
    if name in LOG_SOFTMAX_NAMES or activation in (
        keras.activations.log_softmax,
        tf.nn.log_softmax,
    ):
        return LOG_PROBABILITIES
    module = getattr(activation, "__module__", None) or ""
    return LOGITS if module.startswith(("keras", "tf_keras")) and name != "<lambda>" else None


def _traced_kind(operation) -> str:
    """The kind the last TensorFlow op of `operation`, traced on its input shape, returns.

    Layers and operations that cannot be traced alone (several inputs, several
    calls, code that needs values) are taken as returning logits.
    """
    import tensorflow as tf

    try:
        inputs = operation.input
        specs = keras.tree.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), inputs)
        traced = tf.function(lambda value: operation(value), autograph=False)
        outputs = traced.get_concrete_function(specs).outputs
    except Exception:  # noqa: BLE001 - any layer may fail to trace on its own
        return LOGITS
    return _tensor_kind(outputs[0]) if len(outputs) == 1 else LOGITS


def _tensor_kind(tensor) -> str:
    """Probabilities for a `Softmax` op's tensor, log-probabilities for `LogSoftmax` or its log."""
    op = tensor.op
    while op.type in PASS_THROUGH_OPS and op.inputs:
        op = op.inputs[0].op
    if op.type == "Softmax":
        return PROBABILITIES
    if op.type == "LogSoftmax" or (
        op.type == "Log" and _tensor_kind(op.inputs[0]) == PROBABILITIES
    ):
        return LOG_PROBABILITIES
    return LOGITS


def probability_outputs(model, kind: str, role: str) -> bool:
    """Whether `model`'s outputs are probabilities, per `kind` or as its graph shows.

    Log-probabilities count as logits (their softmax is the distribution).

    Args:
        model: A Keras 3 or tf_keras model.
        kind: `"logits"`, `"probabilities"` or `"auto"` (read the graph:
            `output_kinds_in_graph`).
        role: `"teacher"` or `"student"`, for the messages.

    Returns:
        True if the outputs are probabilities.

    Raises:
        ValueError: If `kind` is unknown, or some outputs end in a softmax and
            others do not.

    Example:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    >>> probability_outputs(model, "auto", "teacher")
    True
    """
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"`{role}_output` must be one of {OUTPUT_KINDS}; received {kind!r}.")
    if kind != "auto":
        return kind == PROBABILITIES
    kinds = output_kinds_in_graph(model)
    if kinds is None:
        warnings.warn(
            f"Cannot see which activation ends the {role} {model.name!r} "
            "(a subclassed model); its outputs are taken as logits. Pass "
            f"{role}_output='probabilities' if it ends in a softmax.",
            stacklevel=3,
        )
        return False
    softmax = [k == PROBABILITIES for k in kinds]
    if any(softmax) and not all(softmax):
        raise ValueError(
            f"Some outputs of the {role} {model.name!r} end in a softmax and some "
            f"do not; pass {role}_output='logits' or 'probabilities' explicitly."
        )
    return all(softmax)


def as_logits(outputs, probabilities: bool):
    """Float32 logits; probabilities become log-probabilities (softmax-invariant).

    Args:
        outputs: A tensor or a structure of tensors.
        probabilities: Whether `outputs` are probabilities.

    Returns:
        The same structure of float32 tensors.

    Example:
    >>> import numpy as np
    >>> np.round(np.asarray(as_logits(np.array([[0.5, 0.5]]), True)), 4)
    array([[-0.6931, -0.6931]], dtype=float32)
    """

    def convert(tensor):
        tensor = ops.cast(tensor, "float32")
        return ops.log(ops.maximum(tensor, PROBABILITY_FLOOR)) if probabilities else tensor

    return keras.tree.map_structure(convert, outputs)


def same_structure(a, b) -> bool:
    """Whether two nests have the same paths (lists, tuples and dicts alike by their keys).

    Example:
    >>> same_structure({"a": 1}, {"a": 2}), same_structure([1], [1, 2])
    (True, False)
    """
    check = getattr(keras.tree, "assert_same_paths", None)  # Keras >= 3.10
    try:
        if check is not None:
            check(a, b)
        else:
            keras.tree.assert_same_structure(a, b, check_types=False)
    except (ValueError, TypeError):
        return False
    return True


def _shapes(outputs) -> Any:
    return keras.tree.map_structure(lambda t: tuple(t.shape), outputs)


def check_compatible(teacher_outputs, student_outputs, where: str) -> None:
    """Raises ValueError unless the outputs have one structure and class axis.

    Args:
        teacher_outputs: A tensor or structure of tensors (symbolic or real).
        student_outputs: The same for the student.
        where: Where the check runs, for the message ("at construction", ...).

    Raises:
        ValueError: If the structures, ranks or last-axis sizes differ.

    Example:
    >>> import numpy as np
    >>> try:
    ...     check_compatible(np.zeros((2, 3)), np.zeros((2, 4)), "here")
    ... except ValueError as error:
    ...     print("must match here" in str(error))
    True
    """
    mismatch = (
        f"The teacher's and the student's outputs must match {where}; "
        f"teacher outputs {_shapes(teacher_outputs)}, "
        f"student outputs {_shapes(student_outputs)}."
    )
    if not same_structure(teacher_outputs, student_outputs):
        raise ValueError(mismatch)
    for teacher, student in zip(
        keras.tree.flatten(teacher_outputs), keras.tree.flatten(student_outputs), strict=True
    ):
        t_shape, s_shape = tuple(teacher.shape), tuple(student.shape)
        if len(t_shape) != len(s_shape) or (
            t_shape[-1] is not None and s_shape[-1] is not None and t_shape[-1] != s_shape[-1]
        ):
            raise ValueError(mismatch)


def sparsity(model) -> float:
    """Fraction of exactly zero values among the model's kernels (rank >= 2 weights).

    Works for Keras 3 and tf_keras models; pruning masks count once stripped.

    Args:
        model: A Keras 3 or tf_keras model.

    Returns:
        A fraction in [0, 1] (0 for a model without kernels).

    Example:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> _ = model.layers[0].kernel.assign(np.zeros((4, 2)))
    >>> sparsity(model)
    1.0
    """
    kernels = [np.asarray(w) for w in model.get_weights() if np.ndim(w) >= 2]
    total = sum(k.size for k in kernels)
    return float(sum(int((k == 0).sum()) for k in kernels) / total) if total else 0.0


def multiply_accumulates(model) -> int:
    """Multiply-accumulate operations of one inference on one example.

    Counts the layers with a `kernel` (Dense, convolutions, depthwise
    convolutions): kernel size times the output's spatial positions, which is
    what those layers cost on a microcontroller; nested models are walked, and
    a wrapper (a `kd.quantization_aware` layer, `TimeDistributed`) counts the
    kernel of the layer it wraps. Biases, activations and pooling are not counted.

    Args:
        model: A built Functional or Sequential Keras model.

    Returns:
        The number of multiply-accumulates.

    Raises:
        ValueError: If a layer with a kernel has no known output shape (an
            unbuilt or subclassed model).

    Example:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> multiply_accumulates(model)
    12
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += multiply_accumulates(layer)
            continue
        kernel = getattr(computing_layer(layer), "kernel", None)
        if kernel is None:
            continue
        try:
            shape = tuple(layer.output.shape)
        except (AttributeError, ValueError) as error:
            raise ValueError(
                f"Layer {layer.name!r} of {model.name!r} has no known output shape; "
                "multiply_accumulates needs a built Functional or Sequential model."
            ) from error
        total += int(np.prod(kernel.shape)) * int(np.prod(shape[1:-1], dtype=np.int64))
    return total


def computing_layer(layer):
    """The layer whose kernel `layer` computes: itself, or the layer a wrapper wraps.

    A `kd.quantization_aware` layer or a `TimeDistributed` holds no kernel of
    its own; it computes its inner layer's.
    """
    wrapped = getattr(layer, "layer", None)
    if getattr(layer, "kernel", None) is None and isinstance(wrapped, keras.layers.Layer):
        return wrapped
    return layer


def predictions(model, x, batch_size: int = 1024) -> np.ndarray:
    """The model's outputs on `x`, computed eagerly in batches (inference mode).

    Unlike `model.predict`, nothing is traced: evaluating many small models
    one after the other (a benchmark, a demo, an export check) does not
    trigger TensorFlow's retracing warnings. Works for Keras 3 and tf_keras.

    Args:
        model: A single-output Keras 3 or tf_keras model.
        x: An array of inputs.
        batch_size: Examples per call.

    Returns:
        A NumPy array with one row per example.

    Example:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> predictions(model, np.zeros((5, 4), "float32"), batch_size=2).shape
    (5, 3)
    """
    x = np.asarray(x)
    chunks = [
        np.asarray(model(x[start : start + batch_size], training=False))
        for start in range(0, len(x), batch_size)
    ]
    return np.concatenate(chunks) if chunks else np.zeros((0,))


def weights_digest(model) -> str:
    """A short SHA-256 of a model's weights: the same weights give the same digest."""
    import hashlib

    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()[:16]
