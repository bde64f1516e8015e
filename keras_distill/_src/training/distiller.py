"""The `Distiller`, a `keras.Model` that trains a student to match a teacher."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from keras_distill._src import losses
from keras_distill._src.objective import features
from keras_distill._src.training import multi_worker
from keras_distill._src.training.base_distiller import BaseDistiller
from keras_distill._src.utils.model_inspection import is_tf_keras


def _flavour(teacher, student) -> str:
    """`"keras"` or `"tf_keras"`; refuses a mix of the two."""
    flavours = {is_tf_keras(m) for m in (teacher, student) if m is not None}
    if flavours == {True, False}:
        raise ValueError(
            "The teacher and the student must both be Keras 3 models or both tf_keras "
            f"(Keras 2) models; received teacher {type(teacher).__module__}."
            f"{type(teacher).__name__} and student {type(student).__module__}."
            f"{type(student).__name__}. Build both with the same Keras (with "
            "TF_USE_LEGACY_KERAS=1, tf.keras is tf_keras)."
        )
    return "tf_keras" if flavours == {True} else "keras"


class LossMean(keras.metrics.Mean):
    """The epoch mean of a loss the step computes once per batch, weighted by batch size.

    The step's losses are float32 scalars and their weight is cast once per step,
    so an update is one product and two additions (`Mean.update_state` casts,
    broadcasts and reduces an input of any shape: three times the kernels).
    """

    def update_state(self, values, sample_weight=1.0):
        self.total.assign_add(ops.cast(values, self.dtype) * sample_weight)  # no kernel if float32
        self.count.assign_add(sample_weight)


@keras.saving.register_keras_serializable(package="keras_distill")
class Distiller(BaseDistiller, keras.Model):
    """Trains a student to match a teacher's softened outputs and the labels.

    The training objective is::

        loss = alpha * student_loss(y, s) + (1 - alpha) * distillation_loss(t, s, temperature)

    where `student_loss` is the loss given to `compile()`, `t` and `s` are the
    teacher's and the student's logits, and the default `distillation_loss` is
    `T**2 * KL(softmax(t / T) || softmax(s / T))` (Hinton et al., 2015). `alpha`
    has the meaning it has in the keras.io distillation example.

    The teacher runs in inference mode (`training=False`) outside the gradient
    tape; only the student's trainable variables get gradients and optimizer
    slots, and the teacher is never modified (not even its `trainable` flag).
    `temperature` and `alpha` are non-trainable float32 variables: assign them
    at any time, e.g. with `TemperatureScheduler`, and the compiled training
    step uses the new values without retracing.

    The distiller behaves like the student: `call()`, `predict()` and the
    compiled metrics all use the student's predictions. `evaluate()` returns
    `[loss, <compiled metrics>..., student_loss, distillation_loss]`; pass
    `return_dict=True` to get them by name (the keras.io example's list has
    another order). Code written for the keras.io example runs unchanged:
    `compile(student_loss_fn=..., distillation_loss_fn=keras.losses.KLDivergence(),
    alpha=..., temperature=...)` is understood (see `compile`). Save the student alone
    with `distiller.student.save(...)`: it is a plain Keras model.

    Args:
        teacher: A trained `keras.Model`, or a list of them (see
            `teacher_weights`). Its outputs must have the structure of
            the student's outputs and the same size on the last (class) axis.
            `None` trains from teacher outputs stored next to the inputs
            (`keras_distill.load_teacher_labels`): the targets are then a dict
            with `"labels"`, `"label_mask"` (0 for unlabeled examples, which
            contribute only the distillation term) and the stored output
            (`"teacher_logits"`, the top-k triple, `"teacher_labels"` or
            `"teacher_scores"` with optional `"teacher_confidence"`). Live
            teachers accept `"labels"`/`"label_mask"` dicts too. tf_keras
            (Keras 2) teacher and student, as tensorflow-model-optimization
            makes them, get the tf_keras implementation of this class.
        student: The `keras.Model` to train.
        temperature: Initial softmax temperature, > 0. The defaults (1.0 and
            `alpha=0.5`) were chosen by the project's benchmarks (see the
            README): not worse than training alone with all labels, far better
            with few labels and a transfer set; higher temperatures and the
            keras.io settings (T = 10, alpha = 0.1) cost small students accuracy.
        alpha: Initial weight of the hard-label loss, in [0, 1]; the
            distillation loss is weighted by `1 - alpha`.
        distillation_loss: A name from `kd.losses.get` (default
            `"kl_divergence"`), a `kd.losses.DistillationLoss`, or a
            callable `fn(teacher_logits, student_logits, temperature)` returning
            a loss per position; multi-output models sum it over outputs. Or a
            list of such terms and `kd.FeatureDistillation`
            terms (intermediate layers), combined with
            `distillation_loss_weights` and each logged as
            `distillation_loss/<name>`.
        teacher_output: `"logits"`, `"probabilities"` (a teacher that ends in a
            softmax; its log-probabilities serve as logits) or `"auto"`: detect
            a final softmax from the model's layers.
        student_output: The same for the student.
        augment: Optional augmentation applied to each training batch before
            both the teacher and the student see it (consistent teaching,
            "function matching", Beyer et al. 2022): a Keras layer (e.g. a
            `keras.Sequential` of preprocessing layers, or the layers in
            `kd.augment`) or a callable `fn(x, training) -> x`
            (or `fn(x) -> x`). It is called with `training=True` in `train_step` only, never in
            `evaluate` or `predict`; it must keep the batch's structure and
            shape. Needs a live teacher.
        cache_teacher_outputs: `"auto"` (default): when `fit` gets arrays in
            memory and no `augment`, run the teacher once before the first
            epoch (one batched pass) and train every epoch from its outputs,
            with the same result as running it live; skipped, with a line at
            `verbose`, for `tf.data` input, `class_weight`, multi-output
            teachers or outputs over 1 GiB (an int sets that budget in bytes).
            True insists (an error if it cannot), False always runs the
            teacher live, in the training steps only. Otherwise a teacher run
            live on a `tf.data` dataset has its outputs on the first batch
            checked at `fit` start (finite, not probabilities read as logits),
            as the cached outputs are.
        teacher_weights: With a list of teachers as `teacher`: one weight >= 0
            per teacher (equal by default). The teachers become one
            (`kd.teachers.ensemble`): the target is the weighted
            average of their softened probabilities at the current temperature.
        teacher_average: `"probabilities"` (default: each teacher's confidence
            counts, none outvotes the others by having larger logits) or
            `"logits"` (the weighted average of the logits).
        distillation_loss_weights: One weight >= 0 per term of a list
            `distillation_loss` (1 each by default): the distillation loss is
            `sum_i w_i * term_i`.
        teacher_inputs: Optional function or Keras layer from the student's
            batch to the teacher's, for a teacher whose inputs differ (e.g.
            `lambda x: keras.ops.repeat(x, 3, axis=-1)` for an RGB teacher of
            a grayscale student). Without it, the models' input shapes must
            match (checked at construction).
        **kwargs: Passed through to `keras.Model` (e.g. `name`). All the
            arguments above are `BaseDistiller`'s, which the tf_keras flavour
            shares; this class adds none.

    Raises:
        ValueError: If the temperature is not > 0, alpha is outside [0, 1], the
            teacher is the student, the student has no trainable weights, or
            the models' outputs differ in structure or number of classes, or
            `augment` is given without a teacher; at the first training step,
            if `augment` changes the batch's structure or shape or returns no
            tensor.
        TypeError: If the teacher or student is not a `keras.Model`, or
            `augment` is not callable.

    Example:
    >>> import keras, numpy as np
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> distiller = Distiller(teacher, student, temperature=4.0, alpha=0.1)
    >>> distiller.compile(
    ...     optimizer="adam",
    ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ...     metrics=["accuracy"],
    ... )
    >>> x, y = np.random.rand(32, 4), np.random.randint(0, 3, 32)
    >>> history = distiller.fit(x, y, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['accuracy', 'alpha', 'distillation_loss', 'loss', 'student_loss', 'temperature']
    """

    _model_class = keras.Model

    def __new__(cls, teacher=None, student=None, *args, **kwargs):
        """Returns a Keras 3 distiller, or the tf_keras one for tf_keras models."""
        if cls is Distiller and _flavour(teacher, student) == "tf_keras":
            # Imported here: tf_keras is only needed (and installed) for tfmot students.
            from keras_distill._src.training.tf_keras_distiller import TFKerasDistiller

            Distiller.register(TFKerasDistiller)
            return TFKerasDistiller(teacher, student, *args, **kwargs)
        return super().__new__(cls, teacher, student, *args, **kwargs)

    # -- what Keras 3 provides ------------------------------------------------

    def _scalar_variable(self, name: str, value: float) -> keras.Variable:
        return keras.Variable(value, dtype="float32", trainable=False, name=name, autocast=False)

    def _make_trackers(self) -> None:
        # Keras' own `_loss_tracker` ("loss") is made by compile().
        self._student_loss_tracker = LossMean(name="student_loss")
        self._distillation_loss_tracker = LossMean(name="distillation_loss")

    def _mean(self, name: str) -> keras.metrics.Mean:
        return LossMean(name=name)

    def _feature_setup(self, feature_terms):
        if not feature_terms:
            return None
        setup = features.Extraction(self.teacher, self.student, feature_terms)
        self._projectors = [p for p in setup.projectors if p is not None]  # trained, saved
        return setup

    def _hard_loss(self, x, labels, y_pred, sample_weight, training):
        return self.compute_loss(
            x=x, y=labels, y_pred=y_pred, sample_weight=sample_weight, training=training
        )

    def _scale_loss(self, loss):
        return self.optimizer.scale_loss(loss)

    # private Keras API: Model._maybe_symbolic_build builds from the first batch; no public
    # hook lets a model choose that batch (keras-team/keras#20585, see multi_worker.py).
    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None and multi_worker.keras_20585_applies(self.distribute_strategy):
            for _, _, batches in iterator:
                data_batch = multi_worker.local_batch(self.distribute_strategy, next(batches))
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def _global_logs(self, logs: dict) -> dict:
        # keras-team/keras#20585: logs Keras can average over workers (see multi_worker.py).
        if multi_worker.keras_20585_applies(tf.distribute.get_strategy()):
            return multi_worker.replica_logs(logs)
        return logs

    def get_metrics_result(self) -> dict:
        """`Model.get_metrics_result`, without compiled metrics that no labelled batch built.

        Without labels (`fit(x)`) the compiled metrics are never updated (see `fit`).
        """
        results = {}
        for metric in self.metrics:
            if not getattr(metric, "built", True):
                continue
            result = metric.result()
            results.update(result if isinstance(result, dict) else {metric.name: result})
        return results

    # -- serialization ------------------------------------------------------

    def compile_from_config(self, config: dict) -> None:
        """Compiles a loaded distiller as it was saved (Keras skips custom `compile`s)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if hasattr(self, "optimizer") and self.built:
            self.optimizer.build(self.trainable_variables)  # so its saved slots load

    def get_config(self) -> dict:
        """Returns the config: both models, current temperature/alpha, the loss."""
        teacher = self.teacher
        return {
            "name": self.name,
            "teacher": None if teacher is None else keras.saving.serialize_keras_object(teacher),
            "student": keras.saving.serialize_keras_object(self.student),
            "temperature": float(ops.convert_to_numpy(self._temperature)),
            "alpha": float(ops.convert_to_numpy(self._alpha)),
            "distillation_loss": losses.serialize(self.distillation_loss),
            "teacher_output": self.teacher_output,
            "student_output": self.student_output,
            "augment": (
                None if self.augment is None else keras.saving.serialize_keras_object(self.augment)
            ),
            "cache_teacher_outputs": self.cache_teacher_outputs,
            "distillation_loss_weights": self.distillation_loss_weights,
            **self._teacher_inputs_config(),
        }

    def _teacher_inputs_config(self) -> dict:
        # Only when set, so that files saved without it (or by 0.1.0) keep their config.
        if self.teacher_inputs is None:
            return {}
        return {"teacher_inputs": keras.saving.serialize_keras_object(self.teacher_inputs)}

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> Distiller:
        """Creates a distiller from `get_config()` output."""
        config = dict(config)
        for key in ("teacher", "student", "augment", "teacher_inputs"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(
                    config[key], custom_objects=custom_objects
                )
        config["distillation_loss"] = losses.deserialize(
            config["distillation_loss"], custom_objects=custom_objects
        )
        return cls(**config)
