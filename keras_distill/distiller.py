"""The `Distiller`, a `keras.Model` that trains a student to match a teacher."""

from __future__ import annotations

import math
import warnings
from typing import Any

import keras
import tensorflow as tf
from keras import ops

from keras_distill import compat, legacy
from keras_distill import losses as losses_lib
from keras_distill.teacher_labels import TARGET_KEYS

OUTPUT_KINDS = ("auto", "logits", "probabilities")


def _checked_temperature(value) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"`temperature` must be a finite number > 0; received {value!r}.")
    return value


def _checked_alpha(value) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"`alpha` must be in [0, 1]; received {value!r}.")
    return value


def _symbolic_outputs(model: keras.Model):
    """The model's symbolic outputs (functional, or built Sequential), else None."""
    try:
        return model.outputs or None
    except (AttributeError, ValueError):
        return None


def _output_layers(model: keras.Model) -> list | None:
    """The layers that produce the model's outputs, in flat order, if known."""
    outputs = _symbolic_outputs(model)
    if outputs:
        return [t._keras_history.operation for t in keras.tree.flatten(outputs)]
    if isinstance(model, keras.Sequential) and model.layers:
        return [model.layers[-1]]
    return None


def _ends_in_softmax(layer) -> bool:
    if isinstance(layer, keras.layers.Softmax):
        return True
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None) == "softmax"


def _probability_outputs(model: keras.Model, kind: str, role: str) -> bool:
    """Whether `model`'s outputs are probabilities, per `kind` or detected."""
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"`{role}_output` must be one of {OUTPUT_KINDS}; received {kind!r}.")
    if kind != "auto":
        return kind == "probabilities"
    layers = _output_layers(model)
    if layers is None:
        warnings.warn(
            f"Cannot see which activation ends the {role} {model.name!r} "
            "(a subclassed model); its outputs are taken as logits. Pass "
            f"{role}_output='probabilities' if it ends in a softmax.",
            stacklevel=3,
        )
        return False
    softmax = [_ends_in_softmax(layer) for layer in layers]
    if any(softmax) and not all(softmax):
        raise ValueError(
            f"Some outputs of the {role} {model.name!r} end in a softmax and some "
            f"do not; pass {role}_output='logits' or 'probabilities' explicitly."
        )
    return all(softmax)


def _as_logits(outputs, probabilities: bool):
    """Float32 logits; probabilities become log-probabilities (softmax-invariant)."""

    def convert(tensor):
        tensor = ops.cast(tensor, "float32")
        if probabilities:
            # log(p) are logits of p. The floor keeps a probability that
            # underflowed to 0 finite; it is far below anything float32 resolves.
            tensor = ops.log(ops.maximum(tensor, 1e-30))
        return tensor

    return keras.tree.map_structure(convert, outputs)


def _shapes(outputs) -> Any:
    return keras.tree.map_structure(lambda t: tuple(t.shape), outputs)


def _check_compatible(teacher_outputs, student_outputs, where: str) -> None:
    """Raises ValueError unless the outputs have one structure and class axis."""
    mismatch = (
        f"The teacher's and the student's outputs must match {where}; "
        f"teacher outputs {_shapes(teacher_outputs)}, "
        f"student outputs {_shapes(student_outputs)}."
    )
    try:
        keras.tree.assert_same_structure(teacher_outputs, student_outputs, check_types=False)
    except (ValueError, TypeError):
        raise ValueError(mismatch) from None
    for teacher, student in zip(
        keras.tree.flatten(teacher_outputs), keras.tree.flatten(student_outputs), strict=True
    ):
        t_shape, s_shape = tuple(teacher.shape), tuple(student.shape)
        if len(t_shape) != len(s_shape) or (
            t_shape[-1] is not None and s_shape[-1] is not None and t_shape[-1] != s_shape[-1]
        ):
            raise ValueError(mismatch)


def _split_targets(y):
    """(labels, label mask, stored teacher outputs) from plain labels or a target dict."""
    if isinstance(y, dict) and y and set(y) <= TARGET_KEYS:
        stored = {key: value for key, value in y.items() if key.startswith("teacher_")}
        return y.get("labels"), y.get("label_mask"), stored
    return y, None, {}


def _combine(sample_weight, label_mask, labels):
    """Sample weights that also zero unlabeled examples, shaped like the labels."""
    if label_mask is None:
        return sample_weight
    weights = [ops.cast(w, "float32") for w in (sample_weight, label_mask) if w is not None]
    rank = len(labels.shape)
    for i, weight in enumerate(weights):
        while 1 < rank and len(weight.shape) < rank:  # (batch,) for (batch, time) labels
            weight = ops.expand_dims(weight, -1)
        weights[i] = weight
    return weights[0] if len(weights) == 1 else weights[0] * weights[1]


def _num_replicas() -> int:
    return tf.distribute.get_strategy().num_replicas_in_sync


@keras.saving.register_keras_serializable(package="keras_distill")
class Distiller(keras.Model):
    """Trains a student to match a teacher's softened outputs and the labels.

    The training objective is

        loss = alpha * student_loss(y, s)
               + (1 - alpha) * distillation_loss(t, s, temperature)

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
    compiled metrics all use the student's predictions. Save the student alone
    with `distiller.student.save(...)`: it is a plain Keras model.

    Args:
        teacher: A trained `keras.Model`. Its outputs must have the structure of
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
        distillation_loss: A name from `keras_distill.losses.get` (default
            `"kl_divergence"`), a `keras_distill.losses.DistillationLoss`, or a
            callable `fn(teacher_logits, student_logits, temperature)` returning
            a loss per position. Multi-output models sum it over outputs.
        teacher_output: `"logits"`, `"probabilities"` (a teacher that ends in a
            softmax; its log-probabilities serve as logits) or `"auto"`: detect
            a final softmax from the model's layers.
        student_output: The same for the student.
        **kwargs: Passed to `keras.Model` (e.g. `name`).

    Raises:
        ValueError: If the temperature is not > 0, alpha is outside [0, 1], the
            teacher is the student, the student has no trainable weights, or
            the models' outputs differ in structure or number of classes.
        TypeError: If the teacher or student is not a `keras.Model`.

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

    def __new__(cls, teacher=None, student=None, *args, **kwargs):
        """Returns a Keras 3 distiller, or the tf_keras one for tf_keras models."""
        # tf_keras (Keras 2) models, as tensorflow-model-optimization makes them,
        # get the tf_keras implementation of the same API.
        flavours = {legacy.is_tf_keras(m) for m in (teacher, student) if m is not None}
        if flavours == {True, False}:
            raise ValueError(
                "The teacher and the student must both be Keras 3 models or both tf_keras "
                f"(Keras 2) models; received teacher {type(teacher).__module__}."
                f"{type(teacher).__name__} and student {type(student).__module__}."
                f"{type(student).__name__}. Build both with the same Keras (with "
                "TF_USE_LEGACY_KERAS=1, tf.keras is tf_keras)."
            )
        if flavours == {True}:
            return legacy.legacy_distiller_class()(teacher, student, *args, **kwargs)
        return super().__new__(cls, teacher, student, *args, **kwargs)

    def __init__(
        self,
        teacher: keras.Model,
        student: keras.Model,
        temperature: float = 1.0,
        alpha: float = 0.5,
        distillation_loss: str | losses_lib.DistillationLoss | Any = "kl_divergence",
        teacher_output: str = "auto",
        student_output: str = "auto",
        **kwargs,
    ):
        for role, model in (("teacher", teacher), ("student", student)):
            if not isinstance(model, keras.Model) and not (role == "teacher" and model is None):
                raise TypeError(f"`{role}` must be a keras.Model; received {type(model).__name__}.")
        if teacher is student:
            raise ValueError(
                "`teacher` and `student` are the same model object; distillation "
                "needs a separate student (e.g. a smaller keras.Model)."
            )
        if not student.trainable or (student.built and not student.trainable_weights):
            raise ValueError(
                f"The student {student.name!r} has no trainable weights "
                f"(student.trainable={student.trainable}); there is nothing to train."
            )
        temperature = _checked_temperature(temperature)
        alpha = _checked_alpha(alpha)
        self._distillation_loss_fn = losses_lib.get(distillation_loss)
        teacher_probabilities = teacher is not None and _probability_outputs(
            teacher, teacher_output, "teacher"
        )
        student_probabilities = _probability_outputs(student, student_output, "student")
        teacher_outputs = _symbolic_outputs(teacher) if teacher is not None else None
        student_outputs = _symbolic_outputs(student)
        if teacher_outputs and student_outputs:
            _check_compatible(teacher_outputs, student_outputs, "at construction")

        super().__init__(**kwargs)
        self.teacher = teacher
        self.student = student
        self.distillation_loss = distillation_loss
        self.teacher_output = teacher_output
        self.student_output = student_output
        self._teacher_probabilities = teacher_probabilities
        self._student_probabilities = student_probabilities
        self._temperature = keras.Variable(
            temperature,
            dtype="float32",
            trainable=False,
            name="temperature",
            autocast=False,
        )
        self._alpha = keras.Variable(
            alpha, dtype="float32", trainable=False, name="alpha", autocast=False
        )
        self._student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self._distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")
        # Built models make a built distiller (BackupAndRestore needs one).
        self.built = (teacher is None or teacher.built) and student.built

    # -- temperature and alpha ------------------------------------------------

    @property
    def temperature(self) -> keras.Variable:
        """The softmax temperature, a non-trainable float32 variable.

        Assign a number (`distiller.temperature = 2.0`) to change it; it is
        checked to be > 0.
        """
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self._temperature.assign(_checked_temperature(value))

    @property
    def alpha(self) -> keras.Variable:
        """The weight of the hard-label loss, a non-trainable float32 variable.

        Assign a number in [0, 1] (`distiller.alpha = 0.5`) to change it.
        """
        return self._alpha

    @alpha.setter
    def alpha(self, value: float) -> None:
        self._alpha.assign(_checked_alpha(value))

    # -- the teacher is frozen without touching it ---------------------------

    def _without_teacher(self, variables: list) -> list:
        if self.teacher is None:
            return variables
        teacher_ids = {id(v) for v in self.teacher.variables}
        return [v for v in variables if id(v) not in teacher_ids]

    def _complement(self, variables: list, trainable: list) -> list:
        trainable_ids = {id(v) for v in trainable}
        return [v for v in variables if id(v) not in trainable_ids]

    @property
    def trainable_weights(self) -> list:
        """The student's trainable weights; the teacher's are never trained."""
        return self._without_teacher(super().trainable_weights)

    @property
    def non_trainable_weights(self) -> list:
        """All weights but the student's trainable ones, the teacher's included."""
        return self._complement(self.weights, self.trainable_weights)

    @property
    def trainable_variables(self) -> list:
        """The student's trainable variables; the teacher's are never trained."""
        return self._without_teacher(super().trainable_variables)

    @property
    def non_trainable_variables(self) -> list:
        """All variables but the student's trainable ones."""
        return self._complement(self.variables, self.trainable_variables)

    @property
    def losses(self) -> list:
        """The student's added losses (e.g. weight regularization) only."""
        return self.student.losses

    # -- forward pass and training step ---------------------------------------

    def build(self, input_shape) -> None:
        """Builds the teacher and the student for inputs of `input_shape`."""
        for model in (self.teacher, self.student):
            if model is not None and not model.built:
                model.build(input_shape)

    def call(self, inputs, training=None):
        """Returns the student's predictions."""
        return self.student(inputs, training=training)

    def _teacher_logits(self, x):
        if self.teacher is None:
            return None
        outputs = self.teacher(x, training=False)
        outputs = keras.tree.map_structure(ops.stop_gradient, outputs)
        return _as_logits(outputs, self._teacher_probabilities)

    def _reduce(self, values, weight, mask):
        """Weighted mean over positions (valid ones if masked), scaled per replica."""
        values = ops.cast(values, "float32")
        for factor in (weight, mask):
            if factor is not None:
                factor = ops.cast(factor, "float32")
                while len(factor.shape) < len(values.shape):
                    factor = ops.expand_dims(factor, -1)
                values = values * factor
        if mask is None:
            count = ops.cast(ops.size(values), "float32")
        else:
            count = ops.sum(ops.cast(mask, "float32"))
        return ops.divide_no_nan(ops.sum(values), count) / float(_num_replicas())

    def _stored_term(self, stored: dict, y_pred, weight, mask):
        """Distillation term from teacher outputs stored next to the inputs."""
        temperature = ops.convert_to_tensor(self._temperature)
        if "teacher_scores" in stored:
            scores = ops.cast(stored["teacher_scores"], "float32")
            difference = ops.cast(y_pred, "float32") - ops.reshape(scores, ops.shape(y_pred))
            values = ops.square(difference)
            if len(values.shape) > 1:
                values = ops.mean(values, axis=-1)
            confidence = stored.get("teacher_confidence")
            if confidence is not None:
                weight = confidence if weight is None else weight * ops.cast(confidence, "float32")
            return self._reduce(values, weight, mask)
        student_logits = _as_logits(y_pred, self._student_probabilities)
        if "teacher_labels" in stored:
            values = ops.square(temperature) * keras.losses.sparse_categorical_crossentropy(
                stored["teacher_labels"], student_logits / temperature, from_logits=True
            )
            return self._reduce(values, weight, mask)
        if "teacher_topk_values" in stored:
            teacher_logits, student_logits = losses_lib.top_k_logits(
                stored["teacher_topk_values"],
                stored["teacher_topk_indices"],
                stored["teacher_rest_logsumexp"],
                student_logits,
                temperature,
            )
        else:
            teacher_logits = ops.cast(stored["teacher_logits"], "float32")
            _check_compatible(teacher_logits, student_logits, "(stored teacher outputs)")
        values = self._distillation_loss_fn(teacher_logits, student_logits, temperature)
        return self._reduce(values, weight, mask)

    def _live_term(self, teacher_logits, y_pred, sample_weight, mask):
        student_logits = _as_logits(y_pred, self._student_probabilities)
        flat_student = keras.tree.flatten(student_logits)
        if keras.tree.is_nested(sample_weight):
            flat_weights = keras.tree.flatten(sample_weight)
        else:
            flat_weights = [sample_weight] * len(flat_student)
        temperature = ops.convert_to_tensor(self._temperature)
        terms = [
            self._reduce(self._distillation_loss_fn(teacher, student, temperature), weight, mask)
            for teacher, student, weight in zip(
                keras.tree.flatten(teacher_logits), flat_student, flat_weights, strict=True
            )
        ]
        return ops.sum(ops.stack(terms))

    def _objective(self, x, y, y_pred, teacher_logits, sample_weight, training):
        """Returns the total loss, scaled per replica; updates the loss trackers."""
        labels, label_mask, stored = _split_targets(y)
        mask = getattr(y_pred, "_keras_mask", None) if not keras.tree.is_nested(y_pred) else None
        if labels is not None:
            hard_weight = _combine(sample_weight, label_mask, labels)
            student_loss = self.compute_loss(
                x=x, y=labels, y_pred=y_pred, sample_weight=hard_weight, training=training
            )
        else:
            student_loss = ops.sum([ops.cast(loss, "float32") for loss in self.losses] or [0.0])
        student_loss = ops.cast(student_loss, "float32")
        if teacher_logits is not None:
            _check_compatible(teacher_logits, y_pred, "in the training step")
            distillation_loss = self._live_term(teacher_logits, y_pred, sample_weight, mask)
        elif stored:
            distillation_loss = self._stored_term(stored, y_pred, sample_weight, mask)
        elif training:
            raise ValueError(
                "Distiller(teacher=None) trains from stored teacher outputs, but this "
                "dataset has none: load it with keras_distill.load_teacher_labels(path), "
                "or give targets as a dict with 'labels' and one of 'teacher_logits', "
                "'teacher_topk_values'/'teacher_topk_indices'/'teacher_rest_logsumexp', "
                f"'teacher_labels' or 'teacher_scores'. Received targets: {y!r}."
            )
        else:  # evaluating a stored-teacher student on plain labelled data
            distillation_loss = ops.zeros((), "float32")
        alpha = ops.convert_to_tensor(self._alpha)
        if teacher_logits is None and not stored:
            total = student_loss
        else:
            total = alpha * student_loss + (1.0 - alpha) * distillation_loss
        batch_size = ops.shape(keras.tree.flatten(x)[0])[0]
        replicas = float(_num_replicas())
        # Keras scales each replica's loss by 1 / replicas so that gradients sum
        # to the global-batch mean; the trackers report the unscaled values.
        for tracker, value in (
            (self._loss_tracker, total),
            (self._student_loss_tracker, student_loss),
            (self._distillation_loss_tracker, distillation_loss),
        ):
            tracker.update_state(value * replicas, sample_weight=batch_size)
        return total

    def _metrics_logs(self, x, y, y_pred, sample_weight):
        labels, label_mask, _ = _split_targets(y)
        if labels is None:
            return self.get_metrics_result()
        if label_mask is not None:
            # Metrics count labelled examples only. Keras' `metrics=` ignore sample
            # weights, so unlabelled examples are dropped rather than weighted by 0.
            keep = ops.cast(label_mask, "bool")
            labels, y_pred = tf.boolean_mask(labels, keep), tf.boolean_mask(y_pred, keep)
            if sample_weight is not None:
                sample_weight = tf.boolean_mask(sample_weight, keep)
        return self.compute_metrics(x, labels, y_pred, sample_weight=sample_weight)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # keras-team/keras#20585: build from a worker-local batch (see compat.py).
        if iterator is not None and compat.keras_20585_applies(self.distribute_strategy):
            for _, _, batches in iterator:
                data_batch = compat.local_batch(self.distribute_strategy, next(batches))
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def _global_logs(self, logs: dict) -> dict:
        # keras-team/keras#20585: logs Keras can average over workers (see compat.py).
        if compat.keras_20585_applies(tf.distribute.get_strategy()):
            return compat.replica_logs(logs)
        return logs

    def train_step(self, data):
        """One step: teacher inference, then student gradients and update."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        teacher_logits = self._teacher_logits(x)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self._objective(x, y, y_pred, teacher_logits, sample_weight, training=True)
            scaled_loss = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables  # known once the student is built
        if not variables:
            raise ValueError(
                f"The student {self.student.name!r} has no trainable weights; "
                "there is nothing to train."
            )
        gradients = tape.gradient(scaled_loss, variables)
        self.optimizer.apply_gradients(zip(gradients, variables, strict=True))
        logs = self._metrics_logs(x, y, y_pred, sample_weight)
        logs["temperature"] = ops.convert_to_tensor(self._temperature)
        logs["alpha"] = ops.convert_to_tensor(self._alpha)
        return self._global_logs(logs)

    def test_step(self, data):
        """Evaluates the student's metrics and the distillation objective."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        teacher_logits = self._teacher_logits(x)
        y_pred = self(x, training=False)
        self._objective(x, y, y_pred, teacher_logits, sample_weight, training=False)
        return self._global_logs(self._metrics_logs(x, y, y_pred, sample_weight))

    # -- serialization ------------------------------------------------------

    def get_config(self) -> dict:
        """Returns the config: both models, current temperature/alpha, the loss."""
        loss = self.distillation_loss
        return {
            "name": self.name,
            "teacher": (
                None if self.teacher is None else keras.saving.serialize_keras_object(self.teacher)
            ),
            "student": keras.saving.serialize_keras_object(self.student),
            "temperature": float(ops.convert_to_numpy(self._temperature)),
            "alpha": float(ops.convert_to_numpy(self._alpha)),
            "distillation_loss": (
                loss if isinstance(loss, str) else keras.saving.serialize_keras_object(loss)
            ),
            "teacher_output": self.teacher_output,
            "student_output": self.student_output,
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> Distiller:
        """Creates a distiller from `get_config()` output."""
        config = dict(config)
        for key in ("teacher", "student"):
            if config[key] is None:
                continue
            config[key] = keras.saving.deserialize_keras_object(
                config[key], custom_objects=custom_objects
            )
        if not isinstance(config["distillation_loss"], str):
            config["distillation_loss"] = keras.saving.deserialize_keras_object(
                config["distillation_loss"], custom_objects=custom_objects
            )
        return cls(**config)
