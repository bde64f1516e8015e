"""The `Distiller` for tf_keras (Keras 2) models, as tensorflow-model-optimization needs.

tensorflow-model-optimization 0.8 (quantization-aware training, pruning) only
wraps tf_keras models, which TensorFlow uses as `tf.keras` when
`TF_USE_LEGACY_KERAS=1` is set before it is imported. `Distiller(teacher,
student)` detects tf_keras models and builds this class instead: the same
objective, losses, temperature and alpha variables and `TemperatureScheduler`,
on `tf_keras.Model`. Stored-teacher training (`teacher=None`) and saving the
distiller itself are Keras 3 features; save `distiller.student`.
"""

from __future__ import annotations

import functools

import tensorflow as tf

from keras_distill import losses as losses_lib


def is_tf_keras(model) -> bool:
    """Whether `model` is a tf_keras (Keras 2) model rather than a Keras 3 one.

    Example:
    >>> import keras
    >>> is_tf_keras(keras.Sequential())
    False
    """
    return any(cls.__module__.startswith("tf_keras") for cls in type(model).__mro__)


def _ends_in_probabilities(model, kind: str) -> bool:
    """Like the Keras 3 detection, looking through tfmot's layer wrappers."""
    if kind not in ("auto", "logits", "probabilities"):
        raise ValueError(f"output kind must be 'auto', 'logits' or 'probabilities'; got {kind!r}.")
    if kind != "auto":
        return kind == "probabilities"
    layer = model.layers[-1]
    while hasattr(layer, "layer"):  # QuantizeWrapper, PruneLowMagnitude
        layer = layer.layer
    if type(layer).__name__ == "Softmax":
        return True
    activation = getattr(layer, "activation", None)
    activation = getattr(activation, "activation", activation)  # QuantizeAwareActivation
    return getattr(activation, "__name__", None) == "softmax"


@functools.cache
def legacy_distiller_class():
    """Builds (once) the tf_keras `Distiller`; imports tf_keras only when needed.

    Example:
    >>> legacy_distiller_class().__name__  # doctest: +SKIP
    'LegacyDistiller'
    """
    import tf_keras

    from keras_distill.distiller import (
        _as_logits,
        _check_compatible,
        _checked_alpha,
        _checked_temperature,
        _num_replicas,
    )

    class LegacyDistiller(tf_keras.Model):
        """`keras_distill.Distiller` for tf_keras teacher and student models.

        Example:
        >>> distiller = Distiller(tf_keras_teacher, qat_student)  # doctest: +SKIP
        """

        def __init__(self, teacher, student, temperature=1.0, alpha=0.5,
                     distillation_loss="kl_divergence", teacher_output="auto",
                     student_output="auto", **kwargs):  # fmt: skip
            if teacher is None:
                raise ValueError(
                    "Stored-teacher training (teacher=None) needs Keras 3 models; with tf_keras "
                    "(tensorflow-model-optimization) students, pass the teacher model."
                )
            super().__init__(**kwargs)
            self.teacher, self.student = teacher, student
            self._distillation_loss_fn = losses_lib.get(distillation_loss)
            self._teacher_probabilities = _ends_in_probabilities(teacher, teacher_output)
            self._student_probabilities = _ends_in_probabilities(student, student_output)
            self._temperature = tf.Variable(
                _checked_temperature(temperature), trainable=False, dtype=tf.float32,
                name="temperature",
            )  # fmt: skip
            self._alpha = tf.Variable(
                _checked_alpha(alpha), trainable=False, dtype=tf.float32, name="alpha"
            )
            self._loss_trackers = [
                tf_keras.metrics.Mean(name=name)
                for name in ("loss", "student_loss", "distillation_loss")
            ]
            _check_compatible(teacher.outputs, student.outputs, "at construction")

        @property
        def temperature(self):
            return self._temperature

        @temperature.setter
        def temperature(self, value):
            self._temperature.assign(_checked_temperature(value))

        @property
        def alpha(self):
            return self._alpha

        @alpha.setter
        def alpha(self, value):
            self._alpha.assign(_checked_alpha(value))

        @property
        def metrics(self):
            return self._loss_trackers + super().metrics

        def call(self, inputs, training=None):
            return self.student(inputs, training=training)

        def _objective(self, x, y, sample_weight, training):
            teacher = _as_logits(
                tf.stop_gradient(self.teacher(x, training=False)), self._teacher_probabilities
            )
            y_pred = self.student(x, training=training)
            student_loss = self.compiled_loss(
                y, y_pred, sample_weight, regularization_losses=self.student.losses
            )
            values = self._distillation_loss_fn(
                teacher, _as_logits(y_pred, self._student_probabilities), self._temperature
            )
            if sample_weight is not None:
                values = values * tf.cast(sample_weight, tf.float32)
            distillation_loss = tf.reduce_mean(values) / float(_num_replicas())
            total = self._alpha * student_loss + (1.0 - self._alpha) * distillation_loss
            batch = tf.shape(y_pred)[0]
            for tracker, value in zip(
                self._loss_trackers, (total, student_loss, distillation_loss), strict=True
            ):
                tracker.update_state(value * _num_replicas(), sample_weight=batch)
            return y_pred, total

        def _logs(self, y, y_pred, sample_weight):
            self.compiled_metrics.update_state(y, y_pred, sample_weight)
            return {m.name: m.result() for m in self.metrics}

        def train_step(self, data):
            x, y, sample_weight = tf_keras.utils.unpack_x_y_sample_weight(data)
            with tf.GradientTape() as tape:
                y_pred, loss = self._objective(x, y, sample_weight, training=True)
            variables = self.student.trainable_variables
            gradients = tape.gradient(loss, variables)
            self.optimizer.apply_gradients(zip(gradients, variables, strict=True))
            logs = self._logs(y, y_pred, sample_weight)
            logs.update(temperature=tf.identity(self._temperature), alpha=tf.identity(self._alpha))
            return logs

        def test_step(self, data):
            x, y, sample_weight = tf_keras.utils.unpack_x_y_sample_weight(data)
            y_pred, _ = self._objective(x, y, sample_weight, training=False)
            return self._logs(y, y_pred, sample_weight)

    return LegacyDistiller
