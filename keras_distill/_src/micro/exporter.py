"""`export`: a Keras model or an int8 `.tflite` to verified TFLite Micro C++ (a `MicroExport`)."""

from __future__ import annotations

import dataclasses
import numbers
import os
import warnings

from keras_distill._src.micro import (
    codegen,
    convert,
    drift,
    export_files,
    export_validation,
    integer_check,
    isolated_conversion,
    model_info,
    model_loading,
    verify,
)
from keras_distill._src.micro.boards import get_board
from keras_distill._src.micro.errors import MicroExportError
from keras_distill._src.micro.result import MicroExport
from keras_distill._src.utils import model_inspection, storage

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
    overwrite: bool = False,
) -> MicroExport:
    """Exports a model to TFLite Micro: int8 `.tflite`, C++ array, header; verified.

    The model is converted to a fully integer `.tflite` (int8 weights and
    activations; int8 input and output unless `float_io=True`), run in the
    TFLite Micro Python interpreter, its smallest tensor arena measured (in
    subprocesses, so an interpreter crash cannot take down this process), and
    optionally compared with the float model and checked against a board's
    flash and RAM. Only when everything succeeded are `<name>.tflite`,
    `<name>_model_data.cc` and `<name>_model_data.h` written; a failed export
    writes nothing. A float model is never written: what the result and its
    summary call the model (`MicroExport.kind`) is read from its tensor types.

    Args:
        model: A single-input `keras.Model` (or tf_keras model, e.g. a tfmot
            quantization-aware or stripped pruned student; a distiller is
            refused: export its `student`), a path to a `.keras` file or a
            SavedModel folder (both converted), or an int8 `.tflite` file or
            its bytes (exported as it is; a float or partly float `.tflite`
            is refused, since it cannot be re-quantized without its source
            model).
        representative_data: Typical inputs for int8 calibration: an array
            (or nested lists of numbers) or a `tf.data.Dataset` of `x` or
            `(x, y)`; needed for Keras models except quantization-aware ones,
            which carry their own ranges: tfmot's, or models whose weights and
            activations go through `keras.quantizers.fake_quant_with_min_max_vars`
            (converted to a fully int8 model without calibration).
        output_dir: Directory for the files (created if missing): a local
            path or a URL TensorFlow can write (`gs://...`, `ram://...`).
        name: C identifier that prefixes the files and symbols.
        board: A preset from `kd.micro.BOARDS` whose flash and RAM the model
            and the recommended arena must fit.
        flash_bytes: Flash budget in bytes, a positive integer (overrides the
            board's).
        ram_bytes: RAM budget for the arena in bytes, a positive integer
            (overrides the board's).
        validation_data: `(x, y)`, `x`, or a dataset: report top-1 agreement of
            TFLM int8 with the float model, and both accuracies if labels exist.
        float_io: Keep float32 input and output tensors.
        num_samples: Representative examples used for calibration at most.
        arena_margin: Fraction added to the measured arena for the recommendation.
        verify_on: A target of `kd.micro.TARGETS` (e.g.
            `"cortex-m4"`, emulated by QEMU, or `"host"`): build the sources
            into an application with the real TFLite Micro (`micro.build`),
            run it on the validation inputs (else the representative ones; at
            most `TARGET_EXAMPLES`), require outputs bit-identical to the
            Python interpreter's, and recommend the arena measured there.
        tflm_dir: The TFLite Micro tree for `verify_on` (default
            `$KERAS_DISTILL_TFLM_DIR`).
        explain_quantization: None: when the top-1 agreement on the
            validation data is below `agreement_threshold`, measure every
            layer's int8 error (`MicroExport.quantization_errors`), report it and
            warn with the worst layers and the fixes that fit; True: always
            measure it (Keras models); False: never.
        agreement_threshold: The agreement below which the export explains.
        overwrite: Replace the files of an earlier export of the same `name` in
            `output_dir`; without it such files are refused (named), as
            `keras.Model.save` does.

    Returns:
        A `MicroExport` with paths, sizes, arena, ops, quantization and agreement.

    Raises:
        MicroExportError: For an unsupported op (named, with its layer and a
            hint), a layer the converter keeps in float (named, with a hint), a
            float `.tflite` (with what to pass instead), a recurrent layer that
            crashes the converter (in a separate process, named, with the
            `unroll=True` hint), a pruned model not yet stripped, a distiller,
            data that is empty or of the wrong shape, an output directory that
            is a file, already holds the export's files, or is a URL that
            cannot be reached (named, with what is missing), a name that is not
            a C identifier, a budget that is not a positive integer, a missing
            or unreadable model file, or a model or arena over the budget;
            `FirmwareError` (a subclass) when `verify_on` cannot build or run
            the application, or its outputs differ.

    Example:
    >>> import keras, tempfile
    >>> import numpy as np
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> x = np.random.rand(64, 4).astype("float32")
    >>> result = export(model, x, tempfile.mkdtemp(), name="tiny", board="esp32")
    >>> result.header_path.name, result.ops, result.kind
    ('tiny_model_data.h', ('FULLY_CONNECTED',), 'int8')
    """
    _check_counts(flash_bytes=flash_bytes, ram_bytes=ram_bytes, num_samples=num_samples)
    output_dir = _checked_output_dir(output_dir, name, overwrite)
    budget = _checked_settings(arena_margin, agreement_threshold, board, flash_bytes, ram_bytes)
    representative_data = convert.as_array_if_numbers(representative_data)
    validation_data = convert.as_array_if_numbers(validation_data)
    converted = _converted(model, representative_data, float_io, num_samples)
    arena = _measured_arena(converted)
    recommended = verify.with_margin(arena, arena_margin)
    validation = _validated(converted, validation_data, recommended)
    errors = _explained(converted, validation, float_io, explain_quantization, agreement_threshold)
    on_target = None
    if verify_on:
        to_run = representative_data if validation_data is None else validation_data
        on_target = export_validation.check_on_target(
            name,
            converted.info,
            converted.model_bytes,
            (arena, recommended),
            to_run,
            verify_on,
            tflm_dir,
            arena_margin,
        )
        recommended = on_target.recommended_arena_bytes
    _check_budget(len(converted.model_bytes), recommended, budget)
    files = export_files.sources(name, converted.info, converted.model_bytes, arena, recommended)
    paths = _write(output_dir, files)
    measured = dict(validation=validation, on_target=on_target, quantization_errors=errors)
    return _result(name, paths, converted, (arena, recommended, arena_margin), budget, measured)


@dataclasses.dataclass(frozen=True)
class _Converted:
    """The fully integer model of an export, with where it came from."""

    keras_model: object  # the Keras model, or None for a .tflite input
    model_bytes: bytes
    info: model_info.ModelInfo
    samples: object  # the representative samples it was calibrated on, or None


def _converted(model, representative_data, float_io: bool, num_samples: int) -> _Converted:
    """Loads the model and converts it to a checked int8 flatbuffer (an int8 .tflite is kept)."""
    keras_model, model_bytes = model_loading.load_model(model)
    samples = None
    if keras_model is not None:
        model_bytes, samples = _convert(keras_model, representative_data, float_io, num_samples)
    info = model_info.inspect_model(model_bytes)
    integer_check.check_fully_integer(info, float_io, keras_model, model)
    return _Converted(keras_model, model_bytes, info, samples)


def _validated(converted: _Converted, data, arena: int):
    """The `ValidationResult` on `data`, or None without validation data."""
    if data is None:
        return None
    keras_model, model_bytes, info = converted.keras_model, converted.model_bytes, converted.info
    return export_validation.validate(keras_model, model_bytes, info, data, arena)


def _result(name, paths, converted: _Converted, arenas, budget, measured: dict) -> MicroExport:
    arena, recommended, margin = arenas
    board, flash_bytes, ram_bytes = budget
    keras_model = converted.keras_model
    return MicroExport(
        name=name,
        tflite_path=paths[0],
        source_path=paths[1],
        header_path=paths[2],
        model_bytes=len(converted.model_bytes),
        float_bytes=None if keras_model is None else 4 * keras_model.count_params(),
        arena_bytes=arena,
        recommended_arena_bytes=recommended,
        arena_margin=margin,
        ops=converted.info.ops,
        inputs=converted.info.inputs,
        outputs=converted.info.outputs,
        board=board,
        flash_bytes=flash_bytes,
        ram_bytes=ram_bytes,
        sparsity=None if keras_model is None else model_inspection.sparsity(keras_model),
        kind=converted.info.kind,
        **measured,
    )


def _check_counts(**counts) -> None:
    """Refuses a budget or count that is not a positive whole number (None is allowed)."""
    for argument, value in counts.items():
        whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if value is not None and not (whole and value > 0):
            raise MicroExportError(
                f"`{argument}` must be a positive whole number (or None); received {value!r}."
            )


def _checked_output_dir(output_dir, name: str, overwrite: bool) -> str:
    """The output folder as a string (a local path or a reachable URL), checked for the export."""
    try:
        codegen.check_identifier(name)
    except ValueError as error:
        raise MicroExportError(str(error)) from None
    import tensorflow as tf

    try:
        output_dir = storage.check_path(output_dir, MicroExportError)
        if storage.exists(output_dir) and not storage.isdir(output_dir):
            raise MicroExportError(f"The output directory {output_dir!r} is a file.")
        export_files.check_not_overwriting(output_dir, name, overwrite)
    except tf.errors.OpError as error:  # e.g. gs:// without network or credentials
        raise MicroExportError(_unreachable(os.fspath(output_dir), error)) from None
    return output_dir


def _write(output_dir: str, files: dict) -> list:
    """`export_files.write_atomically`, with a file system's refusal explained (all or nothing)."""
    import tensorflow as tf

    try:
        return export_files.write_atomically(output_dir, files)
    except tf.errors.OpError as error:  # e.g. a bucket that refuses the write
        raise MicroExportError(_unreachable(output_dir, error)) from None


def _unreachable(output_dir: str, error) -> str:
    reason = str(error).strip().splitlines()[0]
    needs = (
        "network access to Google Cloud Storage and credentials (`gcloud auth "
        "application-default login`, or GOOGLE_APPLICATION_CREDENTIALS)"
        if storage.scheme(output_dir) == "gs"
        else f"network access and credentials for {storage.scheme(output_dir)}://"
    )
    return (
        f"Cannot reach the output directory {output_dir!r}: {reason}. Writing there needs "
        f"{needs}; or export to a local folder and copy the files. Nothing was written."
    )


def _checked_settings(arena_margin, agreement_threshold, board, flash_bytes, ram_bytes):
    """Checks the arguments that need no model; returns the board's budget."""
    for argument, value, high in (
        ("arena_margin", arena_margin, 10),
        ("agreement_threshold", agreement_threshold, 1),
    ):
        if not (
            isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 <= value <= high
        ):
            raise MicroExportError(f"`{argument}` must be in [0, {high}]; received {value!r}.")
    return _budget(board, flash_bytes, ram_bytes)


def _convert(keras_model, representative_data, float_io: bool, num_samples: int):
    """(The int8 flatbuffer of a Keras model, the representative samples it was calibrated on)."""
    if len(keras_model.inputs) != 1:
        raise MicroExportError(
            f"Only single-input models can be exported; {keras_model.name!r} has "
            f"{len(keras_model.inputs)} inputs."
        )
    model_loading.check_no_pruning_wrappers(keras_model)
    samples = None
    if representative_data is not None:
        input_shape = tuple(keras_model.inputs[0].shape[1:])
        samples = convert.representative_samples(representative_data, input_shape, num_samples)
    elif not model_loading.quantization_aware(keras_model):
        raise MicroExportError(
            "`representative_data` is required to convert a Keras model to int8: give a "
            "few hundred typical inputs (e.g. training examples). Only quantization-aware "
            "models (tfmot's, or with fake-quantization ops on their weights and activations) "
            "carry their own ranges."
        )
    converted = isolated_conversion.to_int8_tflite_for_tflm(keras_model, samples, float_io)
    return converted, samples


def _measured_arena(converted: _Converted) -> int:
    """Checks that TFLM has every kernel; returns the smallest arena that runs."""
    probe_path = verify.write_temporary(converted.model_bytes)
    try:
        layers = getattr(converted.keras_model, "layers", [])
        layer_names = tuple(layer.name for layer in layers)
        reported = verify.check_kernels(probe_path, converted.info, layer_names)
        return verify.measure_arena(probe_path, converted.info, reported)
    finally:
        os.remove(probe_path)


def _budget(board, flash_bytes, ram_bytes):
    if board is None:
        return None, flash_bytes, ram_bytes
    try:
        preset = get_board(board)
    except ValueError as error:
        raise MicroExportError(str(error)) from None
    return preset.name, flash_bytes or preset.flash_bytes, ram_bytes or preset.ram_bytes


def _explained(converted: _Converted, validation, float_io, explain, threshold):
    """Every layer's int8 error when the agreement is low (with a warning) or when asked."""
    agreement = None if validation is None else validation.agreement
    low = agreement is not None and agreement < threshold
    samples = converted.samples
    if converted.keras_model is None or samples is None or explain is False or not (low or explain):
        return None
    errors = drift.layer_errors(converted.keras_model, samples, float_io)
    if low:
        warnings.warn(
            drift.advice(errors, agreement, threshold, len(samples), float_io), stacklevel=3
        )
    return errors


def _check_budget(model_bytes: int, arena_bytes: int, budget: tuple) -> None:
    board, flash_bytes, ram_bytes = budget
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
