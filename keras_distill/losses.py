"""Distillation losses between teacher and student logits.

Every loss comes as a function and as a thin `keras.losses.Loss` class, like
`keras.losses.categorical_crossentropy` and `keras.losses.CategoricalCrossentropy`.

The functions take `(teacher_logits, student_logits, temperature)` and return one
value per position (the last axis, the classes, is reduced), so `(batch,)` for a
classifier and `(batch, time)` for a sequence model. They always compute in
float32, so students trained under `mixed_float16` get an exact loss.

The softmax-based losses soften both distributions with the temperature `T` and
multiply the result by `T**2` (Hinton et al., 2015), which keeps the size of
their gradients independent of `T`, so `alpha` means the same thing at every
temperature.

Beyond Hinton's KL: `decoupled_kd` (DKD, which also takes the hard labels:
a function whose `uses_labels` attribute is true gets `labels=` from the
`Distiller`), `dist` (DIST, correlations instead of values) and
`standardized_kl_divergence` (logit standardization). Losses whose
`needs_full_logits` attribute is true refuse stored top-k outputs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import keras
from keras import ops

LossFn = Callable[[Any, Any, Any], Any]


def _softened_log_probs(teacher_logits, student_logits, temperature):
    temperature = ops.cast(temperature, "float32")
    teacher = ops.log_softmax(ops.cast(teacher_logits, "float32") / temperature, -1)
    student = ops.log_softmax(ops.cast(student_logits, "float32") / temperature, -1)
    return teacher, student, ops.square(temperature)


def _kl(log_p, log_q):
    """KL(p || q) over the last axis from log-probabilities."""
    return ops.sum(ops.exp(log_p) * (log_p - log_q), axis=-1)


@keras.saving.register_keras_serializable(package="keras_distill")
def kl_divergence(teacher_logits, student_logits, temperature=1.0):
    """`T**2 * KL(softmax(t / T) || softmax(s / T))`, the loss of Hinton et al.

    Computed from `log_softmax` of both logits (no clipping, stable for logits
    of any size). At `T = 1` its gradient with respect to the student logits is
    that of cross-entropy with the teacher's probabilities as soft labels.

    Args:
        teacher_logits: Tensor `(..., classes)`, the teacher's logits.
        student_logits: Tensor of the same shape, the student's logits.
        temperature: Positive scalar (float or variable).

    Returns:
        Float32 tensor of shape `(...)`: the loss at each position.

    Example:
    >>> import numpy as np
    >>> t = np.array([[2.0, 0.0, -1.0]])
    >>> float(kl_divergence(t, t, temperature=4.0)[0])
    0.0
    """
    teacher, student, scale = _softened_log_probs(teacher_logits, student_logits, temperature)
    return scale * _kl(teacher, student)


@keras.saving.register_keras_serializable(package="keras_distill")
def reverse_kl_divergence(teacher_logits, student_logits, temperature=1.0):
    """`T**2 * KL(softmax(s / T) || softmax(t / T))`, mode-seeking KL.

    The student is pushed to put its mass where the teacher is confident rather
    than to cover every class the teacher gives some probability to.

    Args:
        teacher_logits: Tensor `(..., classes)`, the teacher's logits.
        student_logits: Tensor of the same shape, the student's logits.
        temperature: Positive scalar (float or variable).

    Returns:
        Float32 tensor of shape `(...)`: the loss at each position.

    Example:
    >>> import numpy as np
    >>> loss = reverse_kl_divergence(np.zeros((2, 3)), np.eye(2, 3), 2.0)
    >>> tuple(loss.shape)
    (2,)
    """
    teacher, student, scale = _softened_log_probs(teacher_logits, student_logits, temperature)
    return scale * _kl(student, teacher)


@keras.saving.register_keras_serializable(package="keras_distill")
def jensen_shannon_divergence(teacher_logits, student_logits, temperature=1.0):
    """`T**2 * JS(softmax(t / T), softmax(s / T))`, symmetric and bounded by log 2.

    The mixture's log-probabilities are computed with `logaddexp`, so the loss
    stays finite for any logits.

    Args:
        teacher_logits: Tensor `(..., classes)`, the teacher's logits.
        student_logits: Tensor of the same shape, the student's logits.
        temperature: Positive scalar (float or variable).

    Returns:
        Float32 tensor of shape `(...)`: the loss at each position.

    Example:
    >>> import numpy as np
    >>> loss = jensen_shannon_divergence([[100.0, 0.0]], [[0.0, 100.0]])
    >>> round(float(loss[0]), 4)  # log(2), the largest possible value
    0.6931
    """
    teacher, student, scale = _softened_log_probs(teacher_logits, student_logits, temperature)
    mixture = ops.logaddexp(teacher, student) - ops.log(2.0)
    return scale * 0.5 * (_kl(teacher, mixture) + _kl(student, mixture))


@keras.saving.register_keras_serializable(package="keras_distill")
def logit_mse(teacher_logits, student_logits, temperature=1.0):
    """Mean squared error between the logits (Ba & Caruana, 2014).

    Softening both logits by `T` and scaling by `T**2` cancels out exactly, so
    the temperature has no effect on this loss; the argument exists so that all
    distillation losses share one signature.

    Args:
        teacher_logits: Tensor `(..., classes)`, the teacher's logits.
        student_logits: Tensor of the same shape, the student's logits.
        temperature: Ignored.

    Returns:
        Float32 tensor of shape `(...)`: the mean over classes of the squared
        difference.

    Example:
    >>> float(logit_mse([[1.0, 3.0]], [[0.0, 0.0]])[0])
    5.0
    """
    del temperature
    difference = ops.cast(teacher_logits, "float32") - ops.cast(student_logits, "float32")
    return ops.mean(ops.square(difference), axis=-1)


def _standardized(logits, axis=-1):
    """`(z - mean(z)) / std(z)` over the class axis (a tiny floor keeps flat logits finite)."""
    logits = ops.cast(logits, "float32")
    mean = ops.mean(logits, axis=axis, keepdims=True)
    std = ops.std(logits, axis=axis, keepdims=True)
    return (logits - mean) / ops.maximum(std, 1e-7)


@keras.saving.register_keras_serializable(package="keras_distill")
def standardized_kl_divergence(teacher_logits, student_logits, temperature=1.0):
    """`kl_divergence` of z-scored logits (logit standardization, Sun et al., CVPR 2024).

    Each logit vector is standardized over the classes (`(z - mean) / std`)
    before the temperature softmax, so the student matches the *shape* of the
    teacher's logits (their ranking and relative gaps) rather than their
    scale, which a small student may not be able to reach.

    Args:
        teacher_logits: Tensor `(..., classes)`, the teacher's logits.
        student_logits: Tensor of the same shape, the student's logits.
        temperature: Positive scalar (float or variable).

    Returns:
        Float32 tensor of shape `(...)`: the loss at each position.

    Example:
    >>> import numpy as np
    >>> t = np.array([[2.0, 0.0, -1.0]])
    >>> float(standardized_kl_divergence(t, 10 * t, temperature=2.0)[0]) < 1e-6  # scale-free
    True
    """
    return kl_divergence(_standardized(teacher_logits), _standardized(student_logits), temperature)


def _target_classes(teacher_logits, labels):
    """The labels, with the teacher's argmax wherever a label is missing (None or < 0)."""
    guess = ops.argmax(teacher_logits, axis=-1)
    if labels is None:
        return guess
    if len(labels.shape) == len(teacher_logits.shape):  # one-hot (or soft) labels
        labels = ops.where(ops.max(labels, axis=-1) > 0, ops.argmax(labels, axis=-1), -1)
    labels = ops.cast(ops.reshape(labels, ops.shape(guess)), guess.dtype)
    return ops.where(labels >= 0, labels, guess)


@keras.saving.register_keras_serializable(package="keras_distill")
def decoupled_kd(teacher_logits, student_logits, temperature=1.0, labels=None, alpha=1.0,
                 beta=8.0):  # fmt: skip
    """Decoupled knowledge distillation, `alpha * TCKD + beta * NCKD` (Zhao et al., CVPR 2022).

    Classical KD equals `TCKD + (1 - p_t) * NCKD`: target-class KD (a binary
    KL between the teacher's and the student's probability of the target
    class) plus non-target-class KD (a KL between their distributions over the
    other classes), the latter damped where the teacher is confident. DKD
    weights the two freely. Both are computed at temperature `T` and scaled by
    `T**2`, as in the paper's code (mdistiller: alpha 1, beta 8, T 4).

    The target class is the hard label. Where there is none (`labels=None`,
    or a negative label, as the `Distiller` passes for examples whose
    `label_mask` is 0), the teacher's most likely class is used instead; the
    `Distiller` also passes no labels to training steps with `augment`, whose
    views (mixup, cutmix) may no longer show the labelled class. It needs the
    teacher's full logits: stored top-k outputs are refused.

    Args:
        teacher_logits: Tensor `(..., classes)`, the teacher's logits.
        student_logits: Tensor of the same shape, the student's logits.
        temperature: Positive scalar (float or variable).
        labels: Optional integer class ids of shape `(...)`, or one-hot labels
            of the logits' shape.
        alpha: Weight of TCKD.
        beta: Weight of NCKD.

    Returns:
        Float32 tensor of shape `(...)`: the loss at each position.

    Example:
    >>> import numpy as np
    >>> t = np.array([[3.0, 1.0, 0.0]])
    >>> float(decoupled_kd(t, t, temperature=4.0, labels=np.array([0]))[0])
    0.0
    """
    temperature = ops.cast(temperature, "float32")
    teacher = ops.cast(teacher_logits, "float32") / temperature
    student = ops.cast(student_logits, "float32") / temperature
    target = ops.one_hot(_target_classes(teacher, labels), ops.shape(teacher)[-1]) > 0

    def binary(logits):  # log p(target), log (1 - p(target))
        log_p = ops.log_softmax(logits, -1)
        target_log_p = ops.sum(ops.where(target, log_p, 0.0), axis=-1)
        other_log_p = ops.logsumexp(ops.where(target, -1e30, log_p), axis=-1)
        return ops.stack([target_log_p, other_log_p], axis=-1)

    def non_target(logits):
        return ops.log_softmax(ops.where(target, -1e30, logits), -1)

    tckd = _kl(binary(teacher), binary(student))
    log_t, log_s = non_target(teacher), non_target(student)
    nckd = ops.sum(ops.where(target, 0.0, ops.exp(log_t) * (log_t - log_s)), axis=-1)
    return ops.square(temperature) * (alpha * tckd + beta * nckd)


decoupled_kd.uses_labels = True
decoupled_kd.needs_full_logits = True


def _pearson_distance(a, b, axis):
    """`1 - Pearson correlation` of `a` and `b` along `axis`."""
    a = a - ops.mean(a, axis=axis, keepdims=True)
    b = b - ops.mean(b, axis=axis, keepdims=True)
    norm = ops.sqrt(ops.sum(ops.square(a), axis=axis) * ops.sum(ops.square(b), axis=axis))
    return 1.0 - ops.sum(a * b, axis=axis) / ops.maximum(norm, 1e-8)


@keras.saving.register_keras_serializable(package="keras_distill")
def dist(teacher_logits, student_logits, temperature=1.0, beta=1.0, gamma=1.0):
    """DIST: matching relations, not values (Huang et al., NeurIPS 2022).

    `T**2 * (beta * inter + gamma * intra)`, where `inter` is `1 - Pearson
    correlation` between the teacher's and the student's softened class
    probabilities of each example (across classes), and `intra` the same for
    each class across the batch, averaged over classes. Correlations ignore
    scale and shift, so the student need not reproduce the teacher's exact
    probabilities, only how they rise and fall.

    The intra-class term is a property of the whole batch: it is added to
    every position's value, so the mean over the batch is the paper's loss
    (sample weights and masks weight the inter-class term exactly and the
    intra-class term as a constant). Sequence outputs count every position as
    a batch member. It needs full logits: stored top-k outputs are refused.

    Args:
        teacher_logits: Tensor `(..., classes)`, the teacher's logits.
        student_logits: Tensor of the same shape, the student's logits.
        temperature: Positive scalar (float or variable).
        beta: Weight of the inter-class term.
        gamma: Weight of the intra-class term.

    Returns:
        Float32 tensor of shape `(...)`: the loss at each position.

    Example:
    >>> import numpy as np
    >>> t = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    >>> bool(np.allclose(dist(t, t), 0.0, atol=1e-6))
    True
    """
    temperature = ops.cast(temperature, "float32")
    teacher = ops.softmax(ops.cast(teacher_logits, "float32") / temperature, -1)
    student = ops.softmax(ops.cast(student_logits, "float32") / temperature, -1)
    inter = _pearson_distance(teacher, student, axis=-1)
    classes = ops.shape(teacher)[-1]
    flat_t, flat_s = ops.reshape(teacher, (-1, classes)), ops.reshape(student, (-1, classes))
    intra = ops.mean(_pearson_distance(flat_t, flat_s, axis=0))
    return ops.square(temperature) * (beta * inter + gamma * intra)


dist.needs_full_logits = True


def uses_labels(fn: LossFn) -> bool:
    """Whether a distillation loss function takes the hard labels (`labels=`), as DKD does.

    Example:
    >>> uses_labels(decoupled_kd), uses_labels(kl_divergence)
    (True, False)
    """
    return bool(getattr(getattr(fn, "func", fn), "uses_labels", False))


def needs_full_logits(fn: LossFn) -> bool:
    """Whether a distillation loss function cannot work on stored top-k outputs.

    Example:
    >>> needs_full_logits(dist), needs_full_logits(kl_divergence)
    (True, False)
    """
    return bool(getattr(getattr(fn, "func", fn), "needs_full_logits", False))


def top_k_logits(values, indices, rest_logsumexp, student_logits, temperature=1.0):
    """Teacher and student logits over the teacher's top-k classes plus one "rest" class.

    When only the teacher's `k` largest logits (or log-probabilities) are
    stored, both distributions are compared on `k + 1` buckets: the `k` stored
    classes, and one bucket holding all other classes' mass. The student's rest
    bucket is exact: the log-sum-exp of its other logits. The teacher's rest
    bucket is exact at `T = 1` (its stored log-sum-exp); at other temperatures
    its mass is computed as if the other `V - k` logits were equal (their
    log-sum-exp spread evenly), which is the only assumption the stored numbers
    allow. Feed the returned pair to any distillation loss with the same `T`.

    Args:
        values: Tensor `(..., k)`, the teacher's top-k logits or log-probabilities.
        indices: Int tensor `(..., k)`, their class indices.
        rest_logsumexp: Tensor `(...)`, log-sum-exp of the other logits (or the
            log of the remaining probability mass).
        student_logits: Tensor `(..., V)`, the student's logits over all classes.
        temperature: The temperature the loss will use.

    Returns:
        `(teacher, student)` tensors `(..., k + 1)` such that `softmax(z / T)`
        gives each model's softened distribution over the buckets.

    Example:
    >>> import numpy as np
    >>> t = np.array([[3.0, 1.0, 0.0, -1.0]])
    >>> top = np.array([[0, 1]], "int32")
    >>> rest = np.log(np.exp(0.0) + np.exp(-1.0))[None]
    >>> teacher, student = top_k_logits(t[:, :2], top, rest, t, 1.0)
    >>> np.allclose(teacher, student)  # at T = 1 both are exact
    True
    """
    temperature = ops.cast(temperature, "float32")
    student_logits = ops.cast(student_logits, "float32")
    classes = ops.shape(student_logits)[-1]
    k = ops.shape(values)[-1]
    indices = ops.cast(indices, "int32")
    chosen = ops.take_along_axis(student_logits, indices, axis=-1)
    in_top = ops.sum(ops.one_hot(indices, classes), axis=-2) > 0
    scaled = ops.where(in_top, -1e30, student_logits / temperature)
    student_rest = temperature * ops.logsumexp(scaled, axis=-1)
    others = ops.cast(classes - k, "float32")
    rest = ops.cast(rest_logsumexp, "float32") - ops.log(others)
    teacher_rest = rest + temperature * ops.log(others)
    teacher = ops.concatenate([ops.cast(values, "float32"), teacher_rest[..., None]], axis=-1)
    student = ops.concatenate([chosen, student_rest[..., None]], axis=-1)
    return teacher, student


class DistillationLoss(keras.losses.Loss):
    """A `keras.losses.Loss` that wraps a distillation loss function.

    `y_true` holds the teacher's logits and `y_pred` the student's. Use it for
    custom training loops or pass it to `Distiller(distillation_loss=...)`; the
    distiller then uses the loss function with its own temperature variable.

    Args:
        fn: Callable `fn(teacher_logits, student_logits, temperature)` returning
            one loss value per position (the last axis reduced).
        temperature: Positive float (or a scalar variable) passed to `fn`.
        reduction: As for `keras.losses.Loss`.
        name: Optional name of the loss.
        dtype: Dtype of the computation, float32 by default.

    Raises:
        TypeError: If `fn` is not callable.
        ValueError: If `temperature` is not positive.

    Example:
    >>> import numpy as np
    >>> loss = DistillationLoss(kl_divergence, temperature=2.0)
    >>> float(loss(np.zeros((4, 3)), np.zeros((4, 3))))
    0.0
    """

    def __init__(
        self,
        fn: LossFn,
        temperature: float = 1.0,
        reduction: str | None = "sum_over_batch_size",
        name: str | None = None,
        dtype: str | None = None,
    ):
        if not callable(fn):
            raise TypeError(
                "`fn` must be a callable fn(teacher_logits, student_logits, "
                f"temperature); received fn={fn!r}."
            )
        if isinstance(temperature, (int, float)) and not temperature > 0:
            raise ValueError(f"`temperature` must be > 0; received {temperature!r}.")
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.fn = fn
        self.temperature = temperature

    def call(self, y_true, y_pred):
        """Returns `fn(y_true, y_pred, temperature)`, per position."""
        return self.fn(y_true, y_pred, self.temperature)

    def _loss_config(self) -> dict:
        return {
            **super().get_config(),
            "temperature": float(ops.convert_to_numpy(self.temperature)),
        }

    def get_config(self) -> dict:
        """Returns the loss configuration."""
        return {**self._loss_config(), "fn": keras.saving.serialize_keras_object(self.fn)}

    @classmethod
    def from_config(cls, config: dict) -> DistillationLoss:
        """Creates the loss from `get_config()` output."""
        config = dict(config)
        if "fn" in config:
            config["fn"] = keras.saving.deserialize_keras_object(config["fn"])
        return cls(**config)


class _NamedDistillationLoss(DistillationLoss):
    """Base of the built-in loss classes, whose function is fixed.

    Subclasses with options (e.g. DKD's `alpha` and `beta`) pass them as
    `options`; the function is then bound to them with `functools.partial`.
    """

    loss_fn: LossFn

    def __init__(
        self,
        temperature: float = 1.0,
        reduction: str | None = "sum_over_batch_size",
        name: str | None = None,
        dtype: str | None = None,
        **options,
    ):
        fn = type(self).loss_fn
        super().__init__(
            functools.partial(fn, **options) if options else fn,
            temperature=temperature,
            reduction=reduction,
            name=name,
            dtype=dtype,
        )
        self.options = options

    def get_config(self) -> dict:
        return {**self._loss_config(), **self.options}


@keras.saving.register_keras_serializable(package="keras_distill")
class KLDivergence(_NamedDistillationLoss):
    """Loss class of `kl_divergence`, the default distillation loss.

    Example:
    >>> import numpy as np
    >>> loss = KLDivergence(temperature=4.0)
    >>> float(loss(np.zeros((2, 5)), np.zeros((2, 5))))
    0.0
    """

    loss_fn = staticmethod(kl_divergence)


@keras.saving.register_keras_serializable(package="keras_distill")
class ReverseKLDivergence(_NamedDistillationLoss):
    """Loss class of `reverse_kl_divergence`.

    Example:
    >>> import numpy as np
    >>> loss = ReverseKLDivergence(temperature=2.0)
    >>> float(loss(np.ones((2, 5)), np.ones((2, 5))))
    0.0
    """

    loss_fn = staticmethod(reverse_kl_divergence)


@keras.saving.register_keras_serializable(package="keras_distill")
class JensenShannonDivergence(_NamedDistillationLoss):
    """Loss class of `jensen_shannon_divergence`.

    Example:
    >>> import numpy as np
    >>> loss = JensenShannonDivergence()
    >>> float(loss(np.zeros((2, 5)), np.zeros((2, 5))))
    0.0
    """

    loss_fn = staticmethod(jensen_shannon_divergence)


@keras.saving.register_keras_serializable(package="keras_distill")
class LogitMSE(_NamedDistillationLoss):
    """Loss class of `logit_mse`.

    Example:
    >>> loss = LogitMSE()
    >>> float(loss([[1.0, 3.0]], [[0.0, 0.0]]))
    5.0
    """

    loss_fn = staticmethod(logit_mse)


@keras.saving.register_keras_serializable(package="keras_distill")
class StandardizedKLDivergence(_NamedDistillationLoss):
    """Loss class of `standardized_kl_divergence` (logit standardization).

    Example:
    >>> import numpy as np
    >>> loss = StandardizedKLDivergence(temperature=2.0)
    >>> float(loss(np.array([[1.0, 0.0]]), np.array([[5.0, 0.0]]))) < 1e-6
    True
    """

    loss_fn = staticmethod(standardized_kl_divergence)


@keras.saving.register_keras_serializable(package="keras_distill")
class DecoupledKD(_NamedDistillationLoss):
    """Loss class of `decoupled_kd` (DKD), with its weights `alpha` (TCKD) and `beta` (NCKD).

    Inside a `Distiller` the hard labels reach it; called alone
    (`loss(teacher_logits, student_logits)`) it uses the teacher's argmax as
    the target class.

    Args:
        alpha: Weight of target-class KD.
        beta: Weight of non-target-class KD.
        temperature: Positive float passed to the function (a `Distiller`
            uses its own temperature variable instead).
        **kwargs: `reduction`, `name`, `dtype`, as for `keras.losses.Loss`.

    Example:
    >>> import numpy as np
    >>> loss = DecoupledKD(alpha=1.0, beta=8.0, temperature=4.0)
    >>> float(loss(np.array([[2.0, 0.0, 1.0]]), np.array([[2.0, 0.0, 1.0]])))
    0.0
    """

    loss_fn = staticmethod(decoupled_kd)

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: float = 1.0, **kwargs):
        super().__init__(temperature=temperature, alpha=float(alpha), beta=float(beta), **kwargs)


@keras.saving.register_keras_serializable(package="keras_distill")
class DIST(_NamedDistillationLoss):
    """Loss class of `dist`, with the weights `beta` (inter-class) and `gamma` (intra-class).

    Args:
        beta: Weight of the inter-class relation term.
        gamma: Weight of the intra-class relation term.
        temperature: Positive float passed to the function.
        **kwargs: `reduction`, `name`, `dtype`, as for `keras.losses.Loss`.

    Example:
    >>> import numpy as np
    >>> loss = DIST(beta=1.0, gamma=1.0)
    >>> t = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    >>> round(float(loss(t, t)), 6)
    0.0
    """

    loss_fn = staticmethod(dist)

    def __init__(self, beta: float = 1.0, gamma: float = 1.0, temperature: float = 1.0, **kwargs):
        super().__init__(temperature=temperature, beta=float(beta), gamma=float(gamma), **kwargs)


# Keras' own KL divergence, as the keras.io example passes it (`distillation_loss_fn=`).
KERAS_KL_NAMES = ("kl_divergence", "kld", "kullback_leibler_divergence", "KLDivergence")

_BY_NAME: dict[str, LossFn] = {
    "kl_divergence": kl_divergence,
    "kl": kl_divergence,
    "reverse_kl_divergence": reverse_kl_divergence,
    "reverse_kl": reverse_kl_divergence,
    "jensen_shannon_divergence": jensen_shannon_divergence,
    "jensen_shannon": jensen_shannon_divergence,
    "js": jensen_shannon_divergence,
    "logit_mse": logit_mse,
    "mse": logit_mse,
    "standardized_kl_divergence": standardized_kl_divergence,
    "standardized_kl": standardized_kl_divergence,
    "decoupled_kd": decoupled_kd,
    "dkd": decoupled_kd,
    "dist": dist,
}


def get(identifier: str | DistillationLoss | LossFn) -> LossFn:
    """Returns the distillation loss function an identifier names.

    Args:
        identifier: A name (`"kl_divergence"`/`"kl"`, `"reverse_kl_divergence"`/
            `"reverse_kl"`, `"jensen_shannon_divergence"`/`"js"`,
            `"logit_mse"`/`"mse"`), a `DistillationLoss` instance (its function
            is returned), or a callable
            `fn(teacher_logits, student_logits, temperature)`.

    Returns:
        The loss function.

    Raises:
        ValueError: If a name is unknown.
        TypeError: If the identifier is neither a name nor a callable.

    Example:
    >>> get("kl") is kl_divergence
    True
    """
    if isinstance(identifier, str):
        try:
            return _BY_NAME[identifier]
        except KeyError:
            raise ValueError(
                f"Unknown distillation loss {identifier!r}; expected one of "
                f"{sorted(_BY_NAME)}, a DistillationLoss instance or a callable "
                "fn(teacher_logits, student_logits, temperature)."
            ) from None
    if isinstance(identifier, DistillationLoss):
        return identifier.fn
    if isinstance(identifier, keras.losses.Loss) or not callable(identifier):
        raise TypeError(
            "`distillation_loss` must be a name, a keras_distill DistillationLoss "
            "or a callable fn(teacher_logits, student_logits, temperature); "
            f"received {identifier!r}. Keras' own losses take (y_true, y_pred) "
            "and cannot see the temperature."
        )
    return identifier


def serialize(loss: str | DistillationLoss | LossFn) -> str | dict:
    """Serializes a distillation loss: a name stays a name, objects become configs.

    Args:
        loss: Anything `get` accepts.

    Returns:
        The name, or the Keras serialization of the object or function.

    Example:
    >>> serialize("kl")
    'kl'
    >>> serialize(KLDivergence(temperature=2.0))["class_name"]
    'KLDivergence'
    """
    if isinstance(loss, str):
        return loss
    return keras.saving.serialize_keras_object(loss)


def deserialize(config: str | dict, custom_objects: dict | None = None):
    """The inverse of `serialize`: a name is checked and kept, a config is rebuilt.

    Args:
        config: A loss name or a Keras serialization config.
        custom_objects: As for `keras.saving.deserialize_keras_object`.

    Returns:
        A name, a `DistillationLoss` or a loss function, as `get` accepts.

    Raises:
        ValueError: If a name is unknown.

    Example:
    >>> deserialize(serialize(JensenShannonDivergence())).fn is jensen_shannon_divergence
    True
    """
    if isinstance(config, str):
        get(config)
        return config
    return keras.saving.deserialize_keras_object(config, custom_objects=custom_objects)
