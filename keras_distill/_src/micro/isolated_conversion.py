"""The int8 conversion of recurrent models, in a subprocess that may crash without harm.

TensorFlow Lite's calibrator kills the process (SIGSEGV) on the loop of a
recurrent layer (LSTM, GRU, SimpleRNN) that is not unrolled. Models holding
such layers are converted in a separate Python process, as the arena probes of
`keras_distill._src.micro.verify` run; a crash there becomes a `MicroExportError`
naming the layers, with the fix (`unroll=True`). Other models convert in the
user's process (`keras_distill._src.micro.convert.to_int8_tflite`), which is faster;
`to_int8_tflite_safely` chooses.

TensorFlow Lite's converter (TF 2.21) also leaves some weights of an unrolled
recurrent layer in float at random: 14 of 96 conversions of one small LSTM
model, each fully integer when converted again. `to_int8_tflite_for_tflm`
converts such a model again, up to `RECURRENT_ATTEMPTS` times in all,
until no float tensor is left.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import tempfile

import numpy as np

from keras_distill._src.micro import convert, integer_check
from keras_distill._src.micro.errors import MicroExportError
from keras_distill._src.micro.model_info import inspect_model
from keras_distill._src.micro.model_loading import sublayers
from keras_distill._src.utils.model_inspection import is_tf_keras

_CONVERSION_TIMEOUT = 600
RECURRENT_ATTEMPTS = 4  # conversions of a recurrent model until one is fully integer

_CONVERT = r"""
import sys
import keras
import numpy as np
from keras_distill._src.micro.convert import to_int8_tflite
from keras_distill._src.micro import convert, integer_check
from keras_distill._src.micro.errors import MicroExportError
from keras_distill._src.utils.model_inspection import is_tf_keras

folder, float_io = sys.argv[1], sys.argv[2] == "1"
batch_size = None if sys.argv[3] == "none" else int(sys.argv[3])
model = keras.models.load_model(folder + "/model.keras", compile=False)
samples = np.load(folder + "/samples.npy")
try:
    converted = to_int8_tflite(model, samples, float_io=float_io, batch_size=batch_size)
except MicroExportError as error:
    print(error, file=sys.stderr)
    sys.exit(3)
with open(folder + "/model.tflite", "wb") as file:
    file.write(converted)
"""


def _rnn_layers(model) -> list:
    """The layers inside `model` that step through time (those with an `unroll` setting)."""
    return [layer for layer in sublayers(model) if layer is not model and hasattr(layer, "unroll")]


def to_int8_tflite_safely(
    model, samples: np.ndarray | None, float_io: bool = False, batch_size: int | None = 1
) -> bytes:
    """`convert.to_int8_tflite`, in a subprocess when the model holds a recurrent loop.

    Args:
        model: A Keras 3 or tf_keras model with a single input.
        samples: Representative inputs (None for a quantization-aware model).
        float_io: Keep float32 input and output.
        batch_size: Fixed batch size, or None for a resizable batch axis.

    Returns:
        The `.tflite` bytes.

    Raises:
        MicroExportError: As `convert.to_int8_tflite` raises, or if the
            converter crashes on a recurrent layer (named, with the hint).

    Example:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> to_int8_tflite_safely(model, np.random.rand(8, 4))[4:8]
    b'TFL3'
    """
    looping = _loops_to_isolate(model, _rnn_layers(model), samples)
    return _converted_once(model, samples, float_io, batch_size, looping)


def to_int8_tflite_for_tflm(model, samples: np.ndarray | None, float_io: bool = False) -> bytes:
    """The int8 conversion for TFLM: isolated for a recurrent loop, repeated for unrolled layers.

    A model with a recurrent loop converts once, in a subprocess
    (`to_int8_tflite_isolated`), even if it also holds unrolled layers. A model
    with unrolled recurrent layers converts in this process, again while float
    tensors are left in it, up to `RECURRENT_ATTEMPTS` conversions in all (see
    the module's note). A quantization-aware model (no `samples`) converts once.

    Args:
        model: A Keras 3 or tf_keras model with a single input.
        samples: Representative inputs (None for a quantization-aware model).
        float_io: Keep float32 input and output.

    Returns:
        The `.tflite` bytes.

    Raises:
        MicroExportError: As `to_int8_tflite_safely` raises, or if a model with
            unrolled recurrent layers is still partly float after the last
            conversion (naming the conversions and the float layers).
    """
    time_steppers = _rnn_layers(model)
    looping = _loops_to_isolate(model, time_steppers, samples)
    if looping or samples is None or not time_steppers:
        return _converted_once(model, samples, float_io, 1, looping)
    return _converted_until_fully_integer(model, samples, float_io)


def _loops_to_isolate(model, time_steppers: list, samples: np.ndarray | None) -> list[str]:
    """The looping layers' names when calibrating them could crash this process, else []."""
    if samples is None or is_tf_keras(model):
        return []
    return [layer.name for layer in time_steppers if layer.unroll is False]


def _converted_once(
    model, samples: np.ndarray | None, float_io: bool, batch_size: int | None, looping: list
) -> bytes:
    """One conversion: in a subprocess when `looping` names layers, else in this process."""
    if looping:
        return to_int8_tflite_isolated(model, samples, float_io, looping, batch_size)
    return convert.to_int8_tflite(model, samples, float_io=float_io, batch_size=batch_size)


def _converted_until_fully_integer(model, samples: np.ndarray, float_io: bool) -> bytes:
    """Converts up to `RECURRENT_ATTEMPTS` times; refuses a model float after the last."""
    for _ in range(RECURRENT_ATTEMPTS):
        model_bytes = convert.to_int8_tflite(model, samples, float_io=float_io)
        info = inspect_model(model_bytes)
        if info.fully_integer:
            return model_bytes
    raise MicroExportError(
        f"TensorFlow Lite's converter left float tensors in this recurrent model in each of "
        f"{RECURRENT_ATTEMPTS} conversions. " + integer_check.fallback_message(info, [], model)
    )


def to_int8_tflite_isolated(
    model, samples: np.ndarray, float_io: bool, layers: list, batch_size: int | None = 1
) -> bytes:
    """`convert.to_int8_tflite(model, samples, float_io, batch_size)` run in a subprocess.

    Args:
        model: A Keras 3 model that can be saved as `.keras` and loaded again.
        samples: Representative inputs.
        float_io: Keep float32 input and output.
        layers: The recurrent layers, named in the message if the converter crashes.
        batch_size: Fixed batch size, or None for a resizable batch axis.

    Returns:
        The `.tflite` bytes.

    Raises:
        MicroExportError: If the converter crashes (naming the layers, with the
            `unroll=True` hint) or refuses the model.
    """
    with tempfile.TemporaryDirectory(prefix="keras_distill_convert_") as folder:
        try:
            model.save(os.path.join(folder, "model.keras"))
        except Exception as error:  # Keras raises many types for an unsavable model
            raise MicroExportError(
                _crash_message(layers, f"it cannot be saved ({error})")
            ) from None
        np.save(os.path.join(folder, "samples.npy"), np.asarray(samples, "float32"))
        result = _run(folder, float_io, batch_size)
        if result.returncode == 0:
            return pathlib.Path(folder, "model.tflite").read_bytes()
    if result.returncode == 3:
        raise MicroExportError(result.stderr.strip().splitlines()[-1])
    raise MicroExportError(_crash_message(layers, _how_it_ended(result)))


def _run(folder: str, float_io: bool, batch_size: int | None) -> subprocess.CompletedProcess:
    package_root = str(pathlib.Path(__file__).resolve().parents[2])
    path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", _CONVERT, folder, "1" if float_io else "0", str(batch_size).lower()],
        capture_output=True,
        text=True,
        timeout=_CONVERSION_TIMEOUT,
        env={**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


def _how_it_ended(result: subprocess.CompletedProcess) -> str:
    if result.returncode < 0:
        return f"the converter crashed ({signal.Signals(-result.returncode).name})"
    last = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
    return f"the converter failed ({last})"


def _crash_message(layers: list, what: str) -> str:
    named = ", ".join(layers) or "unknown"
    return (
        f"TensorFlow Lite's int8 conversion of this model failed: {what}, in a separate process "
        f"(your process is unharmed). TFLite cannot calibrate the loop of the recurrent "
        f"layer{'s' if len(layers) != 1 else ''} {named}. Hint: build "
        f"{'them' if len(layers) != 1 else 'it'} with unroll=True (a fixed number of time "
        "steps, e.g. keras.layers.LSTM(units, unroll=True)), which exports. Nothing was written."
    )
