"""`BaseDistiller`: what every `Distiller` does, whichever Keras flavour it trains.

A distiller is a training shell around `keras_distill.objective.objective`: it holds the
temperature and alpha variables and the loss trackers, runs the frozen teacher
and the student, and lets the optimizer update the student. The Keras 3
`Distiller` (`distiller.py`) and the tf_keras one (`tf_keras_distiller.py`)
subclass it next to their flavour's `Model` and only say how that flavour
makes variables and metrics and computes its compiled loss.
"""

from __future__ import annotations

import abc
import inspect
import warnings

import keras
import tensorflow as tf
from keras import ops

from keras_distill import losses as losses_lib
from keras_distill.losses.losses import KERAS_KL_NAMES
from keras_distill.objective import objective
from keras_distill.objective import stored_kinds as targets
from keras_distill.objective import terms as terms_lib
from keras_distill.teachers import ensemble as ensemble_lib
from keras_distill.training import teacher_cache
from keras_distill.utils.console import print_msg
from keras_distill.utils.model_inspection import (
    as_logits,
    check_compatible,
    probability_outputs,
    same_structure,
    symbolic_outputs,
)

LOSS_KEYS = ("loss", "student_loss", "distillation_loss")
SCHEDULED_KEYS = ("temperature", "alpha")


def _check_augment(augment, teacher) -> None:
    if augment is None:
        return
    if not callable(augment):
        raise TypeError(
            "`augment` must be a Keras layer (e.g. a keras.Sequential of preprocessing layers) "
            f"or a callable fn(x, training) -> x; received {augment!r}."
        )
    if teacher is None:
        raise ValueError(
            "`augment` needs a live teacher: stored teacher outputs (teacher=None) describe "
            "the inputs they were computed on, not the augmented views the student would see, "
            "so they would teach the wrong targets. Pass the teacher model, or drop `augment`."
        )


def _checked_view(view, x, augment):
    """The augmented batch, if it has the structure, type and shape of the inputs."""
    name = getattr(augment, "name", None) or getattr(augment, "__name__", repr(augment))
    if not same_structure(view, x):
        raise ValueError(
            f"`augment` ({name}) returned {type(view).__name__} for inputs of structure "
            f"{type(x).__name__}; it must return the same structure of tensors."
        )
    for before, after in zip(keras.tree.flatten(x), keras.tree.flatten(view), strict=True):
        if not (tf.is_tensor(after) or isinstance(after, keras.KerasTensor)):
            raise ValueError(
                f"`augment` ({name}) returned a {type(after).__name__}, not a tensor; it must "
                "return a batch of the same shape as its input."
            )
        old, new = tuple(before.shape), tuple(after.shape)
        if len(old) != len(new) or any(
            a is not None and b is not None and a != b for a, b in zip(old, new, strict=True)
        ):
            raise ValueError(
                f"`augment` ({name}) changed the batch shape from {old} to {new}; it must keep "
                "the batch size and the input shape (both models see the same view)."
            )
        if old[0] is None or new[0] is None:
            tf.debugging.assert_equal(
                tf.shape(after)[0],
                tf.shape(before)[0],
                message=f"`augment` ({name}) changed the batch size",
            )
    return view


class BaseDistiller(abc.ABC):
    """The shared base of the Keras 3 and the tf_keras `Distiller`.

    `isinstance(model, BaseDistiller)` is true for both flavours (and
    `isinstance(model, keras_distill.Distiller)` too). Subclasses put it first
    among their bases, before their flavour's `Model`, and implement
    `_scalar_variable`, `_make_trackers` and `_hard_loss`.

    Example:
    >>> import keras
    >>> from keras_distill import Distiller
    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> isinstance(Distiller(None, student), BaseDistiller)
    True
    """

    _model_class: type = object  # the flavour's Model class, set by each subclass

    def __init__(
        self,
        teacher,
        student,
        temperature=1.0,
        alpha=0.5,
        distillation_loss="kl_divergence",
        teacher_output="auto",
        student_output="auto",
        augment=None,
        cache_teacher_outputs="auto",
        distillation_loss_weights=None,
        teacher_weights=None,
        teacher_average="probabilities",
        **kwargs,
    ):
        teacher = ensemble_lib.one_teacher(teacher, teacher_weights, teacher_average)
        self._check_models(teacher, student)
        _check_augment(augment, teacher)
        teacher_cache.check_setting(cache_teacher_outputs)
        temperature = objective.checked_temperature(temperature)
        alpha = objective.checked_alpha(alpha)
        loss_fns, feature_terms, weights, names = terms_lib.parse(
            distillation_loss, distillation_loss_weights, teacher
        )
        teacher_probabilities = teacher is not None and probability_outputs(
            teacher, teacher_output, "teacher"
        )
        student_probabilities = probability_outputs(student, student_output, "student")
        teacher_outputs = symbolic_outputs(teacher) if teacher is not None else None
        student_outputs = symbolic_outputs(student)
        if teacher_outputs and student_outputs:
            check_compatible(teacher_outputs, student_outputs, "at construction")

        super().__init__(**kwargs)
        self.teacher = teacher
        self.student = student
        self.distillation_loss = distillation_loss
        self.distillation_loss_weights = distillation_loss_weights
        self.teacher_output = teacher_output
        self.student_output = student_output
        self.augment = augment
        self.cache_teacher_outputs = cache_teacher_outputs
        self._distillation_loss_fns = loss_fns
        self._term_weights = weights
        self._feature_terms = feature_terms
        self._teacher_probabilities = teacher_probabilities
        self._student_probabilities = student_probabilities
        self._temperature = self._scalar_variable("temperature", temperature)
        self._alpha = self._scalar_variable("alpha", alpha)
        self._make_trackers()
        if ensemble_lib.combiner(teacher) is not None:  # the averaged probabilities' T
            ensemble_lib.combiner(teacher).link_temperature(self._temperature)
        self._term_trackers = (
            [self._mean(f"distillation_loss/{name}") for name in names] if len(names) > 1 else []
        )
        self._features = self._feature_setup(feature_terms)
        # Built models make a built distiller (BackupAndRestore needs one).
        self.built = (teacher is None or teacher.built) and student.built

    def compile(
        self,
        optimizer="rmsprop",
        loss=None,
        *args,
        student_loss_fn=None,
        distillation_loss_fn=None,
        alpha=None,
        temperature=None,
        **kwargs,
    ):
        """`Model.compile`, also with the keras.io example's arguments.

        The keras.io distillation example's `compile(optimizer, metrics,
        student_loss_fn, distillation_loss_fn=keras.losses.KLDivergence(),
        alpha, temperature)` works unchanged: `student_loss_fn` is the `loss`,
        `KLDivergence()` becomes `keras_distill.losses.kl_divergence` (the
        softened, `T**2`-scaled KL the example computes; said once), and
        `alpha`/`temperature` set the variables.
        """
        if student_loss_fn is not None:
            if loss is not None:
                raise ValueError(
                    "Give the hard-label loss as `loss` or as the keras.io example's "
                    "`student_loss_fn`, not both."
                )
            loss = student_loss_fn
        if distillation_loss_fn is not None:
            self._adopt_keras_io_loss(distillation_loss_fn)
        if temperature is not None:
            self.temperature = temperature
        if alpha is not None:
            self.alpha = alpha
        return super().compile(optimizer, loss, *args, **kwargs)

    def _adopt_keras_io_loss(self, fn) -> None:
        if len(self._term_weights) > 1 or self._features is not None:
            raise ValueError(
                "compile(distillation_loss_fn=...) replaces the one distillation loss of the "
                "keras.io example; this distiller has several terms. Give them with "
                "Distiller(distillation_loss=[...]) only."
            )
        name = getattr(fn, "name", None) or getattr(fn, "__name__", None) or fn
        if isinstance(fn, losses_lib.DistillationLoss) or name in KERAS_KL_NAMES:
            identifier = fn if isinstance(fn, losses_lib.DistillationLoss) else "kl_divergence"
            self.distillation_loss = identifier
            self._distillation_loss_fns = [losses_lib.get(identifier)]
            if identifier == "kl_divergence":
                print_msg(
                    f"keras-distill: distillation_loss_fn={type(fn).__name__} is used as "
                    "keras_distill.losses.kl_divergence: T**2 * KL(softmax(t / T) || "
                    "softmax(s / T)), as the keras.io example computes it."
                )
            return
        raise TypeError(
            f"distillation_loss_fn={fn!r} cannot see the temperature; keras-distill maps "
            "keras.losses.KLDivergence() (the keras.io example's choice) or takes a "
            "keras_distill.losses.DistillationLoss. Other losses: Distiller(distillation_loss=...)."
        )

    def _check_models(self, teacher, student) -> None:
        kind = f"{self._model_class.__module__.split('.')[0]}.Model"
        for role, model in (("teacher", teacher), ("student", student)):
            optional = role == "teacher" and model is None
            if not isinstance(model, self._model_class) and not optional:
                raise TypeError(f"`{role}` must be a {kind}; received {type(model).__name__}.")
        if teacher is student:
            raise ValueError(
                "`teacher` and `student` are the same model object; distillation "
                "needs a separate student (e.g. a smaller keras.Model)."
            )
        if (
            teacher is not None
            and teacher.built
            and student.built
            and (teacher.count_params() < student.count_params())
        ):
            warnings.warn(
                f"The teacher {teacher.name!r} ({teacher.count_params():,} parameters) is smaller "
                f"than the student {student.name!r} ({student.count_params():,}). keras-distill "
                "takes (teacher, student); the keras.io example takes (student, teacher). Pass "
                "them by keyword, Distiller(teacher=..., student=...), to be sure.",
                stacklevel=4,
            )
        if not student.trainable or (student.built and not student.trainable_weights):
            raise ValueError(
                f"The student {student.name!r} has no trainable weights "
                f"(student.trainable={student.trainable}); there is nothing to train."
            )

    # -- what each flavour provides --------------------------------------------

    @abc.abstractmethod
    def _scalar_variable(self, name: str, value: float):
        """A non-trainable float32 scalar variable of this flavour."""

    @abc.abstractmethod
    def _make_trackers(self) -> None:
        """Sets `_loss_tracker`, `_student_loss_tracker`, `_distillation_loss_tracker`."""

    @abc.abstractmethod
    def _hard_loss(self, x, labels, y_pred, sample_weight, training):
        """The compiled loss on the hard labels (with the student's added losses)."""

    @abc.abstractmethod
    def _mean(self, name: str):
        """A `Mean` metric of this flavour."""

    def _feature_setup(self, feature_terms):
        """Extractors and projectors for feature terms (Keras 3 only: see `distiller.py`)."""
        if feature_terms:
            raise ValueError(
                "Feature distillation (keras_distill.objective.features.FeatureDistillation) "
                "needs Keras 3 models; these are tf_keras models."
            )
        return None

    def _scale_loss(self, loss):
        return loss

    def _read(self, variable) -> float:
        return float(ops.convert_to_numpy(variable))

    def _global_logs(self, logs: dict) -> dict:
        return logs

    # -- temperature and alpha ------------------------------------------------

    @property
    def temperature(self):
        """The softmax temperature, a non-trainable float32 variable.

        Assign a number (`distiller.temperature = 2.0`) to change it; it is
        checked to be > 0.
        """
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self._temperature.assign(objective.checked_temperature(value))

    @property
    def alpha(self):
        """The weight of the hard-label loss, a non-trainable float32 variable.

        Assign a number in [0, 1] (`distiller.alpha = 0.5`) to change it.
        """
        return self._alpha

    @alpha.setter
    def alpha(self, value: float) -> None:
        self._alpha.assign(objective.checked_alpha(value))

    def scheduled_values(self) -> dict:
        """The current temperature and alpha as Python floats.

        Example:
        >>> import keras
        >>> from keras_distill import Distiller
        >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> Distiller(None, student, temperature=2.0).scheduled_values()
        {'temperature': 2.0, 'alpha': 0.5}
        """
        return {key: self._read(getattr(self, key)) for key in SCHEDULED_KEYS}

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

    def fit(self, x=None, y=None, *args, **kwargs):
        """`Model.fit`; with in-memory inputs the teacher runs once, before the first epoch.

        Unless `cache_teacher_outputs=False`, array (or tensor) inputs without
        `augment` get the teacher's outputs computed in one batched pass and
        kept beside the labels for this `fit` call only (see
        `keras_distill.training.teacher_cache`); `tf.data` input runs the teacher live.
        """
        arguments = inspect.signature(super().fit).bind(x, y, *args, **kwargs).arguments
        self._check_scheduled_values()
        arguments.update(teacher_cache.cached_arguments(self, arguments))
        return super().fit(**arguments)

    def _check_scheduled_values(self) -> None:
        """Refuses to train with a temperature or alpha assigned around the setters."""
        for key, check in (
            ("temperature", objective.checked_temperature),
            ("alpha", objective.checked_alpha),
        ):
            value = self._read(getattr(self, key))
            try:
                check(value)
            except ValueError as error:
                raise ValueError(
                    f"distiller.{key} holds {value!r} (assigned to the variable directly?): "
                    f"{error} Set it with `distiller.{key} = value`, which checks it."
                ) from None

    def _teacher_pass(self, x, y=None):
        """(The teacher's logits or None, its features for the feature terms)."""
        if self.teacher is None or targets.split_targets(y)[2]:
            return None, []  # no teacher, or its outputs came with the targets
        if self._features is None:
            outputs, features = self.teacher(x, training=False), []
        else:
            outputs, features = self._features.teacher(x, training=False)
        outputs = keras.tree.map_structure(tf.stop_gradient, outputs)
        return as_logits(outputs, self._teacher_probabilities), features

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
        result = objective.compute(
            student_loss=student_loss,
            y_pred=y_pred,
            teacher_logits=teacher_logits,
            stored=stored,
            loss_fn=self._distillation_loss_fns,
            student_probabilities=self._student_probabilities,
            temperature=self._checked_in_step(self._temperature, training),
            alpha=ops.convert_to_tensor(self._alpha),
            sample_weight=sample_weight,
            # An augmented view (mixup, cutmix) may no longer show the labelled class:
            # losses that take labels (DKD) then use the teacher's argmax on the view.
            labels=None
            if training and self.augment is not None
            else objective.distillation_labels(labels, label_mask),
            training=training,
            weights=self._term_weights,
            extra_terms=self._feature_values(features, sample_weight),
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
            return self.get_metrics_result()
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
        return _checked_view(view, x, self.augment)

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
