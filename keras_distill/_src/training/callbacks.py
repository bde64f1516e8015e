"""Keras callbacks that steer a `Distiller` during `fit`."""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable

import keras

from keras_distill._src.objective import objective
from keras_distill._src.training.base_distiller import BaseDistiller
from keras_distill._src.training.scheduled_values import SCHEDULED_KEYS, ScheduledValuesWriter
from keras_distill._src.training.schedules import Constant, Schedule
from keras_distill._src.utils.console import print_msg

ScheduleLike = Callable[[int], float] | float


def _required_positional(fn) -> int | None:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(p.kind in kinds and p.default is inspect.Parameter.empty for p in parameters)


def _as_schedule(schedule: ScheduleLike | None, name: str) -> Callable | None:
    if isinstance(schedule, (int, float)) and not isinstance(schedule, bool):
        return Constant(schedule)
    if schedule is not None and not callable(schedule):
        raise TypeError(
            f"`{name}` must be a callable schedule(step) -> float or a number; "
            f"received {schedule!r}."
        )
    if schedule is not None and (_required_positional(schedule) or 1) > 1:
        raise TypeError(
            f"`{name}` {schedule!r} takes {_required_positional(schedule)} arguments, like a "
            "keras.callbacks.LearningRateScheduler schedule(epoch, lr); TemperatureScheduler "
            "calls schedule(step) with the epoch (or step) only and assigns the number it "
            "returns. Write it as schedule(step) -> float."
        )
    return schedule


def _check_extremes(schedule, key: str, argument: str) -> None:
    """Refuses a schedule whose known values are not a valid temperature (or alpha)."""
    if not isinstance(schedule, Schedule):
        return
    check = objective.checked_temperature if key == "temperature" else objective.checked_alpha
    for value in schedule.extremes() or []:
        try:
            check(value)
        except ValueError as error:
            raise ValueError(f"`{argument}` {schedule!r} reaches {value!r}: {error}") from None


def _as_number(value, schedule, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"The {key} schedule {schedule!r} returned {value!r} at {where}; it must return "
            f"a number (the {key}), e.g. a float."
        )
    return float(value)


@keras.saving.register_keras_serializable(package="keras_distill")
class TemperatureScheduler(ScheduledValuesWriter):
    """Anneals a distiller's temperature (and optionally alpha) during `fit`.

    In the style of `keras.callbacks.LearningRateScheduler`: before each epoch
    (or each training batch) it evaluates the schedules and assigns the
    distiller's `temperature` and `alpha` variables, which the compiled
    training step reads, so nothing is retraced. The values are also written
    into `logs`, so `History` and `TensorBoard` record them.

    With `update="epoch"` a schedule is called with the epoch index; with
    `update="batch"` with the global step (the optimizer's iteration count),
    so a run resumed by `keras.callbacks.BackupAndRestore` continues the
    schedule where the interrupted run stopped.

    Args:
        schedule: Temperature schedule: a `kd.schedules` object, any
            callable `schedule(step) -> float`, or a number (constant).
        alpha_schedule: Optional schedule for `alpha`, in the same forms.
        update: `"epoch"` or `"batch"`: what a schedule step counts.
        verbose: 0 is quiet, 1 prints each change.

    Raises:
        ValueError: If `update` is neither `"epoch"` nor `"batch"`, or a
            `kd.schedules` object reaches a temperature <= 0
            or an alpha outside [0, 1]; during `fit`, if any schedule returns
            such a value (the message names the step).
        TypeError: If a schedule is neither callable nor a number, or takes
            two arguments (a `LearningRateScheduler` schedule(epoch, lr)); during
            `fit`, if the model is not a `Distiller`, or a schedule returns
            something other than a number (the message names the schedule and step).

    Example:
    >>> import keras, numpy as np
    >>> from keras_distill import Distiller, schedules
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> distiller = Distiller(teacher, student)
    >>> distiller.compile("adam", keras.losses.SparseCategoricalCrossentropy(True))
    >>> scheduler = TemperatureScheduler(schedules.Linear(8.0, 2.0, steps=2))
    >>> x, y = np.random.rand(16, 4), np.random.randint(0, 3, 16)
    >>> history = distiller.fit(x, y, epochs=3, callbacks=[scheduler], verbose=0)
    >>> history.history["temperature"]
    [8.0, 5.0, 2.0]
    """

    def __init__(
        self,
        schedule: ScheduleLike,
        alpha_schedule: ScheduleLike | None = None,
        update: str = "epoch",
        verbose: int = 0,
    ):
        super().__init__()
        if update not in ("epoch", "batch"):
            raise ValueError(f"`update` must be 'epoch' or 'batch'; received {update!r}.")
        self.schedule = _as_schedule(schedule, "schedule")
        self.alpha_schedule = _as_schedule(alpha_schedule, "alpha_schedule")
        _check_extremes(self.schedule, "temperature", "schedule")
        _check_extremes(self.alpha_schedule, "alpha", "alpha_schedule")
        self.update = update
        self.verbose = verbose
        self._epoch_start_step = 0

    def on_train_begin(self, logs=None):
        """Checks that the model is a distiller."""
        if not isinstance(self.model, BaseDistiller):
            raise TypeError(
                "TemperatureScheduler needs a keras_distill.Distiller (a model with "
                f"`temperature` and `alpha`); received {type(self.model).__name__}."
            )

    def on_epoch_begin(self, epoch, logs=None):
        """Assigns the epoch's values (`update="epoch"`)."""
        if self.update == "epoch":
            self._assign(epoch, f"Epoch {epoch + 1}")
        else:
            iterations = self.model.optimizer.iterations
            self._epoch_start_step = int(keras.ops.convert_to_numpy(iterations))

    def on_train_batch_begin(self, batch, logs=None):
        """Assigns the step's values (`update="batch"`)."""
        if self.update == "batch":
            step = self._epoch_start_step + batch
            self._assign(step, f"Step {step}")

    def on_train_batch_end(self, batch, logs=None):
        """Writes the current values into the batch logs."""
        self.write(logs)

    def _implements_train_batch_hooks(self) -> bool:  # tf_keras (see ScheduledValuesWriter)
        return True

    def _assign(self, step: int, where: str) -> None:
        schedules = (self.schedule, self.alpha_schedule)
        for name, schedule in zip(SCHEDULED_KEYS, schedules, strict=True):
            if schedule is None:
                continue
            value = _as_number(schedule(step), schedule, name, f"{self.update} {step}")
            try:
                setattr(self.model, name, value)
            except ValueError as error:
                raise ValueError(
                    f"The {name} schedule {schedule!r} returned {value!r} at "
                    f"{self.update} {step}: {error}"
                ) from None
            if self.verbose:
                print_msg(f"\n{where}: TemperatureScheduler set {name} to {value:g}.")

    def get_config(self) -> dict:
        """Returns the schedules (serialized) and settings."""
        return {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "alpha_schedule": keras.saving.serialize_keras_object(self.alpha_schedule),
            "update": self.update,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config: dict) -> TemperatureScheduler:
        """Creates the callback from `get_config()` output."""
        config = dict(config)
        for key in ("schedule", "alpha_schedule"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
