"""Schedules for the temperature and alpha, read by `kd.TemperatureScheduler`.

Each schedule maps the epoch (and the number of epochs) to a value; the
callback assigns it to the distiller's variable inside compiled `fit`.
"""

from keras_distill._src.training.schedules import (
    Constant,
    Cosine,
    Exponential,
    Linear,
    Schedule,
    Step,
)

__all__ = ["Constant", "Cosine", "Exponential", "Linear", "Schedule", "Step"]
