"""Training a student in `fit`: the distillers, their callbacks, schedules and helpers."""

from keras_distill._src.training.base_distiller import BaseDistiller
from keras_distill._src.training.callbacks import TemperatureScheduler
from keras_distill._src.training.distiller import Distiller
from keras_distill._src.training.initialization import InitReport, init_from_teacher

__all__ = ["BaseDistiller", "Distiller", "InitReport", "TemperatureScheduler", "init_from_teacher"]
