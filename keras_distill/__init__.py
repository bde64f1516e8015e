"""keras-distill: knowledge distillation for Keras 3, from `fit` to the microcontroller."""

from keras_distill import losses, micro, schedules
from keras_distill.callbacks import TemperatureScheduler
from keras_distill.distiller import Distiller
from keras_distill.micro import export as export_micro
from keras_distill.teacher_labels import label_with_teacher, load_teacher_labels

__version__ = "0.1.0"

__all__ = [
    "Distiller",
    "TemperatureScheduler",
    "__version__",
    "export_micro",
    "label_with_teacher",
    "load_teacher_labels",
    "losses",
    "micro",
    "schedules",
]
