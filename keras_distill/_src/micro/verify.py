"""Running a `.tflite` model in the TFLite Micro Python interpreter.

Every probe that could crash the interpreter (a missing kernel, a too small
arena) runs in a process of its own, so the user's process never goes down with
it. The arena search forks each probe from one helper process that has loaded
TFLM once (a fresh process per probe at a fork's cost, not an interpreter
start's); where `os.fork` does not exist, each probe is a new subprocess.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import select
import signal
import subprocess
import sys
import tempfile

import numpy as np

from keras_distill._src.micro.errors import HINTS, MicroExportError, layers_mentioned
from keras_distill._src.micro.model_info import ModelInfo

ARENA_RESOLUTION = 16  # bytes; TFLM aligns arena allocations to 16 bytes
_MAX_ARENA = 1 << 28
_PROBE_TIMEOUT = 300

# Reads a model file; loads the model in a TFLM interpreter with an arena of `arena` bytes and
# runs it on zeros.
_RUN_MODEL = r"""
import numpy as np
from tflite_micro.python.tflite_micro import runtime


def read_model(path):
    with open(path, "rb") as f:
        return f.read()


def run_model(model, arena, inputs):
    interpreter = runtime.Interpreter.from_bytes(model, arena_size=arena)
    for index in range(inputs):
        details = interpreter.get_input_details(index)
        interpreter.set_input(np.zeros(details["shape"], details["dtype"]), index)
    interpreter.invoke()
    return interpreter
"""

_PROBE = (
    _RUN_MODEL
    + r"""
import sys

path, arena, inputs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
model = read_model(path)
try:
    run_model(model, arena, inputs).print_allocations()
except RuntimeError as error:
    print(error, file=sys.stderr)
    sys.exit(3)
"""
)


def _probe(path: str, arena: int, num_inputs: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _PROBE, path, str(arena), str(num_inputs)],
        capture_output=True,
        text=True,
        timeout=_PROBE_TIMEOUT,
    )


# Reads arena sizes on stdin; runs each in a forked child (a crash ends the child only) and
# prints the child's exit code. The helper itself never runs an interpreter.
_FORKING_PROBE = (
    _RUN_MODEL
    + r"""
import os
import signal
import sys

path, inputs, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
model = read_model(path)
print("ready", flush=True)
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # fd 1 carries the helper's replies only
        signal.alarm(timeout)
        try:
            run_model(model, int(line), inputs)
        except RuntimeError:
            os._exit(3)
        os._exit(0)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""
)


class _ArenaProber:
    """Answers whether the model allocates and runs with an arena, each probe in its own process.

    Args:
        path: A `.tflite` file.
        num_inputs: How many input tensors the model has.
    """

    def __init__(self, path: str, num_inputs: int):
        self.path, self.num_inputs = path, num_inputs
        self.helper = None
        if hasattr(os, "fork"):
            environment = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
            self.helper = subprocess.Popen(
                [sys.executable, "-c", _FORKING_PROBE, path, str(num_inputs), str(_PROBE_TIMEOUT)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env=environment,
            )
            if self._reply() != "ready":
                self.close()

    def works(self, arena: int) -> bool:
        reply = None if self.helper is None else self._ask(arena)
        if reply is None:  # no helper, or it stopped: a new subprocess per probe from here on
            self.close()
            return _probe(self.path, arena, self.num_inputs).returncode == 0
        if reply == str(-signal.SIGALRM):
            raise MicroExportError(
                f"TFLite Micro did not finish running the model with a {arena:,} B arena within "
                f"{_PROBE_TIMEOUT} s."
            )
        return reply == "0"

    def _ask(self, arena: int) -> str | None:
        try:
            self.helper.stdin.write(f"{arena}\n")
            self.helper.stdin.flush()
        except OSError:
            return None
        return self._reply()

    def _reply(self) -> str | None:
        # a probe that hangs is ended by its alarm after _PROBE_TIMEOUT s (exit code -14)
        ready, _, _ = select.select([self.helper.stdout], [], [], _PROBE_TIMEOUT + 30)
        line = self.helper.stdout.readline() if ready else ""
        return line.strip() or None

    def close(self) -> None:
        """Ends the helper (a probe still running ends at its alarm)."""
        if self.helper is not None:
            self.helper.kill()
            self.helper.wait()
            with contextlib.suppress(OSError):  # a request left unsent in the buffer
                self.helper.stdin.close()
            self.helper.stdout.close()
            self.helper = None


def check_kernels(path: str, info: ModelInfo, layer_names: tuple = ()) -> int:
    """Loads and runs the model in TFLM with a large arena; names missing kernels.

    Args:
        path: A `.tflite` file.
        info: Its `inspect_model` result.
        layer_names: Names of the Keras layers, to say which layer an op came from.

    Returns:
        The arena bytes TFLM's recording allocator reported as used.

    Raises:
        MicroExportError: If TFLM has no kernel for an op (each is named, with
            its layer where known and a hint), or fails for another reason.
    """
    size = os.path.getsize(path)
    arena = min(_MAX_ARENA, max(1 << 20, 16 * size))
    result = _probe(path, arena, len(info.inputs))
    if result.returncode == 0:
        used = re.search(r"Arena allocation total (\d+) bytes", result.stderr)
        return int(used[1]) if used else arena
    missing = sorted(set(re.findall(r"Didn't find op for builtin opcode '(\w+)'", result.stderr)))
    missing += sorted(set(re.findall(r"Didn't find op for custom opcode '([^']+)'", result.stderr)))
    if missing:
        details = []
        for op in missing:
            tensors = info.op_tensors.get(op, [])
            layers = layers_mentioned(";".join(tensors), layer_names)
            first_tensor = tensors[0].split(";")[0] if tensors else "unknown"
            where = f"layer {', '.join(layers)}" if layers else f"tensor {first_tensor}"
            hint = HINTS.get(op, "replace the layer by one that TFLite Micro supports")
            details.append(f"{op} (from {where}; hint: {hint})")
        raise MicroExportError(
            "TFLite Micro has no kernel for: " + "; ".join(details) + ". Nothing was written."
        )
    reason = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
    raise MicroExportError(f"The model does not run in TFLite Micro: {reason}")


def measure_arena(path: str, info: ModelInfo, reported: int) -> int:
    """Finds the smallest tensor arena with which the model allocates and runs.

    Bisection to `ARENA_RESOLUTION` bytes, starting around the size the
    recording allocator `reported`; each probe runs in a process of its own.

    Args:
        path: A `.tflite` file that runs in TFLM (see `check_kernels`).
        info: Its `inspect_model` result.
        reported: The arena use the recording allocator reported.

    Returns:
        The smallest arena size in bytes (a multiple of `ARENA_RESOLUTION`)
        that works; one resolution step less fails.
    """
    prober = _ArenaProber(path, len(info.inputs))
    try:
        return _smallest_working_arena(prober.works, reported)
    finally:
        prober.close()


def _smallest_working_arena(works, reported: int) -> int:
    """Bisection to `ARENA_RESOLUTION` bytes between a failing and a working arena."""
    step = ARENA_RESOLUTION
    high = _round_up(reported + 4 * step)
    while not works(high):
        if high >= _MAX_ARENA:
            raise MicroExportError("No arena up to 256 MB lets the model run in TFLite Micro.")
        high *= 2
    low = max(step, _round_up(reported // 2))
    while low > step and works(low):
        low //= 2
    low = low - low % step
    # invariant: `low` fails (or is the smallest step), `high` works
    while high - low > step:
        middle = _round_up((low + high) // 2)
        if middle >= high:
            break
        if works(middle):
            high = middle
        else:
            low = middle
    return high


def _round_up(value: int) -> int:
    return int(math.ceil(value / ARENA_RESOLUTION) * ARENA_RESOLUTION)


def with_margin(arena: int, margin: float) -> int:
    """`arena` plus the fraction `margin`, rounded up to TFLM's 16-byte alignment.

    Example:
    >>> with_margin(1000, 0.1)
    1104
    """
    return _round_up(arena * (1 + margin))


def run_tflm(
    model_bytes: bytes, info: ModelInfo, x: np.ndarray, arena: int, dequantize: bool = True
) -> np.ndarray:
    """Runs the first output of the model on each example of `x` in TFLM.

    Inputs are quantized and outputs dequantized with the tensors' parameters.

    Args:
        model_bytes: The flatbuffer.
        info: Its `inspect_model` result.
        x: Float inputs, shape `(n, *input_shape)`.
        arena: An arena size known to work (see `measure_arena`).
        dequantize: False returns the output tensor as produced (e.g. int8).

    Returns:
        Outputs, shape `(n, *output_shape[1:])`: float32, or the output's type.
    """
    from tflite_micro.python.tflite_micro import runtime

    interpreter = runtime.Interpreter.from_bytes(bytes(model_bytes), arena_size=arena)
    source, target = info.inputs[0], info.outputs[0]
    outputs = []
    for example in np.asarray(x, "float32"):
        interpreter.set_input(source.quantize(example.reshape(source.shape)), 0)
        interpreter.invoke()
        output = np.asarray(interpreter.get_output(0)).reshape(target.shape[1:])
        outputs.append(target.dequantize(output) if dequantize else output.copy())
    return np.stack(outputs)


def write_temporary(model_bytes: bytes) -> str:
    """Writes the model to a temporary `.tflite` file for the probes; returns its path."""
    handle, path = tempfile.mkstemp(suffix=".tflite", prefix="keras_distill_")
    with os.fdopen(handle, "wb") as file:
        file.write(model_bytes)
    return path
