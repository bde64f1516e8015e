"""A progress bar for long `fit` runs: one bar over the epochs, not one per epoch."""

from __future__ import annotations

import keras

from keras_distill._src.utils.console import print_msg


@keras.saving.register_keras_serializable(package="keras_distill")
class EpochProgressBar(keras.callbacks.Callback):
    """One Keras progress bar per `fit` that advances once per epoch.

    For long, patient runs (function matching trains for hundreds of epochs)
    Keras' `verbose=1` draws a bar per epoch and `verbose=2` a line per
    epoch; this draws a single `keras.utils.Progbar` over the epochs, with
    the estimated time left and the last epoch's logs. Use it with
    `fit(..., verbose=0)`.

    Args:
        label: Printed above the bar; by default the model's name.
        keys: Log keys to show (all of them by default).

    Example:
    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile("sgd", "mse")
    >>> bar = EpochProgressBar("tiny model", keys=("loss",))
    >>> _ = model.fit(np.zeros((4, 2)), np.zeros(4), epochs=2, verbose=0,
    ...               callbacks=[bar])  # doctest: +ELLIPSIS
    tiny model
    ...
    """

    def __init__(self, label: str | None = None, keys: tuple | None = None):
        super().__init__()
        self.label = label
        self.keys = None if keys is None else tuple(keys)
        self._bar = None

    def on_train_begin(self, logs=None):
        """Prints the label and starts the bar over `fit`'s epochs."""
        print_msg(self.label or self.model.name)
        self._bar = keras.utils.Progbar(self.params["epochs"], unit_name="epoch", interval=0.5)

    def on_epoch_end(self, epoch, logs=None):
        """Advances the bar, showing the epoch's logs."""
        shown = [
            (key, value)
            for key, value in (logs or {}).items()
            if self.keys is None or key in self.keys
        ]
        self._bar.stateful_metrics.update(key for key, _ in shown)  # values as they are
        self._bar.update(epoch + 1, values=[(key, float(value)) for key, value in shown])

    def get_config(self) -> dict:
        """The constructor arguments."""
        return {"label": self.label, "keys": self.keys}
