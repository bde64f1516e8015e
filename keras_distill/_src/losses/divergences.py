"""Distillation loss functions: `fn(teacher_logits, student_logits, temperature)` per position.

The functions behind `keras_distill._src.losses` (which adds the `keras.losses.Loss`
classes, names and serialization, and re-exports all of these): Hinton's
softened KL and its relatives, DKD, DIST, logit standardization, and the top-k
bucketing of stored teacher outputs. They return one value per position (the
class axis reduced) and always compute in float32.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import ops

from keras_distill._src.losses import numerics

LossFn = Callable[[Any, Any, Any], Any]


def _softened(teacher_logits, student_logits, temperature):
    """(log p, log q, log p - log q up to a constant, T**2) of the softened distributions.

    The log-ratio is `(t - s) / T`, computed from the logits' difference, so it
    keeps its digits however large `T` is (see `numerics`).
    """
    temperature = ops.cast(temperature, "float32")
    teacher = ops.cast(teacher_logits, "float32")
    student = ops.cast(student_logits, "float32")
    log_p = ops.log_softmax(numerics.scaled(teacher, temperature), -1)
    log_q = ops.log_softmax(numerics.scaled(student, temperature), -1)
    return log_p, log_q, (teacher - student) / temperature, ops.square(temperature)


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
    log_p, _, log_ratio, scale = _softened(teacher_logits, student_logits, temperature)
    return scale * numerics.kl_from_log_ratio(log_p, log_ratio)


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
    _, log_q, log_ratio, scale = _softened(teacher_logits, student_logits, temperature)
    return scale * numerics.kl_from_log_ratio(log_q, -log_ratio)


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
    log_p, log_q, log_ratio, scale = _softened(teacher_logits, student_logits, temperature)
    kl_pq = numerics.kl_from_log_ratio(log_p, log_ratio)
    # log q - log p, exactly: minus the centered log-ratio, minus KL(p || q).
    centered = log_ratio - ops.sum(ops.exp(log_p) * log_ratio, axis=-1, keepdims=True)
    q_over_p = -centered - kl_pq[..., None]
    p_over_mixture = -numerics.log_half_one_plus_exp(q_over_p)
    kl_pm = numerics.kl_from_log_ratio(log_p, p_over_mixture)
    kl_qm = numerics.kl_from_log_ratio(log_q, q_over_p + p_over_mixture)
    # Far apart (|log q/p| >= 1 somewhere) nothing cancels: the direct sums are exact there.
    log_m = ops.logaddexp(log_p, log_q) - ops.log(2.0)
    direct = _direct_kl(log_p, log_m) + _direct_kl(log_q, log_m)
    close = ops.max(ops.abs(q_over_p), axis=-1) < 1.0
    return scale * 0.5 * ops.where(close, kl_pm + kl_qm, direct)


def _direct_kl(log_p, log_r):
    """KL(p || r) as the plain sum of `p * (log p - log r)` (sound when p and r differ)."""
    return ops.sum(ops.exp(log_p) * (log_p - log_r), axis=-1)


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
    return kl_divergence(
        numerics.standardized(teacher_logits), numerics.standardized(student_logits), temperature
    )


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
def decoupled_kd(teacher_logits, student_logits, temperature=1.0, labels=None, alpha=1.0, beta=8.0):
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
    teacher = numerics.scaled(teacher_logits, temperature)
    student = numerics.scaled(student_logits, temperature)
    target = ops.one_hot(_target_classes(teacher, labels), ops.shape(teacher)[-1]) > 0
    log_ratio = (ops.cast(teacher_logits, "float32") - ops.cast(student_logits, "float32")) / (
        temperature
    )
    log_t, log_s = _non_target(teacher, target), _non_target(student, target)
    ratio_others = ops.where(target, 0.0, log_ratio)
    nckd = numerics.kl_from_log_ratio(log_t, ratio_others)
    # log-odds of the target class, teacher minus student, without cancellation
    odds = ops.sum(ops.where(target, log_ratio, 0.0), axis=-1) - numerics.log_mean_exp(
        log_s, ratio_others
    )
    binary_ratio = ops.stack([odds, ops.zeros_like(odds)], axis=-1)
    tckd = numerics.kl_from_log_ratio(_binary(teacher, target), binary_ratio)
    return ops.square(temperature) * (alpha * tckd + beta * nckd)


def _binary(logits, target):
    """(log p(target), log (1 - p(target))) over the last axis."""
    log_p = ops.log_softmax(logits, -1)
    target_log_p = ops.sum(ops.where(target, log_p, 0.0), axis=-1)
    other_log_p = ops.logsumexp(ops.where(target, -1e30, log_p), axis=-1)
    return ops.stack([target_log_p, other_log_p], axis=-1)


def _non_target(logits, target):
    """Log-probabilities over the classes other than the target (the target gets none)."""
    return ops.log_softmax(ops.where(target, -1e30, logits), -1)


decoupled_kd.uses_labels = True
decoupled_kd.needs_full_logits = True


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
    # Deviations from uniform: the same correlations, without losing them at large T.
    teacher = numerics.centered_probabilities(numerics.scaled(teacher_logits, temperature))
    student = numerics.centered_probabilities(numerics.scaled(student_logits, temperature))
    inter = numerics.pearson_distance(teacher, student, axis=-1)
    classes = ops.shape(teacher)[-1]
    flat_t, flat_s = ops.reshape(teacher, (-1, classes)), ops.reshape(student, (-1, classes))
    intra = ops.mean(numerics.pearson_distance(flat_t, flat_s, axis=0))
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
