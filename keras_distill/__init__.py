"""keras-distill: knowledge distillation for Keras 3, from `fit` to the microcontroller."""

from keras_distill import (
    augment,
    ensemble,
    features,
    generation,
    losses,
    micro,
    recipes,
    responses,
    schedules,
)
from keras_distill.base_distiller import BaseDistiller
from keras_distill.callbacks import TemperatureScheduler
from keras_distill.capacity import sweep, teacher_assistant_chain
from keras_distill.distiller import Distiller
from keras_distill.initialization import InitReport, init_from_teacher
from keras_distill.loading import load_teacher_labels
from keras_distill.micro import export as export_micro
from keras_distill.report import CompressionReport, compare
from keras_distill.teacher_labels import label_with_teacher

__version__ = "0.1.0"

__all__ = [
    "BaseDistiller",
    "CompressionReport",
    "Distiller",
    "TemperatureScheduler",
    "__version__",
    "augment",
    "compare",
    "ensemble",
    "export_micro",
    "features",
    "generation",
    "InitReport",
    "init_from_teacher",
    "label_with_teacher",
    "load_teacher_labels",
    "losses",
    "micro",
    "recipes",
    "responses",
    "schedules",
    "sweep",
    "teacher_assistant_chain",
]
