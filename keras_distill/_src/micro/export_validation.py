"""Checking an int8 export against its float model, and on a target built from its sources."""

from __future__ import annotations

import contextlib
import pathlib
import tempfile

import numpy as np

from keras_distill._src.micro import export_files, verify
from keras_distill._src.micro.errors import MicroExportError
from keras_distill._src.micro.result import TargetCheck, ValidationResult
from keras_distill._src.utils import inputs, model_inspection

TARGET_EXAMPLES = 200


def _validation_arrays(data, expected: tuple) -> tuple:
    x, y = inputs.collect(data, example_rank=len(expected))
    x = x.astype("float32")
    y = None if y is None else y.reshape(-1)
    if y is not None and len(y) != len(x):
        raise MicroExportError(
            f"The validation data has {len(x)} examples but {len(y)} labels; give one label "
            "per example."
        )
    if tuple(x.shape[1:]) != tuple(expected):
        raise MicroExportError(
            f"The validation data has examples of shape {tuple(x.shape[1:])}, but the "
            f"model expects {tuple(expected)}."
        )
    return x, y


def validate(keras_model, model_bytes: bytes, info, data, arena: int) -> ValidationResult:
    """Runs TFLM int8 on the validation data; compares it with the float model and the labels.

    Args:
        keras_model: The float Keras model, or None for a `.tflite` input.
        model_bytes: The int8 flatbuffer.
        info: Its `inspect_model` result.
        data: `(x, y)`, `x`, or a dataset.
        arena: An arena size that runs.

    Returns:
        A `ValidationResult`.

    Raises:
        MicroExportError: If the labels or the example shape do not match.
    """
    x, y = _validation_arrays(data, info.inputs[0].shape[1:])
    int8_top1 = np.argmax(verify.run_tflm(model_bytes, info, x, arena), axis=-1)
    float_top1 = None
    if keras_model is not None:
        float_top1 = np.argmax(model_inspection.predictions(keras_model, x), axis=-1)

    def share(a, b):
        return None if a is None or b is None else float(np.mean(a == b))

    return ValidationResult(
        examples=len(x),
        agreement=share(float_top1, int8_top1),
        float_accuracy=share(float_top1, y),
        int8_accuracy=share(int8_top1, y),
    )


def check_on_target(name, info, model_bytes, arenas, data, target, tflm_dir, margin) -> TargetCheck:
    """Builds the sources for `target`, runs them, checks them bit for bit (`verify_on`).

    Args:
        name: The export's name.
        info: The model's `inspect_model` result.
        model_bytes: The int8 flatbuffer.
        arenas: `(measured, recommended)` arena bytes in the Python interpreter.
        data: Inputs to run (`x`, `(x, y)` or a dataset); at most
            `TARGET_EXAMPLES` are used.
        target: A key of `kd.micro.TARGETS`.
        tflm_dir: The TFLite Micro tree.
        margin: Fraction added to the target's arena for the recommendation.

    Returns:
        A `TargetCheck`.

    Raises:
        MicroExportError: If there are no inputs; `FirmwareError` as
            `target_run.verify_on_target` raises.
    """
    from keras_distill._src.micro import target_run

    if data is None:
        raise MicroExportError(
            "`verify_on` needs inputs to run: give `validation_data` (or `representative_data`)."
        )
    x, _ = inputs.collect(data, example_rank=len(info.inputs[0].shape) - 1)
    x = np.asarray(x, "float32")[:TARGET_EXAMPLES]
    with _sources_written(name, info, model_bytes, arenas, x) as (folder, expected):
        return target_run.verify_on_target(
            folder, model_bytes, x, expected, target, tflm_dir=tflm_dir, arena_margin=margin
        )


def instructions_on_target(name, info, model_bytes, arenas, x, target, tflm_dir) -> int:
    """Median instructions per inference of the int8 model built once for a Cortex-M target.

    Args:
        name: The export's name.
        info: The model's `inspect_model` result.
        model_bytes: The int8 flatbuffer.
        arenas: `(measured, recommended)` arena bytes in the Python interpreter.
        x: Float inputs to run (a few suffice: the count hardly varies).
        target: A Cortex-M key of `kd.micro.TARGETS`.
        tflm_dir: The TFLite Micro tree.

    Returns:
        The median instruction count (QEMU `-icount`).

    Raises:
        FirmwareError: As `target_run.count_instructions` raises.
    """
    from keras_distill._src.micro import target_run

    x = np.asarray(x, "float32")
    with _sources_written(name, info, model_bytes, arenas, x) as (folder, expected):
        return target_run.count_instructions(folder, x, expected, target, tflm_dir=tflm_dir)


@contextlib.contextmanager
def _sources_written(name, info, model_bytes, arenas, x):
    """Yields `(folder with the export's sources, the Python TFLM interpreter's outputs on x)`."""
    arena, recommended = arenas
    expected = verify.run_tflm(model_bytes, info, x, recommended, dequantize=False)
    files = export_files.sources(name, info, model_bytes, arena, recommended)
    with tempfile.TemporaryDirectory(prefix="keras_distill_target_") as scratch:
        export_files.write_atomically(pathlib.Path(scratch), files)
        yield scratch, expected
