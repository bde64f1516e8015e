"""`export`: a Keras model or `.tflite` file to verified TFLite Micro C++ (a `MicroExport`)."""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
import warnings

import numpy as np

from keras_distill.micro import codegen, convert, drift, model_info, verify
from keras_distill.micro.boards import get_board
from keras_distill.micro.errors import MicroExportError
from keras_distill.micro.result import MicroExport
from keras_distill.utils import inputs
from keras_distill.utils import model_inspection as models

DEFAULT_ARENA_MARGIN = 0.10


def export(
    model,
    representative_data=None,
    output_dir: str | os.PathLike = ".",
    name: str = "model",
    board: str | None = None,
    *,
    flash_bytes: int | None = None,
    ram_bytes: int | None = None,
    validation_data=None,
    float_io: bool = False,
    num_samples: int = convert.DEFAULT_NUM_SAMPLES,
    arena_margin: float = DEFAULT_ARENA_MARGIN,
    verify_on: str | None = None,
    tflm_dir: str | os.PathLike | None = None,
    explain_quantization: bool | None = None,
    agreement_threshold: float = drift.DEFAULT_AGREEMENT_THRESHOLD,
) -> MicroExport:
    """Exports a model to TFLite Micro: int8 `.tflite`, C++ array, header; verified.

    The model is converted to a fully integer `.tflite` (int8 weights and
    activations; int8 input and output unless `float_io=True`), run in the
    TFLite Micro Python interpreter, its smallest tensor arena measured (in
    subprocesses, so an interpreter crash cannot take down this process), and
    optionally compared with the float model and checked against a board's
    flash and RAM. Only when everything succeeded are `<name>.tflite`,
    `<name>_model_data.cc` and `<name>_model_data.h` written; a failed export
    writes nothing.

    Args:
        model: A single-input `keras.Model` (or tf_keras model, e.g. a tfmot
            quantization-aware or stripped pruned student), a path to a
            `.keras` or `.tflite` file, or `.tflite` bytes (then conversion is
            skipped).
        representative_data: Typical inputs for int8 calibration: an array or
            a `tf.data.Dataset` of `x` or `(x, y)`; needed for Keras models
            except quantization-aware ones, which carry their own ranges.
        output_dir: Directory for the files (created if missing).
        name: C identifier that prefixes the files and symbols.
        board: A preset from `keras_distill.micro.BOARDS` whose flash and RAM
            the model and the recommended arena must fit.
        flash_bytes: Flash budget (overrides the board's).
        ram_bytes: RAM budget for the arena (overrides the board's).
        validation_data: `(x, y)`, `x`, or a dataset: report top-1 agreement of
            TFLM int8 with the float model, and both accuracies if labels exist.
        float_io: Keep float32 input and output tensors.
        num_samples: Representative examples used for calibration at most.
        arena_margin: Fraction added to the measured arena for the recommendation.
        verify_on: A target of `keras_distill.micro.firmware.TARGETS` (e.g.
            `"cortex-m4"`, emulated by QEMU, or `"host"`): build the sources
            into an application with the real TFLite Micro (`micro.build`),
            run it on the validation inputs (else the representative ones; at
            most `TARGET_EXAMPLES`), require outputs bit-identical to the
            Python interpreter's, and recommend the arena measured there.
        tflm_dir: The TFLite Micro tree for `verify_on` (default
            `$KERAS_DISTILL_TFLM_DIR`).
        explain_quantization: None: when the top-1 agreement on the
            validation data is below `agreement_threshold`, measure every
            layer's int8 error (`keras_distill.micro.drift`), report it and
            warn with the worst layers and the fixes that fit; True: always
            measure it (Keras models); False: never.
        agreement_threshold: The agreement below which the export explains.

    Returns:
        A `MicroExport` with paths, sizes, arena, ops, quantization and agreement.

    Raises:
        MicroExportError: For an unsupported op (named, with its layer and a
            hint), data that is empty or of the wrong shape, an output directory
            that is a file, a name that is not a C identifier, a missing or
            unreadable model file, or a model or arena over the budget;
            `FirmwareError` (a subclass) when `verify_on` cannot build or run
            the application, or its outputs differ.

    Example:
    >>> import keras, tempfile
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> x = np.random.rand(64, 4).astype("float32")
    >>> result = export(model, x, tempfile.mkdtemp(), name="tiny", board="esp32")
    >>> result.header_path.name, result.ops
    ('tiny_model_data.h', ('FULLY_CONNECTED',))
    """
    board_name, flash_bytes, ram_bytes = _checked_settings(
        name, output_dir, arena_margin, board, flash_bytes, ram_bytes
    )
    keras_model, model_bytes = _load(model)
    model_bytes, samples = (
        _convert(keras_model, representative_data, float_io, num_samples)
        if keras_model is not None
        else (model_bytes, None)
    )
    info = model_info.inspect_model(model_bytes)
    _check_integer(info, float_io, keras_model)
    arena = _measured_arena(model_bytes, info, keras_model)
    recommended = verify.with_margin(arena, arena_margin)
    validation = (
        validation_data is not None
        and _validate(keras_model, model_bytes, info, validation_data, recommended)
        or None
    )
    errors = _explained(
        keras_model, samples, validation, float_io, explain_quantization, agreement_threshold
    )
    on_target = verify_on and _on_target(
        name,
        info,
        model_bytes,
        arena,
        recommended,
        validation_data,
        representative_data,
        verify_on,
        tflm_dir,
        arena_margin,
    )
    recommended = on_target["recommended_arena_bytes"] if on_target else recommended
    _check_budget(len(model_bytes), recommended, flash_bytes, ram_bytes, board_name)
    paths = _write_atomically(
        pathlib.Path(output_dir), _sources(name, info, model_bytes, arena, recommended)
    )
    return MicroExport(
        name=name,
        tflite_path=paths[0],
        source_path=paths[1],
        header_path=paths[2],
        model_bytes=len(model_bytes),
        float_bytes=4 * keras_model.count_params() if keras_model is not None else None,
        arena_bytes=arena,
        recommended_arena_bytes=recommended,
        arena_margin=arena_margin,
        ops=info.ops,
        inputs=info.inputs,
        outputs=info.outputs,
        validation=validation,
        board=board_name,
        flash_bytes=flash_bytes,
        ram_bytes=ram_bytes,
        sparsity=None if keras_model is None else models.sparsity(keras_model),
        on_target=on_target,
        quantization_errors=errors,
    )


def _checked_settings(name, output_dir, arena_margin, board, flash_bytes, ram_bytes):
    """Checks the arguments that need no model; returns the board's budget."""
    try:
        codegen.check_identifier(name)
    except ValueError as error:
        raise MicroExportError(str(error)) from None
    output_dir = pathlib.Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise MicroExportError(f"The output directory {str(output_dir)!r} is a file.")
    if not 0 <= arena_margin <= 10:
        raise MicroExportError(f"`arena_margin` must be in [0, 10]; received {arena_margin!r}.")
    return _budget(board, flash_bytes, ram_bytes)


def _convert(keras_model, representative_data, float_io: bool, num_samples: int):
    """(The int8 flatbuffer of a Keras model, the representative samples it was calibrated on)."""
    if len(keras_model.inputs) != 1:
        raise MicroExportError(
            f"Only single-input models can be exported; {keras_model.name!r} has "
            f"{len(keras_model.inputs)} inputs."
        )
    samples = None
    if representative_data is not None:
        input_shape = tuple(keras_model.inputs[0].shape[1:])
        samples = convert.representative_samples(representative_data, input_shape, num_samples)
    elif not _quantization_aware(keras_model):
        raise MicroExportError(
            "`representative_data` is required to convert a Keras model to int8: give a "
            "few hundred typical inputs (e.g. training examples). Only quantization-aware "
            "(tfmot) models carry their own ranges."
        )
    return convert.to_int8_tflite(keras_model, samples, float_io=float_io), samples


def _check_integer(info, float_io: bool, keras_model) -> None:
    """Refuses a conversion (of a Keras model) that left float tensors where int8 has none."""
    if keras_model is None:
        return  # a given .tflite is exported as it is
    boundary = (
        []
        if float_io
        else [
            f"{kind} {i} ({t.dtype})"
            for kind, tensors in (("input", info.inputs), ("output", info.outputs))
            for i, t in enumerate(tensors)
            if t.dtype != "int8"
        ]
    )
    if info.float_tensors or boundary:
        named = list(info.float_tensors[:5]) + boundary
        more = len(info.float_tensors) - 5
        raise MicroExportError(
            "The converted model is not fully integer: float tensors "
            f"{', '.join(named)}{f' and {more} more' if more > 0 else ''}. The converter fell "
            "back to float, e.g. for representative data without a usable range; check the "
            "data, or the layers these tensors come from. Nothing was written."
        )


def _measured_arena(model_bytes: bytes, info, keras_model) -> int:
    """Checks that TFLM has every kernel; returns the smallest arena that runs."""
    probe_path = verify.write_temporary(model_bytes)
    try:
        layer_names = tuple(layer.name for layer in getattr(keras_model, "layers", []))
        reported = verify.check_kernels(probe_path, info, layer_names)
        return verify.measure_arena(probe_path, info, reported)
    finally:
        os.remove(probe_path)


def _sources(name: str, info, model_bytes: bytes, arena: int, recommended: int) -> dict:
    """The files of an export: the flatbuffer, its C++ array and the header."""
    from keras_distill.version import __version__

    return {
        f"{name}.tflite": model_bytes,
        f"{name}_model_data.cc": codegen.array_source(
            name, info, model_bytes, __version__
        ).encode(),
        f"{name}_model_data.h": codegen.header_source(
            name, info, arena, recommended, __version__
        ).encode(),
    }


def _quantization_aware(model) -> bool:
    return any(type(layer).__name__.startswith("Quantize") for layer in model.layers)


def _budget(board, flash_bytes, ram_bytes):
    if board is None:
        return None, flash_bytes, ram_bytes
    try:
        preset = get_board(board)
    except ValueError as error:
        raise MicroExportError(str(error)) from None
    return preset.name, flash_bytes or preset.flash_bytes, ram_bytes or preset.ram_bytes


def _load(model):
    """Returns (keras_model or None, tflite bytes or None)."""
    import keras

    if isinstance(model, keras.Model) or models.is_tf_keras(model):
        return model, None
    if isinstance(model, (bytes, bytearray)):
        return None, bytes(model)
    if isinstance(model, (str, os.PathLike)):
        path = pathlib.Path(model)
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
            ".keras file or a .tflite file."
        )
    raise MicroExportError(
        f"`model` must be a keras.Model, a .keras/.tflite path or .tflite bytes; received "
        f"{type(model).__name__}."
    )


def _validate(keras_model, model_bytes, info, data, arena) -> dict:
    expected = info.inputs[0].shape[1:]
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
    int8_top1 = np.argmax(verify.run_tflm(model_bytes, info, x, arena), axis=-1)
    result = {"examples": len(x), "agreement": None, "float_accuracy": None}
    result["int8_accuracy"] = float(np.mean(int8_top1 == y)) if y is not None else None
    if keras_model is not None:
        float_top1 = np.argmax(models.predictions(keras_model, x), axis=-1)
        result["agreement"] = float(np.mean(float_top1 == int8_top1))
        if y is not None:
            result["float_accuracy"] = float(np.mean(float_top1 == y))
    return result


def _explained(keras_model, samples, validation, float_io, explain, threshold):
    """Every layer's int8 error when the agreement is low (with a warning) or when asked."""
    agreement = (validation or {}).get("agreement")
    low = agreement is not None and agreement < threshold
    if keras_model is None or samples is None or explain is False or not (low or explain):
        return None
    errors = drift.layer_errors(keras_model, samples, float_io)
    if low:
        warnings.warn(
            drift.advice(errors, agreement, threshold, len(samples), float_io), stacklevel=3
        )
    return errors


TARGET_EXAMPLES = 200


def _on_target(
    name,
    info,
    model_bytes,
    arena,
    recommended,
    validation,
    representative,
    target,
    tflm_dir,
    margin,
):
    """Builds the sources for `target`, runs them, checks them bit for bit (`verify_on`)."""
    from keras_distill.micro import target_run

    data = validation if validation is not None else representative
    if data is None:
        raise MicroExportError(
            "`verify_on` needs inputs to run: give `validation_data` (or `representative_data`)."
        )
    x, _ = inputs.collect(data, example_rank=len(info.inputs[0].shape) - 1)
    x = np.asarray(x, "float32")[:TARGET_EXAMPLES]
    expected = verify.run_tflm(model_bytes, info, x, recommended, dequantize=False)
    with tempfile.TemporaryDirectory(prefix="keras_distill_target_") as scratch:
        _write_atomically(
            pathlib.Path(scratch), _sources(name, info, model_bytes, arena, recommended)
        )
        return target_run.verify_on_target(
            scratch, model_bytes, x, expected, target, tflm_dir=tflm_dir, arena_margin=margin
        )


def _check_budget(model_bytes, arena_bytes, flash_bytes, ram_bytes, board):
    where = f" of {board}" if board else ""
    problems = []
    if flash_bytes and model_bytes > flash_bytes:
        problems.append(
            f"the model needs {model_bytes:,} B of flash but the budget{where} is "
            f"{flash_bytes:,} B ({model_bytes - flash_bytes:,} B, "
            f"{model_bytes / flash_bytes - 1:.0%} over)"
        )
    if ram_bytes and arena_bytes > ram_bytes:
        problems.append(
            f"the recommended tensor arena needs {arena_bytes:,} B of RAM but the budget{where} "
            f"is {ram_bytes:,} B ({arena_bytes - ram_bytes:,} B, "
            f"{arena_bytes / ram_bytes - 1:.0%} over)"
        )
    if problems:
        raise MicroExportError(
            "The model does not fit: " + "; ".join(problems) + ". Distil a smaller student "
            "or pick a larger board. Nothing was written."
        )


def _write_atomically(directory: pathlib.Path, files: dict) -> list[pathlib.Path]:
    """Writes all files into a temporary folder, then moves them into place."""
    directory.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=".keras_distill_", dir=directory))
    try:
        for filename, content in files.items():
            (staging / filename).write_bytes(content)
        targets = []
        for filename in files:
            os.replace(staging / filename, directory / filename)
            targets.append(directory / filename)
        return targets
    finally:
        shutil.rmtree(staging, ignore_errors=True)
