"""`BaseDistiller`: what every `Distiller` does, whichever Keras flavour it trains.

A distiller is a training shell around `keras_distill._src.objective.objective`: it holds the
temperature and alpha variables and the loss trackers, runs the frozen teacher
and the student, and lets the optimizer update the student. The Keras 3
`Distiller` (`distiller.py`) and the tf_keras one (`tf_keras_distiller.py`)
subclass it next to their flavour's `Model` and only say how that flavour
makes variables and metrics and computes its compiled loss.

The training step reads top to bottom at the end of this module: the batch's
targets are read once (`stored_kinds.read_targets`), the augmentation makes one
view, the frozen teacher runs on it (unless its outputs came with the targets),
the student runs under the tape, and `objective.compute` combines the terms
from explicit arguments (the replica count and the student's mask included).
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
from typing import Any

import keras
import tensorflow as tf
from keras import ops

from keras_distill._src import losses
from keras_distill._src.objective import objective, stored_kinds, terms
from keras_distill._src.teachers import ensemble
from keras_distill._src.teachers.outputs import check_stored_counts, check_values, finite_in_graph
from keras_distill._src.training import (
    augment_checks,
    fit_checks,
    keras_io_example,
    model_checks,
    teacher_cache,
)
from keras_distill._src.training.scheduled_values import SCHEDULED_KEYS, scheduled_values_logged
from keras_distill._src.utils.model_inspection import as_logits, symbolic_outputs

LOSS_KEYS = ("loss", "student_loss", "distillation_loss")
TEMPERATURE_TEXT = (
    "distiller.temperature must be > 0 (it was assigned around its setter, which checks it)"
)


class BaseDistiller(abc.ABC):
    """The shared base of the Keras 3 and the tf_keras `Distiller`.

    `isinstance(model, BaseDistiller)` is true for both flavours (and
    `isinstance(model, keras_distill.Distiller)` too). Subclasses put it first
    among their bases, before their flavour's `Model`, and implement
    `_scalar_variable`, `_make_trackers` and `_hard_loss`.

    Example:
    >>> import keras
    >>> from keras_distill import Distiller
    >>> def schedule_of(model):  # any distiller, Keras 3 or tf_keras
    ...     return model.scheduled_values() if isinstance(model, BaseDistiller) else {}
    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> schedule_of(Distiller(None, student, temperature=2.0)), schedule_of(student)
    ({'temperature': 2.0, 'alpha': 0.5}, {})
    """

    _model_class: type = object  # the flavour's Model class, set by each subclass

    def __init__(
        self,
        teacher: Any,
        student: Any,
        temperature: float = 1.0,
        alpha: float = 0.5,
        distillation_loss: Any = "kl_divergence",
        teacher_output: str = "auto",
        student_output: str = "auto",
        augment: Any = None,
        cache_teacher_outputs: str | bool | int = "auto",
        distillation_loss_weights: list[float] | None = None,
        teacher_weights: list[float] | None = None,
        teacher_average: str = "probabilities",
        teacher_inputs: Any = None,
        **kwargs,
    ):
        teacher = model_checks.checked_teacher(
            teacher, student, self._model_class, teacher_weights, teacher_average
        )
        model_checks.check_inputs(teacher, student, augment, teacher_inputs)
        teacher_cache.check_setting(cache_teacher_outputs)
        temperature = objective.checked_temperature(temperature)
        alpha = objective.checked_alpha(alpha)
        loss_fns, feature_terms, weights, names = terms.parse(
            distillation_loss, distillation_loss_weights, teacher
        )
        teacher_probabilities, student_probabilities = model_checks.output_kinds(
            teacher, student, teacher_output, student_output
        )
        super().__init__(**kwargs)
        self.teacher, self.student = teacher, student
        self.distillation_loss = distillation_loss
        self.distillation_loss_weights = distillation_loss_weights
        self.teacher_output, self.student_output = teacher_output, student_output
        self.augment, self.teacher_inputs = augment, teacher_inputs
        self.cache_teacher_outputs = cache_teacher_outputs
        self._terms = objective.Terms(tuple(loss_fns), tuple(weights), student_probabilities)
        self._teacher_probabilities = teacher_probabilities
        self._make_variables(temperature, alpha, names)
        self._features = self._feature_setup(feature_terms)
        # Built models make a built distiller (BackupAndRestore needs one).
        self.built = (teacher is None or teacher.built) and student.built

    def _make_variables(self, temperature: float, alpha: float, term_names: list) -> None:
        """The temperature and alpha variables and the loss trackers."""
        self._temperature = self._scalar_variable("temperature", temperature)
        self._alpha = self._scalar_variable("alpha", alpha)
        self._make_trackers()
        if ensemble.combiner(self.teacher) is not None:  # the averaged probabilities' T
            ensemble.combiner(self.teacher).link_temperature(self._temperature)
        self._term_trackers = (
            [self._mean(f"distillation_loss/{name}") for name in term_names]
            if len(term_names) > 1
            else []
        )

    @property
    def teacher_outputs_are_probabilities(self) -> bool:
        """Whether the teacher's outputs are read as probabilities (see `teacher_output`)."""
        return self._teacher_probabilities

    @property
    def _distillation_loss_fns(self) -> list:
        return list(self._terms.loss_fns)  # read by tests/test_saving.py

    @property
    def uses_feature_terms(self) -> bool:
        """Whether some distillation terms compare intermediate layers (feature terms)."""
        return self._features is not None

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
        `KLDivergence()` becomes `kd.losses.kl_divergence` (the
        softened, `T**2`-scaled KL the example computes; said once), and
        `alpha`/`temperature` set the variables. On that path, without
        `alpha`/`temperature`, a warning says which values are used (the
        example's compile defaults are 0.1 and 3).
        """
        loss = keras_io_example.hard_loss(loss, student_loss_fn)
        if distillation_loss_fn is not None:
            several = len(self._terms.loss_fns) > 1 or self._features is not None
            identifier = keras_io_example.distillation_loss(distillation_loss_fn, several)
            self.distillation_loss = identifier
            self._terms = dataclasses.replace(self._terms, loss_fns=(losses.get(identifier),))
        if student_loss_fn is not None or distillation_loss_fn is not None:
            keras_io_example.warn_kept_settings(self.scheduled_values(), alpha, temperature)
        if temperature is not None:
            self.temperature = temperature
        if alpha is not None:
            self.alpha = alpha
        named = inspect.signature(super().compile).bind(optimizer, loss, *args, **kwargs)
        self._metrics_needing_labels = fit_checks.metric_names(named.arguments)
        return super().compile(optimizer, loss, *args, **kwargs)

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
                "Feature distillation (kd.FeatureDistillation) "
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
        kept beside the labels for this `fit` call only; `tf.data` input runs the teacher
        live. Before the first step the first batch is checked: labels, stored classes, the
        teacher's outputs, the augmentation, tfmot's pruning callback.
        """
        arguments = inspect.signature(super().fit).bind(x, y, *args, **kwargs).arguments
        self._check_scheduled_values()
        arguments.update(fit_checks.class_weight_as_sample_weight(arguments))
        batch = fit_checks.first_batch(arguments.get("x"), arguments.get("y"))
        self._check_fit_start(arguments, batch)
        changed = teacher_cache.cached_arguments(self, arguments)
        if "y" not in changed:  # a live teacher (the cache checks the outputs it computes)
            self._probe_teacher(batch)
        arguments.update(changed)
        with scheduled_values_logged(arguments.get("callbacks"), self) as callbacks:
            arguments["callbacks"] = callbacks
            return super().fit(**arguments)

    def _check_fit_start(self, arguments: dict, batch) -> None:
        """The checks of `fit_checks` that need the arguments or the first batch."""
        given = fit_checks.labels_given(batch)
        metrics = getattr(self, "_metrics_needing_labels", ())
        fit_checks.check_labels(given, self._read(self._alpha), metrics)
        steps = fit_checks.fit_steps(
            arguments.get("x"),
            arguments.get("batch_size"),
            arguments.get("epochs", 1),
            arguments.get("steps_per_epoch"),
        )
        fit_checks.check_pruning(self.student, arguments.get("callbacks"), steps)
        if batch is None:
            return
        outputs = symbolic_outputs(self.student)
        fit_checks.check_label_values(
            fit_checks.labels_to_check(arguments.get("y"), batch), self.loss, outputs
        )
        stored = stored_kinds.read_targets(batch[1]).stored
        if stored and outputs is not None:
            check_stored_counts(stored, keras.tree.flatten(outputs))
        if not self.run_eagerly:  # eager steps draw NumPy randomness anew at every call
            augment_checks.check_not_frozen(self.augment, batch[0])

    def _probe_teacher(self, batch) -> None:
        """Checks a live teacher's outputs on the first batch: finite, and not probabilities."""
        if self.teacher is None or batch is None or stored_kinds.read_targets(batch[1]).stored:
            return
        outputs = self.teacher(self.teacher_view(batch[0]), training=False)
        check_values(
            keras.tree.map_structure(keras.ops.convert_to_numpy, outputs),
            self.teacher.name,
            self._teacher_probabilities,
            "teacher_output",
        )

    def teacher_view(self, x):
        """The batch as the teacher takes it: `teacher_inputs(x)`, or `x` itself.

        Example:
        >>> import keras, numpy as np
        >>> from keras_distill import Distiller
        >>> teacher = keras.Sequential([keras.Input((4, 3)), keras.layers.Flatten(),
        ...                             keras.layers.Dense(2)])
        >>> student = keras.Sequential([keras.Input((4, 1)), keras.layers.Flatten(),
        ...                             keras.layers.Dense(2)])
        >>> distiller = Distiller(teacher, student,
        ...                       teacher_inputs=lambda x: keras.ops.repeat(x, 3, axis=-1))
        >>> tuple(distiller.teacher_view(np.zeros((2, 4, 1))).shape)
        (2, 4, 3)
        """
        return x if self.teacher_inputs is None else self.teacher_inputs(x)

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

    # -- the training and evaluation step, top to bottom ----------------------

    def train_step(self, data):
        """One step: the targets read once, teacher inference, student gradients and update."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        targets = stored_kinds.read_targets(y, sample_weight)
        x = self._augmented(x)
        teacher_outputs, teacher_features = self._teacher_pass(x, targets)
        with tf.GradientTape() as tape:
            y_pred, student_features = self._student_pass(x, training=True)
            loss = self._objective(
                x,
                targets,
                y_pred,
                teacher_outputs,
                (teacher_features, student_features),
                training=True,
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
        # temperature and alpha reach the logs at each epoch's end (`ScheduledValuesLog`)
        return self._global_logs(self._metrics_logs(x, targets, y_pred))

    def test_step(self, data):
        """Evaluates the student's metrics and the distillation objective."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        targets = stored_kinds.read_targets(y, sample_weight)
        teacher_outputs, teacher_features = self._teacher_pass(x, targets)
        y_pred, student_features = self._student_pass(x, training=False)
        features = (teacher_features, student_features)
        self._objective(x, targets, y_pred, teacher_outputs, features, training=False)
        return self._global_logs(self._metrics_logs(x, targets, y_pred))

    def _augmented(self, x):
        """One augmented view of the batch, for the teacher and the student alike."""
        if self.augment is None:
            return x
        view = augment_checks.apply(self.augment, x)
        return augment_checks.checked_view(view, x, self.augment)

    def _teacher_pass(self, x, targets: stored_kinds.Targets):
        """(The teacher's outputs or None, its features for the feature terms).

        Called outside the gradient tape: nothing flows back into the teacher.
        """
        if self.teacher is None or targets.stored:
            return None, []  # no teacher, or its outputs came with the targets
        view = self.teacher_view(x)
        if self._features is None:
            return self.teacher(view, training=False), []
        return self._features.teacher(view, training=False)

    def _student_pass(self, x, training):
        """(The student's outputs, its features for the feature terms): one forward pass."""
        if self._features is None:
            return self(x, training=training), []
        return self._features.student(x, training=training)

    def _objective(self, x, targets, y_pred, teacher_outputs, features, training):
        """Returns the total loss, scaled per replica; updates the loss trackers."""
        teacher_outputs, temperature = self._checked_in_step(teacher_outputs, training)
        teacher_logits = (
            None
            if teacher_outputs is None
            else as_logits(teacher_outputs, self._teacher_probabilities)
        )
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if targets.labels is not None:
            weight = objective.hard_sample_weight(
                targets.sample_weight, targets.label_mask, targets.labels
            )
            student_loss = self._hard_loss(x, targets.labels, y_pred, weight, training)
        else:
            student_loss = ops.sum([ops.cast(loss, "float32") for loss in self.losses] or [0.0])
        # An augmented view (mixup, cutmix) may no longer show the labelled class:
        # losses that take labels (DKD) then use the teacher's argmax on the view.
        augmented = training and self.augment is not None
        labels = objective.distillation_labels(targets.labels, targets.label_mask)
        teaching = objective.Teaching(
            teacher_logits=teacher_logits,
            stored=targets.stored,
            labels=None if augmented else labels,
            extra_terms=tuple(self._feature_values(features, targets.sample_weight, replicas)),
        )
        result = objective.compute(
            student_loss,
            y_pred,
            teaching,
            self._terms,
            temperature=temperature,
            alpha=ops.convert_to_tensor(self._alpha),
            sample_weight=targets.sample_weight,
            mask=output_mask(y_pred),
            replicas=replicas,
            training=training,
        )
        self._update_trackers(result, ops.shape(keras.tree.flatten(x)[0])[0], replicas)
        return result.total

    def _feature_values(self, features, sample_weight, replicas: int) -> list:
        teacher_features, student_features = features
        if not teacher_features:
            return []
        return [
            self._features.value(i, t, s, sample_weight, mask=output_mask(s), replicas=replicas)
            for i, (t, s) in enumerate(zip(teacher_features, student_features, strict=True))
        ]

    def _update_trackers(self, result: objective.Losses, batch_size, replicas: int) -> None:
        """The loss trackers get the values before Keras' per-replica scaling."""
        weight = ops.cast(batch_size, "float32")  # each loss counts once per example
        for tracker, value in zip(self._trackers(), (*result[:3], *result.terms), strict=True):
            tracker.update_state(
                value if replicas == 1 else value * float(replicas), sample_weight=weight
            )

    def _checked_in_step(self, teacher_outputs, training):
        """(The teacher's outputs, the temperature), each behind its in-graph check.

        What can go wrong only during training is checked in the step: a live
        teacher's non-finite outputs stop any step, naming the teacher; a
        temperature that is not > 0 (assigned around its setter, e.g. by a
        callback) stops a training step (`log(T)` is finite exactly for T > 0).
        `check_numerics` is one kernel per tensor that passes its input on, with
        no reduction, `Assert` or string op (cost: `docs/evidence/speed.md`).
        """
        if teacher_outputs is not None:
            teacher_outputs = finite_in_graph(teacher_outputs, self.teacher.name)
        temperature = ops.convert_to_tensor(self._temperature)
        if not training:
            return teacher_outputs, temperature
        check = tf.debugging.check_numerics(tf.math.log(temperature), TEMPERATURE_TEXT)
        with tf.control_dependencies([check]):
            return teacher_outputs, tf.identity(temperature)

    def _metrics_logs(self, x, targets: stored_kinds.Targets, y_pred) -> dict:
        """The compiled metrics on the labelled examples, and the loss trackers."""
        if targets.labels is None:  # the compiled metrics need labels (said at fit start)
            logs = {tracker.name: tracker.result() for tracker in self._trackers()}
            if not self.losses:  # no labels and no added losses: nothing was measured
                logs.pop("student_loss", None)
            return logs
        labels, sample_weight = targets.labels, targets.sample_weight
        if targets.label_mask is not None:
            # Metrics count labelled examples only. Keras' `metrics=` ignore sample
            # weights, so unlabelled examples are dropped rather than weighted by 0.
            keep = ops.cast(targets.label_mask, "bool")
            labels, y_pred = tf.boolean_mask(labels, keep), tf.boolean_mask(y_pred, keep)
            if sample_weight is not None:
                sample_weight = tf.boolean_mask(sample_weight, keep)
        return dict(self.compute_metrics(x, labels, y_pred, sample_weight=sample_weight))

    def _trackers(self) -> list:
        """The loss, its two parts and each term's tracker."""
        return [
            self._loss_tracker,
            self._student_loss_tracker,
            self._distillation_loss_tracker,
            *self._term_trackers,
        ]


def output_mask(outputs):
    """The Keras mask of a single output tensor (a sequence model's valid positions), or None.

    The mask Keras' own `compute_loss` applies to the same output.
    """
    if keras.tree.is_nested(outputs):
        return None
    # private Keras API: Keras 3.15 exports no accessor of a tensor's mask; its masking
    # guide reads the `_keras_mask` attribute that masking layers set, as this does.
    return getattr(outputs, "_keras_mask", None)
