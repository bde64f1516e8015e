"""The `Distiller` for tf_keras (Keras 2) models, as tensorflow-model-optimization needs.

tensorflow-model-optimization 0.8 (quantization-aware training, pruning) only
wraps tf_keras models, which TensorFlow uses as `tf.keras` when
`TF_USE_LEGACY_KERAS=1` is set before it is imported. `Distiller(teacher,
student)` detects tf_keras models and returns a `TFKerasDistiller`: the same
objective (`keras_distill._src.objective.objective`), stored teacher outputs, label masks,
multi-output models, sequence masks, temperature and alpha variables and
`TemperatureScheduler`, on `tf_keras.Model`. Saving the distiller itself is
a Keras 3 feature; save `distiller.student`. Importing this module imports
tf_keras.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras

from keras_distill._src.training.base_distiller import LOSS_KEYS, BaseDistiller


class TFKerasDistiller(BaseDistiller, tf_keras.Model):
    """`keras_distill.Distiller` for tf_keras teacher and student models.

    Build it through `keras_distill.Distiller(teacher, student, ...)`, which
    returns this class for tf_keras models; it takes the same arguments.
    `isinstance(distiller, keras_distill.Distiller)` holds for it.
    """

    _model_class = tf_keras.Model

    def _scalar_variable(self, name: str, value: float) -> tf.Variable:
        return tf.Variable(value, trainable=False, dtype=tf.float32, name=name)

    def _make_trackers(self) -> None:
        self._loss_tracker, self._student_loss_tracker, self._distillation_loss_tracker = (
            tf_keras.metrics.Mean(name=name) for name in LOSS_KEYS
        )

    def _mean(self, name: str):
        return tf_keras.metrics.Mean(name=name)

    def _read(self, variable) -> float:
        return float(variable.numpy())  # also a MirroredVariable under MultiWorkerMirroredStrategy

    def _hard_loss(self, x, labels, y_pred, sample_weight, training):
        del training
        return self.compute_loss(x, labels, y_pred, sample_weight)

    @property
    def metrics(self) -> list:
        """The loss trackers, then the compiled metrics (the compiled loss is a part)."""
        trackers = [self._loss_tracker, self._student_loss_tracker, self._distillation_loss_tracker]
        compiled = self.compiled_metrics.metrics if self._is_compiled else []
        return trackers + list(self._term_trackers) + compiled
