"""The distiller's temperature and alpha in the logs that Keras' `fit` keeps."""

from __future__ import annotations

import contextlib

import keras

SCHEDULED_KEYS = ("temperature", "alpha")


class ScheduledValuesWriter(keras.callbacks.Callback):
    """A callback that writes the distiller's temperature and alpha into logs.

    The training step does not return them: Keras converts every value a step
    returns to a Python float after each step, at a cost measured in
    `docs/evidence/speed.md`. Subclasses choose which logs: `ScheduledValuesLog`
    each epoch's, `TemperatureScheduler` each batch's while it schedules.
    """

    _supports_tf_logs = True  # tf_keras: the logs may hold tensors

    def write(self, logs) -> None:
        """Adds a distiller's `scheduled_values()` to the logs of an epoch that ran steps."""
        if logs and hasattr(self.model, "scheduled_values"):  # `{}`: an epoch without steps
            logs.update(self.model.scheduled_values())

    # tf_keras (Keras 2) asks its callbacks which batch hooks they implement;
    # answering lets these callbacks serve a tf_keras distiller too (tfmot students).
    def _implements_train_batch_hooks(self) -> bool:
        return False

    def _implements_test_batch_hooks(self) -> bool:
        return False

    def _implements_predict_batch_hooks(self) -> bool:
        return False


class ScheduledValuesLog(ScheduledValuesWriter):
    """Writes the distiller's temperature and alpha into each epoch's logs."""

    def on_epoch_end(self, epoch, logs=None):
        """Writes the current values into the epoch logs."""
        self.write(logs)


@contextlib.contextmanager
def scheduled_values_logged(callbacks, model):
    """Yields the fit's callbacks with a `ScheduledValuesLog` first, so History records it.

    A list or tuple is copied; a `CallbackList` the user made holds the log
    for this fit only.
    """
    log = ScheduledValuesLog()
    log.set_model(model)
    if type(callbacks).__name__ != "CallbackList":  # Keras 3's or tf_keras'
        yield [log, *keras.tree.flatten(callbacks or [])]
        return
    callbacks.callbacks.insert(0, log)
    try:
        yield callbacks
    finally:
        callbacks.callbacks.remove(log)
