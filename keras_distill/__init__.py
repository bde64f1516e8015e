"""keras-distill: knowledge distillation for Keras 3, from `fit` to the microcontroller.

The package is organised by concept, as Keras' own source is:

- `losses`: distillation losses (functions and `keras.losses.Loss` classes).
- `objective`: the distillation objective, its terms, feature terms, stored kinds.
- `teachers`: ensembles of teachers and generating (language-model) teachers.
- `training`: the `Distiller`, its callbacks and schedules, augmentation,
  student initialisation, tensorflow-model-optimization students.
- `labelling`: labelling data with a teacher once and training from the labels.
- `micro`: TFLite Micro export, verification and firmware.
- `studies`: recipes, sweeps, comparisons, the demo and its data.
- `utils`: helpers shared by the others.

Example:
>>> import keras_distill as kd
>>> kd.Distiller.__module__
'keras_distill.training.distiller'
"""

from keras_distill import losses, micro
from keras_distill.labelling import label_with_teacher, load_teacher_labels, responses
from keras_distill.micro import export as export_micro
from keras_distill.objective import features
from keras_distill.studies import (
    CompressionReport,
    compare,
    recipes,
    sweep,
    teacher_assistant_chain,
)
from keras_distill.studies import (
    datasets as datasets,  # the example data sets, public as before
)
from keras_distill.teachers import ensemble, generation
from keras_distill.training import (
    BaseDistiller,
    Distiller,
    InitReport,
    TemperatureScheduler,
    augment,
    init_from_teacher,
    schedules,
)
from keras_distill.training.on_policy import OnPolicyDistiller
from keras_distill.utils import moved_modules
from keras_distill.version import __version__

moved_modules.install()

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
    "OnPolicyDistiller",
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
