"""keras-distill: knowledge distillation for Keras 3, from `fit` to the microcontroller.

The public API is what this package and its public subpackages export:

- `kd.Distiller`, `kd.TemperatureScheduler`, `kd.label_with_teacher`, ...: the
  names most programs need, at the top level.
- `kd.losses`, `kd.schedules`, `kd.augment`: what the distiller is built from.
- `kd.labelling` (and `kd.labelling.beam`): stored teacher outputs.
- `kd.teachers`, `kd.generation`: ensembles and generating teachers.
- `kd.micro`: TFLite Micro export, verification and firmware.
- `kd.recipes`, `kd.datasets`, `kd.architectures`: recipes, example data and
  models for studies.

Everything under `keras_distill._src` is the implementation and may change.

Example:
>>> import keras
>>> import keras_distill as kd
>>> teacher = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
>>> student = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
>>> distiller = kd.Distiller(teacher, student, temperature=4.0, alpha=0.1)
>>> float(distiller.temperature)
4.0
"""

from keras_distill import (
    architectures,
    augment,
    datasets,
    generation,
    labelling,
    losses,
    micro,
    recipes,
    schedules,
    search,
    teachers,
)
from keras_distill._src.labelling.reader import load_teacher_labels
from keras_distill._src.labelling.writer import label_with_teacher
from keras_distill._src.objective.features import FeatureDistillation
from keras_distill._src.search.find import find_student
from keras_distill._src.studies.capacity import (
    ChainResult,
    SweepResult,
    sweep,
    teacher_assistant_chain,
)
from keras_distill._src.studies.compression_report import CompressionReport, compare
from keras_distill._src.training.base_distiller import BaseDistiller
from keras_distill._src.training.callbacks import TemperatureScheduler
from keras_distill._src.training.distiller import Distiller
from keras_distill._src.training.initialization import InitReport, init_from_teacher
from keras_distill._src.training.on_policy import OnPolicyDistiller
from keras_distill._src.training.quantization_aware import quantization_aware
from keras_distill._src.training.tfmot import prune, strip
from keras_distill._src.utils import moved_modules
from keras_distill.version import __version__

moved_modules.install()
del moved_modules  # the 0.1 module paths are installed; `dir(kd)` shows the API only

__all__ = [
    "BaseDistiller",
    "ChainResult",
    "CompressionReport",
    "Distiller",
    "FeatureDistillation",
    "InitReport",
    "OnPolicyDistiller",
    "SweepResult",
    "TemperatureScheduler",
    "__version__",
    "architectures",
    "augment",
    "compare",
    "datasets",
    "find_student",
    "generation",
    "init_from_teacher",
    "label_with_teacher",
    "labelling",
    "load_teacher_labels",
    "losses",
    "micro",
    "prune",
    "quantization_aware",
    "recipes",
    "schedules",
    "search",
    "strip",
    "sweep",
    "teacher_assistant_chain",
    "teachers",
]

# Names of keras-distill 0.1 that now live elsewhere: kept, with a warning, until 0.3.
_DEPRECATED = {
    "export_micro": ("keras_distill._src.micro.exporter", "export", "kd.micro.export"),
    "ensemble": ("keras_distill._src.teachers.ensemble", None, "kd.teachers.ensemble"),
    "features": ("keras_distill._src.objective.features", None, "kd.FeatureDistillation"),
    "responses": ("keras_distill._src.labelling.responses", None, "kd.labelling"),
}


def __getattr__(name: str):
    import importlib
    import warnings

    if name == "TFKerasDistiller":  # imports tf_keras: only when asked for
        module = importlib.import_module("keras_distill._src.training.tf_keras_distiller")
        return module.TFKerasDistiller
    if name not in _DEPRECATED:
        raise AttributeError(f"module 'keras_distill' has no attribute {name!r}")
    module_name, attribute, instead = _DEPRECATED[name]
    warnings.warn(
        f"`kd.{name}` is deprecated since keras-distill 0.2 and goes in 0.3; use `{instead}`.",
        DeprecationWarning,
        stacklevel=2,
    )
    module = importlib.import_module(module_name)
    return getattr(module, attribute) if attribute else module
