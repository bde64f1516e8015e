"""Which layer's int8 quantization is to blame when int8 and float disagree.

`layer_errors` runs TensorFlow Lite's `QuantizationDebugger` on the same
int8 conversion that `export` does: every quantized tensor is compared with
its float counterpart on the representative examples, and the error is
reported in quantization steps (RMSE / scale). Rounding alone gives about
0.29 (1 / sqrt(12)); a layer far above that loses information in int8.
`advice` turns the worst layers into a message with the fixes that fit.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math

import numpy as np

from keras_distill._src.micro import convert
from keras_distill._src.micro.errors import layers_mentioned

ROUNDING_STEPS = 1 / math.sqrt(12)  # RMSE of rounding to the nearest step, in steps
DEFAULT_AGREEMENT_THRESHOLD = 0.99


@dataclasses.dataclass(frozen=True)
class LayerError:
    """The int8 error of one quantized tensor, against the float model's.

    Attributes:
        layer: The Keras layer it comes from (or the tensor's name).
        op: The TFLite op that produces it.
        steps: RMSE in quantization steps (RMSE / scale).
        max_abs_error: Largest absolute error, in the tensor's real units.
        scale: The tensor's quantization step.

    Example:
    >>> LayerError("dense", "FULLY_CONNECTED", 0.4, 0.01, 0.02).steps
    0.4
    """

    layer: str
    op: str
    steps: float
    max_abs_error: float
    scale: float


def layer_errors(model, samples: np.ndarray, float_io: bool = False) -> tuple[LayerError, ...]:
    """The quantization error of every int8 tensor of the model, worst first.

    Args:
        model: The Keras model (Keras 3 or tf_keras) that `export` converts.
        samples: Representative inputs (`convert.representative_samples`).
        float_io: Whether the export keeps float input and output.

    Returns:
        `LayerError`s sorted by `steps`, largest first.

    Example:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="dense")])
    >>> errors = layer_errors(model, np.random.default_rng(0).random((32, 4)))
    >>> errors[0].op, errors[0].steps < 1.0
    ('FULLY_CONNECTED', True)
    """
    import tensorflow as tf

    samples = np.asarray(samples, "float32")
    converter = convert.int8_converter(model, samples, float_io)
    names = [layer.name for layer in getattr(model, "layers", [])]
    with convert.quiet_conversion():
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter,
            debug_dataset=lambda: ([samples[i : i + 1]] for i in range(len(samples))),
        )
        debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    errors = []
    for row in csv.DictReader(io.StringIO(dump.getvalue())):
        scale = float(row["scale"])
        steps = math.sqrt(float(row["mean_squared_error"])) / scale if scale else 0.0
        found = layers_mentioned(row["tensor_name"], names)
        layer = found[-1] if found else _output_name(row["tensor_name"], names)
        errors.append(LayerError(layer, row["op_name"], steps, float(row["max_abs_error"]), scale))
    return tuple(sorted(errors, key=lambda error: error.steps, reverse=True))


def _output_name(tensor: str, names: list) -> str:
    # The model's output tensor is named after the call, not a layer: it is the last one.
    return (
        f"{names[-1]} (output)"
        if tensor.startswith("StatefulPartitionedCall") and names
        else tensor
    )


def advice(errors, agreement: float, threshold: float, num_samples: int, float_io: bool) -> str:
    """A message naming the worst layers and the fixes that fit.

    Args:
        errors: `layer_errors(...)`.
        agreement: Top-1 agreement of TFLM int8 with the float model.
        threshold: The agreement below which the export explains itself.
        num_samples: Representative examples used for calibration.
        float_io: Whether the input and output are float.

    Returns:
        The message.

    Example:
    >>> errors = [LayerError("logits (output)", "FULLY_CONNECTED", 3.2, 0.5, 0.1)]
    >>> print(advice(errors, 0.95, 0.99, 50, False))  # doctest: +ELLIPSIS
    TFLM int8 agrees with the float model on 95.0% of the validation examples ...
    """
    worst = ", ".join(f"{e.layer} {e.steps:.2f}" for e in errors[:3])
    fixes = [
        "quantization-aware training of the student (kd.quantization_aware, then distil it "
        "as usual)"
    ]
    if num_samples < convert.DEFAULT_NUM_SAMPLES:
        fixes.append(
            f"more representative data ({num_samples} examples were used; give "
            f"{convert.DEFAULT_NUM_SAMPLES} or more typical inputs)"
        )
    if errors and errors[0].layer.endswith("(output)") and not float_io:
        fixes.append("float_io=True, so the output is not rounded to int8")
    if errors and errors[0].op in ("FULLY_CONNECTED", "BATCH_MATMUL"):
        fixes.append(
            f"in {errors[0].layer}: fewer or more evenly scaled units (its outputs share "
            "one int8 scale: a unit with a wide range coarsens the others)"
        )
    if errors and errors[0].steps < 2 * ROUNDING_STEPS:
        diagnosis = (
            "Every layer is within about twice the rounding error: the disagreements are "
            "accumulated rounding on examples near the decision boundary, not one "
            "broken layer."
        )
    else:
        diagnosis = (
            "A layer far above that often gets an input whose int8 range is set by a "
            "few large values: look at the layer feeding it too."
        )
    return (
        f"TFLM int8 agrees with the float model on {agreement:.1%} of the validation examples "
        f"(threshold {threshold:.0%}). Largest quantization errors, RMSE in quantization "
        f"steps (rounding alone gives {ROUNDING_STEPS:.2f}): {worst}. {diagnosis} Try: "
        + "; ".join(fixes)
        + "."
    )
