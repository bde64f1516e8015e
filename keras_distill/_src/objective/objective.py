"""The distillation objective, computed from tensors; shared by both Keras flavours.

    loss = alpha * student_loss + (1 - alpha) * distillation_loss

`student_loss` is the loss given to `compile()` on the hard labels (the
training shell computes it, since each Keras flavour has its own compiled
loss); `distillation_loss` compares the student's outputs with a live
teacher's logits or with stored teacher outputs (see `stored_kinds`).
Every function here is pure: tensors in, tensors out, no model state and no ambient
`tf.distribute` strategy (the training step passes the replica count and the student's mask).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import NamedTuple

import keras
from keras import ops

from keras_distill._src import losses
from keras_distill._src.objective import stored_kinds
from keras_distill._src.utils.model_inspection import as_logits, check_compatible

# The divergences are float32-accurate up to here (tests/test_stronger_losses.py); T**2 stays
# far from float32's range and (t - s) / T far from its smallest normal number.
MAX_TEMPERATURE = 1e6

NO_STORED_OUTPUTS = (
    "Distiller(teacher=None) trains from stored teacher outputs, but this dataset has none: "
    "load it with keras_distill.load_teacher_labels(path), or give targets as a dict with "
    "'labels' and the keys of one stored kind ({kinds})."
)


class Losses(NamedTuple):
    """The values a training step logs: the total, its two parts, and each term.

    `terms` holds every distillation term's unweighted value when there are
    several (output losses first, then feature terms), else is empty.
    """

    total: object
    student_loss: object
    distillation_loss: object
    terms: tuple = ()


def checked_temperature(value) -> float:
    """`value` as a float if it is a valid temperature (finite, > 0, at most `MAX_TEMPERATURE`).

    The losses of `keras_distill._src.losses` are accurate up to this bound (see
    `keras_distill._src.losses.numerics`).
    """
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"`temperature` must be a finite number > 0; received {value!r}.")
    if value > MAX_TEMPERATURE:
        raise ValueError(
            f"`temperature` must be at most {MAX_TEMPERATURE:g}; received {value!r}. Beyond it "
            "softmax(z / T) is uniform to float32 precision and the T**2-scaled losses tend to "
            "half the variance of the logits' difference: use distillation_loss='logit_mse' "
            "(the same limit, up to a factor) instead."
        )
    return value


def checked_alpha(value) -> float:
    """`value` as a float if it is a valid alpha (in [0, 1])."""
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"`alpha` must be in [0, 1]; received {value!r}.")
    return value


def hard_sample_weight(sample_weight, label_mask, labels):
    """Sample weights that also zero unlabeled examples, shaped like the labels.

    Example:
    >>> import numpy as np
    >>> np.asarray(hard_sample_weight(None, np.array([1.0, 0.0]), np.zeros(2)))
    array([1., 0.], dtype=float32)
    """
    if label_mask is None:
        return sample_weight
    weights = [ops.cast(w, "float32") for w in (sample_weight, label_mask) if w is not None]
    rank = len(labels.shape)
    for i, weight in enumerate(weights):
        while 1 < rank and len(weight.shape) < rank:  # (batch,) for (batch, time) labels
            weight = ops.expand_dims(weight, -1)
        weights[i] = weight
    return weights[0] if len(weights) == 1 else weights[0] * weights[1]


def reduce(values, weight=None, mask=None, replicas: int = 1):
    """Weighted mean over positions (valid ones if masked), scaled per replica.

    Keras scales each replica's loss by `1 / replicas` so that gradients sum
    to the global-batch mean; this does the same for `replicas` replicas in sync.

    Example:
    >>> import numpy as np
    >>> float(reduce(np.array([1.0, 3.0]), mask=np.array([1.0, 0.0])))
    1.0
    """
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
    mean = ops.divide_no_nan(ops.sum(values), count)  # 0 for no valid position
    return mean if replicas == 1 else mean / float(replicas)  # no op per step without replicas


def _with_labels(loss_fn, labels):
    """`loss_fn` bound to the hard labels if it takes them (DKD), else itself."""
    if labels is None or not losses.uses_labels(loss_fn):
        return loss_fn
    return functools.partial(loss_fn, labels=labels)


def distillation_labels(labels, label_mask):
    """Hard labels for losses that take them: -1 where `label_mask` is 0 (none known).

    Example:
    >>> import numpy as np
    >>> np.asarray(distillation_labels(np.array([3, 4]), np.array([1.0, 0.0]))).tolist()
    [3, -1]
    """
    if labels is None or label_mask is None:
        return labels
    known = ops.reshape(ops.cast(label_mask, "bool"), (-1,) + (1,) * (len(labels.shape) - 1))
    return ops.where(known, labels, -ops.ones_like(labels))


def _combined(weight, extra):
    if extra is None:
        return weight
    extra = ops.cast(extra, "float32")
    return extra if weight is None else ops.cast(weight, "float32") * extra


def live_term(
    teacher_logits,
    y_pred,
    *,
    loss_fn,
    student_probabilities,
    temperature,
    sample_weight=None,
    mask=None,
    labels=None,
    replicas: int = 1,
):
    """The distillation loss against a live teacher's logits, summed over outputs.

    Args:
        teacher_logits: The teacher's float32 logits (a tensor or structure).
        y_pred: The student's outputs, of the same structure.
        loss_fn: `fn(teacher_logits, student_logits, temperature)`, per position.
        student_probabilities: Whether `y_pred` are probabilities.
        temperature: The temperature (a scalar tensor).
        sample_weight: Optional weights (one per output for multi-output models).
        mask: Optional mask of valid positions (sequence models).
        labels: Hard labels (same structure as `y_pred`) for losses that take them.
        replicas: The replicas in sync (the mean is divided by it).

    Returns:
        A scalar float32 tensor, scaled per replica.

    Example:
    >>> import numpy as np
    >>> from keras_distill import losses
    >>> float(live_term(np.zeros((2, 3)), np.zeros((2, 3)), loss_fn=losses.kl_divergence,
    ...                 student_probabilities=False, temperature=1.0))
    0.0
    """
    check_compatible(teacher_logits, y_pred, "in the training step")
    flat_student = keras.tree.flatten(as_logits(y_pred, student_probabilities))
    flat_weights, flat_labels = (
        keras.tree.flatten(value) if keras.tree.is_nested(value) else [value] * len(flat_student)
        for value in (sample_weight, labels)
    )
    terms = [
        reduce(_with_labels(loss_fn, label)(teacher, student, temperature), weight, mask, replicas)
        for teacher, student, weight, label in zip(
            keras.tree.flatten(teacher_logits),
            flat_student,
            flat_weights,
            flat_labels,
            strict=True,
        )
    ]
    return terms[0] if len(terms) == 1 else ops.sum(ops.stack(terms))  # one output: no op


def stored_term(
    stored,
    y_pred,
    *,
    loss_fn,
    student_probabilities,
    temperature,
    sample_weight=None,
    mask=None,
    labels=None,
    replicas: int = 1,
):
    """The distillation loss against stored teacher outputs (see `stored_kinds`).

    Args:
        stored: The `teacher_*` entries of the targets.
        y_pred: The student's outputs.
        loss_fn: `fn(teacher_logits, student_logits, temperature)`, per position.
        student_probabilities: Whether `y_pred` are probabilities.
        temperature: The temperature (a scalar tensor).
        sample_weight: Optional weights.
        mask: Optional mask of valid positions (sequence models).
        labels: Hard labels for losses that take them.
        replicas: The replicas in sync (the mean is divided by it).

    Returns:
        A scalar float32 tensor, scaled per replica.

    Example:
    >>> import numpy as np
    >>> from keras_distill import losses
    >>> float(stored_term({"teacher_labels": np.array([0, 1])}, np.array([[9.0, 0], [0, 9]]),
    ...                   loss_fn=losses.kl_divergence, student_probabilities=False,
    ...                   temperature=1.0)) < 1e-3
    True
    """
    kind = stored_kinds.kind_of(stored)
    loss_fn = _with_labels(loss_fn, labels)
    term = kind.term(stored, y_pred, student_probabilities, temperature, loss_fn)
    weight = _combined(sample_weight, term.weight)
    return reduce(term.values, weight, mask if term.mask is None else term.mask, replicas)


@dataclasses.dataclass(frozen=True)
class Terms:
    """The distillation terms a distiller computes, fixed at construction.

    Attributes:
        loss_fns: The distillation loss functions on the outputs, one term
            each (may be empty when feature terms give `Teaching.extra_terms`).
        weights: One weight per term (output terms, then the extra terms); 1
            each when None.
        student_probabilities: Whether the student's outputs are probabilities.
    """

    loss_fns: tuple
    weights: tuple | None = None
    student_probabilities: bool = False


@dataclasses.dataclass(frozen=True)
class Teaching:
    """What one batch gives the distillation terms besides the student's outputs.

    Attributes:
        teacher_logits: A live teacher's float32 logits, or None.
        stored: Stored teacher outputs (may be empty; see `stored_kinds`).
        labels: Hard labels for losses that take them (-1 where unknown; see
            `distillation_labels`), or None.
        extra_terms: Values of further terms computed elsewhere (feature
            distillation, `keras_distill._src.objective.features`), scaled per replica.
    """

    teacher_logits: object = None
    stored: Mapping = dataclasses.field(default_factory=dict)
    labels: object = None
    extra_terms: tuple = ()


def _term_values(y_pred, teaching: Teaching, terms: Terms, **options):
    """The output terms' values, or None when there is nothing to compare with."""
    options.update(student_probabilities=terms.student_probabilities, labels=teaching.labels)
    if teaching.teacher_logits is not None:
        return [
            live_term(teaching.teacher_logits, y_pred, loss_fn=fn, **options)
            for fn in terms.loss_fns
        ]
    if teaching.stored:
        return [
            stored_term(teaching.stored, y_pred, loss_fn=fn, **options) for fn in terms.loss_fns
        ]
    return None


def _weighted_sum(values: list, weights) -> object:
    weights = [1.0] * len(values) if weights is None else list(weights)
    if len(values) == 1 and weights == [1.0]:  # one term: no extra ops in the step
        return values[0]
    return ops.sum(ops.stack([w * v for w, v in zip(weights, values, strict=True)]))


def compute(
    student_loss,
    y_pred,
    teaching: Teaching,
    terms: Terms,
    *,
    temperature,
    alpha,
    sample_weight=None,
    mask=None,
    replicas: int = 1,
    training: bool = True,
) -> Losses:
    """The whole objective of one step from tensors.

        total = alpha * student_loss + (1 - alpha) * sum_i weights[i] * term_i

    Args:
        student_loss: The compiled loss on the hard labels (scaled per replica).
        y_pred: The student's outputs.
        teaching: The teacher's side of the batch (`Teaching`).
        terms: The distillation terms (`Terms`).
        temperature: The temperature (a scalar tensor).
        alpha: The hard-label weight (a scalar tensor).
        sample_weight: Optional sample weights.
        mask: Optional mask of the student's valid positions (a sequence model's output mask).
        replicas: The replicas in sync (each term's mean is divided by it, as Keras does).
        training: Whether this is a training step (stored outputs are required then).

    Returns:
        `Losses(total, student_loss, distillation_loss, terms)`, scaled per replica.

    Raises:
        ValueError: If neither a teacher nor stored outputs are given in training.

    Example:
    >>> import numpy as np
    >>> from keras_distill import losses
    >>> result = compute(1.0, np.zeros((2, 3)), Teaching(teacher_logits=np.zeros((2, 3))),
    ...                  Terms((losses.kl_divergence,)), temperature=1.0, alpha=0.25)
    >>> float(result.total)
    0.25
    """
    student_loss = ops.cast(student_loss, "float32")
    values = _term_values(
        y_pred,
        teaching,
        terms,
        temperature=temperature,
        sample_weight=sample_weight,
        mask=mask,
        replicas=replicas,
    )
    if values is None and training:
        kinds = "; ".join(repr(sorted(k.target_keys)) for k in stored_kinds.KINDS.values())
        raise ValueError(NO_STORED_OUTPUTS.format(kinds=kinds))
    if values is None:  # evaluating a stored-teacher student on plain labelled data
        return Losses(student_loss, student_loss, ops.zeros((), "float32"))
    values += [ops.cast(value, "float32") for value in teaching.extra_terms]
    distillation_loss = _weighted_sum(values, terms.weights)
    alpha = ops.cast(alpha, "float32")
    total = alpha * student_loss + (1.0 - alpha) * distillation_loss
    return Losses(total, student_loss, distillation_loss, tuple(values) if len(values) > 1 else ())
