"""Running a built TFLite Micro application on the host or on an emulated Cortex-M core.

Cortex-M binaries run in `qemu-system-arm` (an MPS2 board: `mps2-an386` is a
Cortex-M4) with semihosting, which gives the program the host's files and
console, and `-icount shift=0`, which makes QEMU's clock advance one
nanosecond per executed instruction. The application measures each
`Invoke()` with the board's timer 0 (a 32-bit CMSDK timer), which QEMU drives
from that clock at the board's 25 MHz system clock, so one tick is 40
executed instructions: a repeatable cost figure in instructions, not cycles
or milliseconds.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
import struct
import subprocess
import tempfile

import numpy as np

from keras_distill._src.micro import verify
from keras_distill._src.micro.codegen import INPUTS_FILE
from keras_distill._src.micro.firmware import QEMU_PACKAGE, TARGETS, Firmware, FirmwareError
from keras_distill._src.micro.result import TargetCheck

INSTRUCTIONS_PER_TICK = 40  # -icount shift=0: 1 ns per instruction; timer 0 at 25 MHz
INITIAL_STACK_POINTER = 0x20400000  # top of the MPS2 boards' 4 MB SRAM
DEFAULT_TIMEOUT = 600
ARENA_RESOLUTION = 16
PROBE_TIMEOUT = 120


@dataclasses.dataclass(frozen=True)
class TargetRun:
    """What the application produced on its target.

    Attributes:
        target: The `TARGETS` key it ran on.
        raw_outputs: The output tensor as produced (int8 for an int8 model),
            shape `(n, *output_shape[1:])`.
        outputs: `raw_outputs` dequantized to float32.
        arena_used_bytes: `MicroInterpreter::arena_used_bytes()` measured on the
            target (32-bit pointers on Cortex-M).
        arena_minimum_bytes: With `run_on_target(..., measure_arena=True)`, the
            smallest arena, to 16 bytes, in which the model allocated and ran
            on the target (more than `arena_used_bytes`: allocation needs
            temporary space that it gives back); else None.
        instructions: Instructions executed per `Invoke()` (QEMU `-icount`, to
            the timer's resolution of 40), one per example, or None on the host.

    Example:
    >>> run = TargetRun("host", np.zeros((1, 2), "int8"), np.zeros((1, 2)), 1024, None)
    >>> run.arena_used_bytes
    1024
    """

    target: str
    raw_outputs: np.ndarray
    outputs: np.ndarray
    arena_used_bytes: int
    instructions: np.ndarray | None
    arena_minimum_bytes: int | None = None


def _inputs_file(firmware: Firmware, x, path: pathlib.Path, arena_limit: int = 0) -> int:
    source = firmware.inputs[0]
    x = np.asarray(x, "float32")
    example_shape = tuple(source.shape[1:])
    if x.ndim == len(example_shape):
        x = x[None]
    if tuple(x.shape[1:]) != example_shape or len(x) == 0:
        raise FirmwareError(
            f"Inputs of shape {tuple(x.shape)}; {firmware.name!r} takes a batch "
            f"of examples of shape {example_shape}."
        )
    examples = np.stack([source.quantize(example) for example in x])
    path.write_bytes(
        b"KDIN"
        + struct.pack("<III", len(x), examples[0].nbytes, arena_limit)
        + np.ascontiguousarray(examples).tobytes()
    )
    return len(x)


def _vector_table(firmware: Firmware, path: pathlib.Path) -> None:
    """A two-word vector table: initial stack pointer and the ELF's entry point (Thumb)."""
    header = firmware.binary.read_bytes()[:28]
    if header[:4] != b"\x7fELF" or header[4] != 1:
        raise FirmwareError(f"{firmware.binary} is not a 32-bit ELF; rebuild it for a Cortex-M.")
    entry = struct.unpack("<I", header[24:28])[0]
    path.write_bytes(struct.pack("<II", INITIAL_STACK_POINTER, entry | 1))


def check_emulator(target: str) -> str | None:
    """The emulator that runs `target`'s binaries (None on the host); refuses a missing one.

    Args:
        target: A key of `kd.micro.TARGETS`.

    Returns:
        The path of `qemu-system-arm` for a Cortex-M target, or None for the host.

    Raises:
        FirmwareError: If `qemu-system-arm` is not installed (naming the package).
    """
    if not TARGETS[target].emulated:
        return None
    qemu = shutil.which("qemu-system-arm")
    if qemu is None:
        raise FirmwareError(
            f"qemu-system-arm not found; install it (`apt-get install "
            f"{QEMU_PACKAGE}`) to run {target} binaries."
        )
    return qemu


def _command(firmware: Firmware, folder: pathlib.Path) -> list:
    qemu = check_emulator(firmware.target)
    if qemu is None:
        return [str(firmware.binary), INPUTS_FILE]
    _vector_table(firmware, folder / "vectors.bin")
    return [
        qemu,
        "-M",
        TARGETS[firmware.target].machine,
        "-nographic",
        "-monitor",
        "none",
        "-serial",
        "none",
        "-icount",
        "shift=0",
        "-semihosting-config",
        "enable=on,target=native",
        "-device",
        "loader,file=vectors.bin,addr=0x0",
        "-device",
        f"loader,file={firmware.binary}",
    ]


def _execute(firmware: Firmware, command: list, folder: pathlib.Path, timeout: float) -> str:
    try:
        result = subprocess.run(
            command, cwd=folder, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise FirmwareError(
            f"{firmware.name!r} on {firmware.target} did not finish within {timeout} s "
            "(an endless loop or a hard fault in the emulator); pass a larger timeout= for "
            "large batches."
        ) from None
    text = result.stdout
    errors = [line.split()[1:] for line in text.splitlines() if line.startswith("KD_ERROR")]
    if errors:
        what, value = errors[0][0], errors[0][-1]
        if what == "arena_too_small":
            raise FirmwareError(
                f"AllocateTensors() failed on {firmware.target}: the tensor arena of {value} "
                f"bytes is too small for {firmware.name!r} there. Build with a larger "
                "arena_bytes= (the export's recommended size, or what TargetRun."
                "arena_used_bytes reports with a larger arena)."
            )
        raise FirmwareError(
            f"The application failed on {firmware.target}: {what} {value}.\n{text[-2000:]}"
        )
    if "KD_DONE" not in text:
        raise FirmwareError(
            f"{firmware.name!r} stopped on {firmware.target} before finishing (exit "
            f"{result.returncode}); the emulator or program crashed. Output:\n"
            f"{(text + result.stderr)[-2000:]}"
        )
    return text


def run_on_target(
    firmware: Firmware,
    x,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    arena_bytes: int | None = None,
    measure_arena: bool = False,
) -> TargetRun:
    """Runs the built application on a batch of inputs, on its target.

    Inputs are quantized with the input tensor's parameters, written to a
    file the application reads (through semihosting on Cortex-M), and
    every example is invoked once; outputs come back as produced and
    dequantized, with the arena used and, on Cortex-M, the instructions
    executed per inference.

    Args:
        firmware: What `kd.micro.build` returned.
        x: Float inputs, shape `(n, *input_shape)` (or one example).
        timeout: Seconds before the run is stopped.
        arena_bytes: Use only this much of the built arena (no rebuild).
        measure_arena: Also find the smallest arena that allocates and runs
            on the target, by bisection to 16 bytes (each probe its own run,
            so a probe that crashes TFLM cannot mislead the result).

    Returns:
        A `TargetRun`.

    Raises:
        FirmwareError: For inputs of the wrong shape, a missing emulator, a
            timeout, a crash, or an arena too small on the target.

    Example:
    >>> import keras, pathlib, tempfile
    >>> import keras_distill as kd
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> exported = kd.micro.export(model, np.random.rand(8, 4), tempfile.mkdtemp())
    >>> firmware = kd.micro.Firmware("model", "host", pathlib.Path("model"), 4096,
    ...                              exported.inputs, exported.outputs, pathlib.Path("."))
    >>> try:
    ...     kd.micro.run_on_target(firmware, np.zeros((2, 3)))
    ... except kd.micro.FirmwareError as error:
    ...     print(error)
    Inputs of shape (2, 3); 'model' takes a batch of examples of shape (4,).
    """
    run = _parse(firmware, *_run(firmware, x, timeout, arena_bytes or 0))
    if not measure_arena:
        return run
    return dataclasses.replace(run, arena_minimum_bytes=_minimum_arena(firmware, x, run))


def _run(firmware: Firmware, x, timeout: float, arena_limit: int) -> tuple[str, int]:
    with tempfile.TemporaryDirectory(prefix="keras_distill_run_") as scratch:
        folder = pathlib.Path(scratch)
        count = _inputs_file(firmware, x, folder / INPUTS_FILE, arena_limit)
        return _execute(firmware, _command(firmware, folder), folder, timeout), count


def _minimum_arena(firmware: Firmware, x, run: TargetRun) -> int:
    """Bisection between what the run used (too little) and the built arena (enough)."""
    one = np.asarray(x, "float32").reshape((-1, *firmware.inputs[0].shape[1:]))[:1]
    fails, runs = run.arena_used_bytes - ARENA_RESOLUTION, firmware.arena_bytes
    while runs - fails > ARENA_RESOLUTION:
        middle = (fails + runs) // 2 // ARENA_RESOLUTION * ARENA_RESOLUTION
        if middle <= fails:
            break
        try:
            _run(firmware, one, PROBE_TIMEOUT, middle)
            runs = middle
        except FirmwareError:  # too small: refused, crashed or hung
            fails = middle
    return runs


def _parse(firmware: Firmware, text: str, count: int) -> TargetRun:
    target = firmware.outputs[0]
    lines = [line.split() for line in text.splitlines() if line.startswith("KD_OUTPUT")]
    if len(lines) != count:
        raise FirmwareError(f"Expected {count} outputs from {firmware.target}, got {len(lines)}.")
    raw = np.stack([np.frombuffer(bytes.fromhex(line[3]), target.dtype) for line in lines])
    raw = raw.reshape((count, *target.shape[1:]))
    used = int(
        next(line.split()[1] for line in text.splitlines() if line.startswith("KD_ARENA_USED"))
    )
    on_arm = TARGETS[firmware.target].emulated
    ticks = np.array([int(line[2]) for line in lines], dtype=np.int64)
    instructions = ticks * INSTRUCTIONS_PER_TICK
    return TargetRun(
        firmware.target, raw, target.dequantize(raw), used, instructions if on_arm else None
    )


def _check_identical(run: TargetRun, expected: np.ndarray, arena: int) -> None:
    different = np.any(
        run.raw_outputs.reshape(len(expected), -1) != expected.reshape(len(expected), -1), axis=1
    )
    if different.any():
        first = int(np.argmax(different))
        raise FirmwareError(
            f"On {run.target} (arena {arena:,} B) the outputs differ from the TFLite Micro "
            f"Python interpreter's on {int(different.sum())} of {len(expected)} examples (first: "
            f"example {first}: {run.raw_outputs[first].ravel()[:8]} against "
            f"{expected[first].ravel()[:8]}). Nothing was written."
        )


def count_instructions(
    folder, x, expected: np.ndarray, target: str, *, tflm_dir=None, cache_dir=None
) -> int:
    """Median instructions per inference of an export built once for a Cortex-M target.

    The application is built with the export's arena (quietly), run on `x` in
    QEMU, and its outputs must equal `expected` bit for bit.

    Args:
        folder: A folder with the export's files.
        x: Float inputs.
        expected: The Python TFLM interpreter's raw outputs on `x`.
        target: A Cortex-M key of `kd.micro.TARGETS`.
        tflm_dir: The TFLite Micro tree (see `kd.micro.build`).
        cache_dir: Build cache (see `build`).

    Returns:
        The median of the instructions each inference ran.

    Raises:
        FirmwareError: For the host target (it counts no instructions), outputs
            that differ, or as `build` and `run_on_target` raise.
    """
    from keras_distill._src.micro.firmware import build

    if target not in TARGETS or not TARGETS[target].emulated:
        raise FirmwareError(f"Instructions are counted on a Cortex-M target; received {target!r}.")
    firmware = build(folder, tflm_dir, target, cache_dir=cache_dir, verbose=0)
    run = run_on_target(firmware, x)
    _check_identical(run, expected, firmware.arena_bytes)
    return int(np.median(run.instructions))


def verify_on_target(
    folder,
    model_bytes: bytes,
    x,
    expected: np.ndarray,
    target: str,
    *,
    tflm_dir=None,
    arena_margin: float = 0.1,
    cache_dir=None,
) -> TargetCheck:
    """Builds an export for a target, runs it, and checks it against the Python interpreter.

    The application is built with the export's recommended arena and run on
    `x`; its outputs must equal `expected` (the Python TFLM interpreter's raw
    outputs) bit for bit. The smallest arena that ran on the target plus the
    margin is then built and run again, and must give the same outputs: that
    arena is the target's recommendation.

    Args:
        folder: A folder with the export's files.
        model_bytes: The `.tflite` flatbuffer.
        x: Float inputs.
        expected: The Python TFLM interpreter's raw outputs on `x`.
        target: A key of `kd.micro.TARGETS`.
        tflm_dir: The TFLite Micro tree (see `kd.micro.build`).
        arena_margin: Fraction added to the target's arena for the recommendation.
        cache_dir: Build cache (see `build`).

    Returns:
        A `TargetCheck` (median instructions per inference, or None on the host).

    Raises:
        FirmwareError: If the outputs differ, or as `build` and `run_on_target` raise.

    Example:
    >>> verify_on_target("missing", b"", np.zeros((1, 4)), np.zeros((1, 2)), "esp8266")
    Traceback (most recent call last):
    ...
    keras_distill._src.micro.firmware.FirmwareError: Unknown target 'esp8266'; choose one of \
['cortex-m3', 'cortex-m4', 'host'].
    """
    from keras_distill._src.micro.firmware import build

    options = dict(tflm_dir=tflm_dir, target=target, cache_dir=cache_dir)
    first = build(folder, **options)
    run = run_on_target(first, x, measure_arena=True)
    _check_identical(run, expected, first.arena_bytes)
    recommended = verify.with_margin(run.arena_minimum_bytes, arena_margin)
    second = run_on_target(build(folder, arena_bytes=recommended, verbose=0, **options), x)
    _check_identical(second, expected, recommended)
    instructions = None if run.instructions is None else int(np.median(run.instructions))
    return TargetCheck(
        target=target,
        examples=len(expected),
        arena_minimum_bytes=run.arena_minimum_bytes,
        arena_used_bytes=run.arena_used_bytes,
        recommended_arena_bytes=recommended,
        instructions=instructions,
    )
