"""Serializable schedules for the temperature and alpha of a `Distiller`.

A schedule is a small callable: `schedule(step)` returns a Python float for an
epoch or a training step (whichever `TemperatureScheduler(update=...)` counts).
Schedules are evaluated in Python by the callback, which assigns the result to
the distiller's variables, so changing them never retraces the compiled step.

Example:
>>> schedule = Linear(start=8.0, end=2.0, steps=3)
>>> [schedule(step) for step in range(5)]
[8.0, 6.0, 4.0, 2.0, 2.0]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras


class Schedule:
    """Base class of the schedules: `__call__(step) -> float` and `get_config`.

    Subclass it to write a schedule that saves and loads with Keras'
    serialization: implement `__call__` and `get_config` (the constructor
    arguments), as for `keras.optimizers.schedules.LearningRateSchedule`.
    Schedules with equal configs are equal and hash alike.

    Example:
    >>> class Halving(Schedule):
    ...     def __init__(self, start):
    ...         self.start = start
    ...     def __call__(self, step):
    ...         return self.start / 2 ** step
    ...     def get_config(self):
    ...         return {"start": self.start}
    >>> Halving(8.0)(2), Halving(8.0) == Halving(8.0)
    (2.0, True)
    """

    def __call__(self, step: int) -> float:
        """Returns the value at `step` (an epoch or a training step, >= 0)."""
        raise NotImplementedError

    def get_config(self) -> dict:
        """Returns the constructor arguments of the schedule.

        Raises:
            NotImplementedError: Unless the subclass implements it.
        """
        raise NotImplementedError(
            f"Schedule '{type(self).__name__}' must override `get_config()` to return its "
            "constructor arguments, so that it can be saved and compared."
        )

    def extremes(self) -> list[float] | None:
        """The smallest and largest values the schedule takes, if known without running it.

        `TemperatureScheduler` checks them at construction; a subclass that
        does not say returns None, and its values are checked as they come.
        """
        return None

    @classmethod
    def from_config(cls, config: dict) -> Schedule:
        """Creates a schedule from `get_config()` output."""
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash((type(self), repr(sorted(self.get_config().items()))))


def _check_step(step: int) -> int:
    if step < 0:
        raise ValueError(f"A schedule step must be >= 0; received step={step!r}.")
    return step


@keras.saving.register_keras_serializable(package="keras_distill")
class Constant(Schedule):
    """The same value at every step.

    Args:
        value: The value.

    Example:
    >>> Constant(4.0)(100)
    4.0
    """

    def __init__(self, value: float):
        self.value = float(value)

    def __call__(self, step: int) -> float:
        """Returns the value at `step`."""
        _check_step(step)
        return self.value

    def extremes(self) -> list[float]:
        """The value."""
        return [self.value]

    def get_config(self) -> dict:
        """Returns the constructor arguments."""
        return {"value": self.value}


class _Annealing(Schedule):
    """From `start` to `end` over `steps` steps, then `end`; subclasses shape it."""

    def __init__(self, start: float, end: float, steps: int):
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"`steps` must be a positive integer; received steps={steps!r}.")
        self.start = float(start)
        self.end = float(end)
        self.steps = steps

    def __call__(self, step: int) -> float:
        """Returns the value at `step`."""
        progress = min(_check_step(step), self.steps) / self.steps
        if progress >= 1.0:
            return self.end
        return self._interpolate(progress)

    def _interpolate(self, progress: float) -> float:
        raise NotImplementedError

    def extremes(self) -> list[float]:
        """`start` and `end`: every value lies between them."""
        return [self.start, self.end]

    def get_config(self) -> dict:
        """Returns the constructor arguments."""
        return {"start": self.start, "end": self.end, "steps": self.steps}


@keras.saving.register_keras_serializable(package="keras_distill")
class Linear(_Annealing):
    """Straight line from `start` (at step 0) to `end` (at `steps` and after).

    Args:
        start: Value at step 0.
        end: Value from step `steps` on.
        steps: Number of steps (epochs or batches) the annealing takes.

    Raises:
        ValueError: If `steps` is not a positive integer.

    Example:
    >>> Linear(start=4.0, end=1.0, steps=3)(1)
    3.0
    """

    def _interpolate(self, progress: float) -> float:
        return self.start + (self.end - self.start) * progress


@keras.saving.register_keras_serializable(package="keras_distill")
class Cosine(_Annealing):
    """Half a cosine wave from `start` to `end`: slow, fast, then slow again.

    Args:
        start: Value at step 0.
        end: Value from step `steps` on.
        steps: Number of steps (epochs or batches) the annealing takes.

    Raises:
        ValueError: If `steps` is not a positive integer.

    Example:
    >>> Cosine(start=4.0, end=2.0, steps=10)(5)
    3.0
    """

    def _interpolate(self, progress: float) -> float:
        weight = 0.5 * (1.0 - math.cos(math.pi * progress))
        return self.start + (self.end - self.start) * weight


@keras.saving.register_keras_serializable(package="keras_distill")
class Exponential(_Annealing):
    """Geometric interpolation: the value changes by the same factor every step.

    Args:
        start: Value at step 0, > 0.
        end: Value from step `steps` on, > 0.
        steps: Number of steps (epochs or batches) the annealing takes.

    Raises:
        ValueError: If `start` or `end` is not positive, or `steps` is not a
            positive integer.

    Example:
    >>> Exponential(start=8.0, end=2.0, steps=2)(1)
    4.0
    """

    def __init__(self, start: float, end: float, steps: int):
        if not (start > 0 and end > 0):
            raise ValueError(
                "Exponential annealing needs positive `start` and `end`; received "
                f"start={start!r}, end={end!r}."
            )
        super().__init__(start, end, steps)

    def _interpolate(self, progress: float) -> float:
        return self.start * (self.end / self.start) ** progress


@keras.saving.register_keras_serializable(package="keras_distill")
class Step(Schedule):
    """Piecewise constant: `values[i]` until step `boundaries[i]`, then the next.

    Args:
        boundaries: Increasing steps at which the value changes.
        values: One more value than boundaries.

    Raises:
        ValueError: If the boundaries are not strictly increasing non-negative
            integers, or `len(values) != len(boundaries) + 1`.

    Example:
    >>> schedule = Step(boundaries=[10, 20], values=[8.0, 4.0, 2.0])
    >>> [schedule(0), schedule(10), schedule(25)]
    [8.0, 4.0, 2.0]
    """

    def __init__(self, boundaries: Sequence[int], values: Sequence[float]):
        boundaries = [int(b) for b in boundaries]
        if len(values) != len(boundaries) + 1:
            raise ValueError(
                "`values` must have one more element than `boundaries`; received "
                f"boundaries={boundaries!r}, values={list(values)!r}."
            )
        if any(b < 0 for b in boundaries) or any(
            a >= b for a, b in zip(boundaries, boundaries[1:], strict=False)
        ):
            raise ValueError(
                "`boundaries` must be strictly increasing and >= 0; received "
                f"boundaries={boundaries!r}."
            )
        self.boundaries = boundaries
        self.values = [float(v) for v in values]

    def __call__(self, step: int) -> float:
        """Returns the value at `step`."""
        _check_step(step)
        index = sum(step >= boundary for boundary in self.boundaries)
        return self.values[index]

    def extremes(self) -> list[float]:
        """The values."""
        return [min(self.values), max(self.values)]

    def get_config(self) -> dict:
        """Returns the constructor arguments."""
        return {"boundaries": self.boundaries, "values": self.values}
