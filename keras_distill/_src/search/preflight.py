"""The pre-flight of a candidate: int8 conversion, TFLM load, flash, arena, ops, budget."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time

import keras
import numpy as np

from keras_distill._src.micro import convert, model_info, verify
from keras_distill._src.micro.errors import MicroExportError
from keras_distill._src.search.budget import Budget, Latency
from keras_distill._src.training.quantization_aware import quantization_aware

CONSTRAINTS = ("flash", "arena", "latency", "tflm_ops")
CALIBRATION_EXAMPLES = 64  # representative inputs for the int8 ranges of a pre-flight


@dataclasses.dataclass(frozen=True)
class Preflight:
    """What TFLite Micro says of a candidate before any training.

    Attributes:
        flash_bytes: Bytes of the int8 model (None if it did not convert).
        arena_bytes: Smallest tensor arena it runs with (None if not measured:
            it did not load, or its flash alone is over the budget).
        reason: Why it is infeasible, or None if it fits.
        constraints: Optuna constraint values by name (<= 0: within the budget).
        seconds: Time the pre-flight took.

    Example:
    >>> Preflight(2_264, 1_632, None, {"flash": -1.0}, 1.2).feasible
    True
    """

    flash_bytes: int | None
    arena_bytes: int | None
    reason: str | None
    constraints: dict
    seconds: float

    @property
    def feasible(self) -> bool:
        """Within the budget, with every op in TFLite Micro."""
        return self.reason is None


def int8_model(model: keras.Model, samples: np.ndarray) -> tuple[bytes, model_info.ModelInfo]:
    """The fully int8 flatbuffer of `model` and what it holds."""
    model_bytes = convert.to_int8_tflite(model, samples)
    return model_bytes, model_info.inspect_model(model_bytes)


@contextlib.contextmanager
def weights_like_trained(model: keras.Model):
    """The model with its constant-initialized trainable weights varied, restored after.

    The converter stores equal constant buffers once, so an untrained candidate
    (zero biases, batch normalization's ones and zeros) converts to a smaller
    flatbuffer than the trained one: 15-30% smaller on small dense and 1-D
    convolutional candidates. Varied by up to 5% of their size (more than an int8
    step), the weights are as distinct as trained ones, and the flash holds after training.
    """
    originals = [variable.numpy() for variable in model.trainable_weights]
    rng = np.random.default_rng(0)
    try:
        for variable, values in zip(model.trainable_weights, originals, strict=True):
            if values.dtype.kind == "f" and values.size and np.all(values == values.flat[0]):
                spread = 0.05 * max(float(np.abs(values.flat[0])), 1.0)
                variable.assign(values + spread * rng.uniform(-1.0, 1.0, values.shape))
        yield model
    finally:
        for variable, values in zip(model.trainable_weights, originals, strict=True):
            variable.assign(values)


def preflight(
    model: keras.Model, samples: np.ndarray | None, budget: Budget, latency: Latency
) -> Preflight:
    """Converts an (untrained) candidate to int8 and measures it in TFLite Micro.

    The candidate converts with weights as distinct as trained ones
    (`weights_like_trained`), so its flash holds for the trained candidate; the
    arena does not depend on the weights' values.

    Args:
        model: The candidate.
        samples: Representative inputs for the int8 ranges; None for a
            quantization-aware model (it carries its own).
        budget: The `Budget`.
        latency: The candidate's latency estimate.

    Returns:
        A `Preflight`.
    """
    start = time.perf_counter()
    flash = arena = None
    try:
        calibration = None if samples is None else samples[:CALIBRATION_EXAMPLES]
        with weights_like_trained(model):
            model_bytes, info = int8_model(model, calibration)
        flash = len(model_bytes)
        path = verify.write_temporary(model_bytes)
        try:
            reported = verify.check_kernels(path, info, tuple(layer.name for layer in model.layers))
            if budget.flash_bytes is None or flash <= budget.flash_bytes:
                arena = verify.measure_arena(path, info, reported)
        finally:
            os.remove(path)
    except MicroExportError as error:
        seconds = time.perf_counter() - start
        return Preflight(
            flash, None, f"not for TFLite Micro: {error}", dict.fromkeys(CONSTRAINTS, 1.0), seconds
        )
    constraints, problems = over_budget(flash, arena, latency, budget)
    return Preflight(
        flash,
        arena,
        None if problems is None else f"over budget: {problems}",
        {**constraints, "tflm_ops": -1.0},
        time.perf_counter() - start,
    )


def preflight_candidate(
    model: keras.Model, samples: np.ndarray, budget: Budget, latency: Latency, aware: bool
) -> tuple[keras.Model, Preflight]:
    """`(model to train, Preflight)`: the candidate, made quantization-aware if `aware`.

    A quantization-aware candidate is pre-flighted as such (converted with its
    own ranges): its int8 model has the float one's ops, but its flash and
    arena differ by up to about a tenth (measured on default-space candidates).
    A layer quantization-aware training cannot model makes the candidate
    infeasible before any conversion or training, as an op without a TFLite
    Micro kernel does.
    """
    if not aware:
        return model, preflight(model, samples, budget, latency)
    try:
        aware_model = quantization_aware(model)
    except ValueError as error:
        reason = f"not for quantization-aware training: {error}"
        return model, Preflight(None, None, reason, dict.fromkeys(CONSTRAINTS, 1.0), 0.0)
    with ranges_observed(aware_model, samples[:CALIBRATION_EXAMPLES]):
        return aware_model, preflight(aware_model, None, budget, latency)


@contextlib.contextmanager
def ranges_observed(model: keras.Model, samples: np.ndarray):
    """A quantization-aware model whose ranges observed `samples`, its state restored after.

    An untrained aware model's activation ranges are empty ([0, 0]); converted
    so, it came out up to 144 B smaller than trained (a 1-D CNN with batch
    normalization). One training-mode call on the samples sets each range to
    what it saw, as the first training step does.

    Args:
        model: A `kd.quantization_aware` model.
        samples: Inputs to observe (a batch).

    Yields:
        The model; its non-trainable state (ranges, moving statistics, seed
        generators) is what it was before, once the block ends.
    """
    originals = [variable.numpy() for variable in model.non_trainable_variables]
    try:
        model(samples, training=True)
        yield model
    finally:
        for variable, values in zip(model.non_trainable_variables, originals, strict=True):
            variable.assign(values)


def over_budget(
    flash: int, arena: int | None, latency: Latency, budget: Budget
) -> tuple[dict, str | None]:
    """A candidate's flash, arena and latency held against the budget.

    Args:
        flash: The int8 model's bytes.
        arena: Its smallest arena, or None if not measured.
        latency: Its latency (estimated, or counted on the emulated core).
        budget: The `Budget`.

    Returns:
        `(constraints, problems)`: Optuna's constraint values of `"flash"`,
        `"arena"` and `"latency"` (<= 0 fits), and what exceeds the budget in
        words (None when the candidate fits).
    """
    excess = budget.excess(flash, arena, latency)
    problems = []
    if excess[0] > 0:
        problems.append(f"flash {flash:,} B > {budget.flash_bytes:,} B")
    if excess[1] > 0:
        problems.append(
            f"arena {arena:,} B (+{budget.arena_margin:.0%} margin: "
            f"{verify.with_margin(arena, budget.arena_margin):,} B) > RAM {budget.ram_bytes:,} B"
        )
    if excess[2] > 0:
        how = "estimated" if latency.instructions is None else "counted"
        problems.append(
            f"latency {latency.milliseconds:.2f} ms ({how}) > {1000 * budget.latency_seconds:g} ms"
        )
    constraints = dict(zip(CONSTRAINTS[:3], excess, strict=True))
    return constraints, "; ".join(problems) or None
