"""A search's budget (flash, RAM, latency) and the latency estimate from MACs."""

from __future__ import annotations

import dataclasses

import keras

from keras_distill._src.micro.boards import Board, get_board
from keras_distill._src.micro.exporter import DEFAULT_ARENA_MARGIN
from keras_distill._src.micro.verify import with_margin
from keras_distill._src.utils.model_inspection import computing_layer, multiply_accumulates

# Core clocks of the board presets (Hz), from the same datasheets as their memories.
CLOCK_HZ = {
    "arduino_nano_33_ble_sense": 64_000_000,  # nRF52840, Cortex-M4F
    "esp32": 240_000_000,  # Xtensa LX6 (not a Cortex-M4: the estimate is rougher)
    "stm32f746g_disco": 216_000_000,  # Cortex-M7
    "raspberry_pi_pico": 133_000_000,  # Cortex-M0+ (no DSP instructions: slower per MAC)
}
# Instructions per multiply-accumulate of TFLite Micro's reference kernels on the
# emulated Cortex-M4 (QEMU -icount), from benchmarks/results/firmware.md: the MNIST-1D
# MLP (7,296 MACs, 53,560 instructions) and MLPerf Tiny ad01 (dense, ~7.5 per MAC);
# kws_ref_model, pretrainedResnet and vww_96 (convolutions, 66 to 75 per MAC).
INSTRUCTIONS_PER_DENSE_MAC = 7.4
INSTRUCTIONS_PER_CONV_MAC = 70.0
ESTIMATE_METHOD = (
    "estimated from MACs: {dense:,} dense MACs x 7.4 + {conv:,} convolution MACs x 70 "
    "instructions (TFLM reference kernels measured on the emulated Cortex-M4), one "
    "instruction per cycle at {clock:,} Hz"
)
MEASURED_METHOD = (
    "measured: {instructions:,} instructions per inference of the int8 model on the emulated "
    "Cortex-M4 (QEMU -icount, TFLM reference kernels), one instruction per cycle at {clock:,} Hz"
)


@dataclasses.dataclass(frozen=True)
class Latency:
    """The time of one inference on the board, and how it was obtained.

    Attributes:
        seconds: Seconds per inference, or None when no clock is known.
        method: `"measured ..."` or `"estimated ..."`, with the calibration.
        instructions: The instructions counted on the emulated Cortex-M4, or
            None for an estimate.

    Example:
    >>> Latency(0.002, "estimated from MACs").milliseconds
    2.0
    """

    seconds: float | None
    method: str
    instructions: int | None = None

    @property
    def milliseconds(self) -> float | None:
        """`seconds` in milliseconds."""
        return None if self.seconds is None else 1000 * self.seconds


def estimate_latency(model: keras.Model, clock_hz: int | None) -> Latency:
    """Latency from the model's MACs, calibrated on the emulated Cortex-M4.

    Args:
        model: A built Keras model.
        clock_hz: The board's core clock, or None.

    Returns:
        A `Latency` whose `method` says it is an estimate and how it was made.

    Example:
    >>> model = keras.Sequential([keras.Input((40,)), keras.layers.Dense(10)])
    >>> round(estimate_latency(model, 64_000_000).seconds * 1e6, 1)
    46.2
    """
    total = multiply_accumulates(model)
    computing = [(layer, computing_layer(layer)) for layer in model.layers]
    dense = sum(
        int(inner.kernel.shape[0] * inner.kernel.shape[1])
        for layer, inner in computing
        if isinstance(inner, keras.layers.Dense) and len(layer.output.shape) == 2
    )
    conv = total - dense
    method = ESTIMATE_METHOD.format(dense=dense, conv=conv, clock=clock_hz or 0)
    if not clock_hz:
        return Latency(None, "not estimated: no clock (give a board preset or clock_hz=)")
    instructions = dense * INSTRUCTIONS_PER_DENSE_MAC + conv * INSTRUCTIONS_PER_CONV_MAC
    return Latency(instructions / clock_hz, method)


def measured_latency(instructions: int, clock_hz: int | None) -> Latency:
    """Latency from the instructions one inference ran on the emulated Cortex-M4.

    Args:
        instructions: Median instructions per inference (`TargetCheck.instructions`).
        clock_hz: The board's core clock, or None.

    Returns:
        A `Latency` whose `method` says it was measured and how.

    Example:
    >>> measured_latency(53_560, 64_000_000).milliseconds
    0.836875
    """
    if not clock_hz:
        method = f"measured: {instructions:,} instructions per inference; no clock to time them"
        return Latency(None, method, instructions)
    method = MEASURED_METHOD.format(instructions=instructions, clock=clock_hz)
    return Latency(instructions / clock_hz, method, instructions)


@dataclasses.dataclass(frozen=True)
class Budget:
    """What a candidate may take on the board: flash for the model, RAM for its arena.

    Attributes:
        flash_bytes: Flash the model may take (given, or the board's times the share), or None.
        ram_bytes: RAM the recommended arena may take (likewise), or None.
        latency_seconds: The latency limit, or None.
        clock_hz: The core clock for latency estimates, or None.
        board: The preset's name, or None.
        model_share: The share of the board's memory given to the model.
        arena_margin: Added to the measured arena, as `kd.micro.export` recommends it.
        given: The limits set by number (`"flash"`, `"ram"`) rather than taken from the board.

    Example:
    >>> budget = Budget.from_arguments("esp32", None, None, model_share=0.25)
    >>> budget.flash_bytes, budget.ram_bytes, budget.clock_hz
    (1048576, 81920, 240000000)
    """

    flash_bytes: int | None
    ram_bytes: int | None
    latency_seconds: float | None = None
    clock_hz: int | None = None
    board: str | None = None
    model_share: float = 1.0
    arena_margin: float = DEFAULT_ARENA_MARGIN
    given: tuple = ()

    @classmethod
    def from_arguments(
        cls, board, flash_bytes, ram_bytes, model_share=1.0, latency_ms=None, clock_hz=None
    ) -> Budget:
        """The budget of `find_student`'s arguments, checked.

        `flash_bytes` and `ram_bytes` are the model's own limits; `model_share`
        scales only the limits taken from the board.

        Raises:
            ValueError: For an unknown board (the presets are listed), no
                budget at all, a share outside (0, 1], or a latency limit
                without a clock.
        """
        preset = board if isinstance(board, Board) or board is None else get_board(board)
        if not 0 < model_share <= 1:
            raise ValueError(f"`model_share` must be in (0, 1]; received {model_share!r}.")
        given = {"flash": flash_bytes, "ram": ram_bytes}
        given = {key: int(value) for key, value in given.items() if value}
        shared = {} if preset is None else {"flash": preset.flash_bytes, "ram": preset.ram_bytes}
        shared = {key: int(value * model_share) for key, value in shared.items()}
        flash = given.get("flash", shared.get("flash"))
        ram = given.get("ram", shared.get("ram"))
        if flash is None and ram is None:
            raise ValueError(
                "No budget: give `board=` (a preset of kd.micro.BOARDS) or `flash_bytes=` "
                "and/or `ram_bytes=`."
            )
        clock = clock_hz or (CLOCK_HZ.get(preset.name) if preset else None)
        if latency_ms is not None and not clock:
            raise ValueError(
                f"A latency limit ({latency_ms!r} ms) needs the board's clock: give "
                "`clock_hz=` or a board preset."
            )
        return cls(
            flash_bytes=flash,
            ram_bytes=ram,
            latency_seconds=None if latency_ms is None else latency_ms / 1000,
            clock_hz=clock,
            board=preset.name if preset else None,
            model_share=model_share,
            given=tuple(given),
        )

    def excess(self, flash: int, arena: int | None, latency: Latency) -> list:
        """Optuna constraint values (<= 0 fits): flash, arena and latency over the budget."""
        limits = (
            (flash, self.flash_bytes),
            (None if arena is None else with_margin(arena, self.arena_margin), self.ram_bytes),
            (latency.seconds, self.latency_seconds),
        )
        return [
            -1.0 if limit is None or value is None else float(value - limit)
            for value, limit in limits
        ]

    def describe(self) -> str:
        """The budget in words: each limit, and where it came from (a number or the board).

        Example:
        >>> Budget.from_arguments("esp32", 20_000, None, model_share=0.25).describe()
        'flash 20,000 B (from flash_bytes=), RAM 81,920 B (25% of esp32)'
        """
        limits = (("flash", "flash", self.flash_bytes), ("ram", "RAM", self.ram_bytes))
        parts = [
            f"{label} {value:,} B" if value else f"{label} unlimited" for _, label, value in limits
        ]
        if self.board:  # each limit's source: its own argument, or the board's share
            share = f"{100 * self.model_share:.3g}% of {self.board}"  # 1/64: 1.56%
            notes = [f"from {key}_bytes=" if key in self.given else share for key, _, _ in limits]
            if notes[0] == notes[1]:  # both from the board: said once
                parts[1] += f" ({share})"
            else:
                parts = [f"{part} ({note})" for part, note in zip(parts, notes, strict=True)]
        if self.latency_seconds:
            parts.append(f"latency {1000 * self.latency_seconds:g} ms")
        return ", ".join(parts)
