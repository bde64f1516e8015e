"""`DistillationStep`: the training and evaluation step a `Distiller` runs.

As Keras' `Trainer` gives `keras.Model` its `train_step`, this mixin gives
`BaseDistiller` its own: the frozen teacher's pass, the student's pass under the
gradient tape, the objective (`keras_distill._src.objective.objective.compute`) and the
loss trackers. It reads the distiller's state (`teacher`, `student`,
`augment`, the temperature and alpha variables, the terms) and the flavour's
hooks (`_hard_loss`, `_scale_loss`, `_global_logs`).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from keras_distill._src.objective import objective
from keras_distill._src.objective import stored_kinds as targets
from keras_distill._src.training import augment_checks
from keras_distill._src.utils.model_inspection import as_logits

SCHEDULED_KEYS = ("temperature", "alpha")


class DistillationStep:
    """The `train_step` and `test_step` of a distiller (a mixin of `BaseDistiller`).

    Example:
    >>> import keras
    >>> from keras_distill import Distiller
    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> isinstance(Distiller(None, student), DistillationStep)
    True
    """

    def _teacher_pass(self, x, y=None):
        """(The teacher's logits or None, its features for the feature terms)."""
        if self.teacher is None or targets.split_targets(y)[2]:
            return None, []  # no teacher, or its outputs came with the targets
        view = self.teacher_view(x)
        if self._features is None:
            outputs, features = self.teacher(view, training=False), []
        else:
            outputs, features = self._features.teacher(view, training=False)
        outputs = keras.tree.map_structure(self._finite_teacher_output, outputs)
        return as_logits(outputs, self._teacher_probabilities), features

    def _finite_teacher_output(self, output):
        """The output without gradient; the step stops, naming the teacher, if it is not finite."""
        check = tf.debugging.Assert(
            tf.reduce_all(tf.math.is_finite(tf.cast(output, "float32"))),
            [
                f"The teacher {self.teacher.name} produced non-finite outputs (NaN or inf) in "
                "this step; the losses would be nan. Check the teacher and its inputs."
            ],
        )
        with tf.control_dependencies([check]):
            return tf.stop_gradient(output)

    def _student_pass(self, x, training):
        """(The student's outputs, its features for the feature terms): one forward pass."""
        if self._features is None:
            return self(x, training=training), []
        return self._features.student(x, training=training)

    def _feature_values(self, features, sample_weight) -> list:
        teacher_features, student_features = features
        if not teacher_features:
            return []
        return [
            self._features.value(i, t, s, sample_weight)
            for i, (t, s) in enumerate(zip(teacher_features, student_features, strict=True))
        ]

    def _objective(self, x, y, y_pred, teacher_logits, sample_weight, training, features=((), ())):
        """Returns the total loss, scaled per replica; updates the loss trackers."""
        labels, label_mask, stored = targets.split_targets(y)
        if labels is not None:
            weight = objective.hard_sample_weight(sample_weight, label_mask, labels)
            student_loss = self._hard_loss(x, labels, y_pred, weight, training)
        else:
            student_loss = ops.sum([ops.cast(loss, "float32") for loss in self.losses] or [0.0])
        # An augmented view (mixup, cutmix) may no longer show the labelled class:
        # losses that take labels (DKD) then use the teacher's argmax on the view.
        augmented = training and self.augment is not None
        teaching = objective.Teaching(
            teacher_logits=teacher_logits,
            stored=stored,
            labels=None if augmented else objective.distillation_labels(labels, label_mask),
            extra_terms=tuple(self._feature_values(features, sample_weight)),
        )
        result = objective.compute(
            student_loss,
            y_pred,
            teaching,
            self._terms,
            temperature=self._checked_in_step(self._temperature, training),
            alpha=ops.convert_to_tensor(self._alpha),
            sample_weight=sample_weight,
            training=training,
        )
        batch_size = ops.shape(keras.tree.flatten(x)[0])[0]
        replicas = objective.num_replicas()
        # The trackers report the values before Keras' per-replica scaling.
        trackers = (
            self._loss_tracker,
            self._student_loss_tracker,
            self._distillation_loss_tracker,
            *self._term_trackers,
        )
        for tracker, value in zip(trackers, (*result[:3], *result.terms), strict=True):
            tracker.update_state(
                value if replicas == 1 else value * float(replicas), sample_weight=batch_size
            )
        return result.total

    def _checked_in_step(self, temperature, training):
        """The temperature as a tensor; a training step stops on one that is not > 0."""
        temperature = ops.convert_to_tensor(temperature)
        if not training:
            return temperature
        # `Assert` with string data only: no `If` around it (assert_positive adds one,
        # measurably slower in a 0.4 ms step; benchmarks/results/speed.md).
        check = tf.debugging.Assert(
            temperature > 0,
            [
                "distiller.temperature must be > 0 (it was assigned around its setter, which "
                "checks it)"
            ],
        )
        with tf.control_dependencies([check]):
            return tf.identity(temperature)

    def _metrics_logs(self, x, y, y_pred, sample_weight) -> dict:
        labels, label_mask, _ = targets.split_targets(y)
        if labels is None:
            logs = dict(self.get_metrics_result())
            if not self.losses:  # no labels and no added losses: nothing was measured
                logs.pop("student_loss", None)
            return logs
        if label_mask is not None:
            # Metrics count labelled examples only. Keras' `metrics=` ignore sample
            # weights, so unlabelled examples are dropped rather than weighted by 0.
            keep = ops.cast(label_mask, "bool")
            labels, y_pred = tf.boolean_mask(labels, keep), tf.boolean_mask(y_pred, keep)
            if sample_weight is not None:
                sample_weight = tf.boolean_mask(sample_weight, keep)
        return self.compute_metrics(x, labels, y_pred, sample_weight=sample_weight)

    def _augmented(self, x):
        """One augmented view of the batch, for the teacher and the student alike."""
        if self.augment is None:
            return x
        view = self.augment(x, training=True)
        return augment_checks.checked_view(view, x, self.augment)

    def train_step(self, data):
        """One step: teacher inference, then student gradients and update."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x = self._augmented(x)
        teacher_logits, teacher_features = self._teacher_pass(x, y)
        with tf.GradientTape() as tape:
            y_pred, student_features = self._student_pass(x, training=True)
            loss = self._objective(
                x,
                y,
                y_pred,
                teacher_logits,
                sample_weight,
                training=True,
                features=(teacher_features, student_features),
            )
            scaled_loss = self._scale_loss(loss)
        variables = self.trainable_variables  # known once the student is built
        if not variables:
            raise ValueError(
                f"The student {self.student.name!r} has no trainable weights; "
                "there is nothing to train."
            )
        gradients = tape.gradient(scaled_loss, variables)
        self.optimizer.apply_gradients(zip(gradients, variables, strict=True))
        logs = dict(self._metrics_logs(x, y, y_pred, sample_weight))
        for key in SCHEDULED_KEYS:
            logs[key] = tf.identity(getattr(self, key))  # a tensor, not the variable
        return self._global_logs(logs)

    def test_step(self, data):
        """Evaluates the student's metrics and the distillation objective."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        teacher_logits, teacher_features = self._teacher_pass(x, y)
        y_pred, student_features = self._student_pass(x, training=False)
        self._objective(
            x,
            y,
            y_pred,
            teacher_logits,
            sample_weight,
            training=False,
            features=(teacher_features, student_features),
        )
        return self._global_logs(self._metrics_logs(x, y, y_pred, sample_weight))
