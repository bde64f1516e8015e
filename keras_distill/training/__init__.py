"""Training a student in `fit`: the distillers, their callbacks, schedules and helpers."""

from keras_distill.training.base_distiller import BaseDistiller
from keras_distill.training.callbacks import TemperatureScheduler
from keras_distill.training.distiller import Distiller
from keras_distill.training.initialization import InitReport, init_from_teacher

__all__ = ["BaseDistiller", "Distiller", "InitReport", "TemperatureScheduler", "init_from_teacher"]
