"""The stored-target protocol: one table of the kinds of teacher output that can be stored.

Each `StoredKind` says, in one place, how a kind of teacher output is written
(`encode`: a batch of teacher outputs to TFRecord fields), how it is read back
(`fields`: record field -> target key; `decode`), and which distillation term it
feeds (`term`). `label_with_teacher` writes with it, `load_teacher_labels` reads
with it and the distillation objective computes with it; adding a kind is one
entry in `KINDS`.

The targets a `Distiller` receives are then a dict with `"labels"`,
`"label_mask"` and the kind's target keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import keras
import numpy as np
from keras import ops

from keras_distill._src import losses
from keras_distill._src.utils.model_inspection import PROBABILITY_FLOOR, as_logits, check_compatible

LABEL_KEYS = ("labels", "label_mask")


@dataclasses.dataclass(frozen=True)
class Term:
    """What a stored kind gives the objective: a loss per position, a weight, a mask.

    `mask` (positions that count, e.g. a response's tokens) replaces the
    student's own output mask when given.
    """

    values: object
    weight: object = None
    mask: object = None


@dataclasses.dataclass(frozen=True)
class StoredKind:
    """One kind of stored teacher output.

    Attributes:
        name: The `output` it stores (`"logits"`, `"top_k"`, ...).
        fields: Record field name -> target key, for the fields always present.
        optional: The same for fields that may be missing (e.g. confidence).
        classes_last: Whether the first field's last axis is the class axis
            (so a label has the field's shape without it).
        label_dtype: The dtype of this kind's hard labels.
        encode: `encode(outputs, confidence, settings) -> {field: batch array}`,
            or None for a kind whose records another module assembles (the
            responses of generating teachers, `keras_distill._src.labelling.responses`).
        decode: `decode({target key: tensor}) -> {target key: tensor}`.
        constants: Manifest entry -> target key, for values of the whole run
            that every example's targets repeat (e.g. the teacher's class count).
        term: `term(stored, y_pred, student_probabilities, temperature, loss_fn) -> Term`.
        derived: Target keys computed when loading rather than stored (e.g.
            the weights of scored responses).

    Example:
    >>> KINDS["logits"].fields
    {'teacher': 'teacher_logits'}
    """

    name: str
    fields: Mapping[str, str]
    encode: Callable | None
    term: Callable
    optional: Mapping[str, str] = dataclasses.field(default_factory=dict)
    classes_last: bool = True
    label_dtype: str = "int32"
    decode: Callable = dataclasses.field(default=lambda targets: targets)
    constants: Mapping[str, str] = dataclasses.field(default_factory=dict)
    derived: tuple = ()

    @property
    def target_keys(self) -> frozenset:
        """The target keys this kind always provides."""
        return frozenset(self.fields.values())


# -- encoding (NumPy, in label_with_teacher) ---------------------------------------


def _encode_outputs(outputs, confidence, settings) -> dict:
    del confidence, settings
    return {"teacher": outputs}


def _encode_scores(outputs, confidence, settings) -> dict:
    del settings
    fields = {"teacher": outputs}
    if confidence is not None:
        fields["confidence"] = confidence
    return fields


def _encode_top_k(outputs, confidence, settings) -> dict:
    """(values, indices, rest log-sum-exp) of the k largest entries per position."""
    del confidence
    k, probabilities = settings["top_k"], settings["output"] == "probabilities"
    indices = np.argsort(-outputs, axis=-1, kind="stable")[..., :k].astype("int32")
    values = np.take_along_axis(outputs, indices, axis=-1)
    if probabilities:
        rest = np.log(np.maximum(1.0 - values.sum(-1), PROBABILITY_FLOOR))
        values = np.log(np.maximum(values, PROBABILITY_FLOOR))
    else:
        mask = np.ones_like(outputs, dtype=bool)
        np.put_along_axis(mask, indices, False, axis=-1)
        rest_values = np.where(mask, outputs, -np.inf)
        peak = rest_values.max(-1, keepdims=True)
        rest = (peak + np.log(np.exp(rest_values - peak).sum(-1, keepdims=True)))[..., 0]
    return {
        "topk_values": values.astype("float32"),
        "topk_indices": indices,
        "rest_logsumexp": rest.astype("float32"),
    }


def _decode_probabilities(targets: dict) -> dict:
    return {"teacher_logits": as_logits(targets["teacher_logits"], probabilities=True)}


# -- terms (tensors, in the training step) ------------------------------------------


def _distribution_term(stored, y_pred, student_probabilities, temperature, loss_fn) -> Term:
    teacher = ops.cast(stored["teacher_logits"], "float32")
    student = as_logits(y_pred, student_probabilities)
    check_compatible(teacher, student, "(stored teacher outputs)")
    return Term(loss_fn(teacher, student, temperature))


def _top_k_term(stored, y_pred, student_probabilities, temperature, loss_fn) -> Term:
    if losses.needs_full_logits(loss_fn):
        name = getattr(getattr(loss_fn, "func", loss_fn), "__name__", repr(loss_fn))
        raise ValueError(
            f"The distillation loss {name!r} needs the teacher's full logits, but these stored "
            "outputs keep only its top-k classes. Store full logits (label_with_teacher without "
            "top_k), or use a loss that works on top-k buckets, such as 'kl_divergence'."
        )
    student = as_logits(y_pred, student_probabilities)
    if "teacher_classes" in stored:  # from the manifest: the top-k hide the class count
        import tensorflow as tf

        check = tf.debugging.assert_equal(
            tf.shape(student)[-1],
            tf.cast(tf.reduce_max(stored["teacher_classes"]), "int32"),
            message="The stored top-k teacher outputs are of a teacher with another number of "
            "classes than the student (student's count first, the teacher's second): "
            "distil into a student with the teacher's classes",
        )
        with tf.control_dependencies([check]):
            student = tf.identity(student)
    teacher, student = losses.top_k_logits(
        stored["teacher_topk_values"],
        stored["teacher_topk_indices"],
        stored["teacher_rest_logsumexp"],
        student,
        temperature,
    )
    return Term(loss_fn(teacher, student, temperature))


def _labels_term(stored, y_pred, student_probabilities, temperature, loss_fn) -> Term:
    del loss_fn
    student = as_logits(y_pred, student_probabilities)
    values = ops.square(temperature) * keras.losses.sparse_categorical_crossentropy(
        stored["teacher_labels"], student / temperature, from_logits=True
    )
    return Term(values)


def _scores_term(stored, y_pred, student_probabilities, temperature, loss_fn) -> Term:
    del student_probabilities, temperature, loss_fn
    scores = ops.cast(stored["teacher_scores"], "float32")
    values = ops.square(ops.cast(y_pred, "float32") - ops.reshape(scores, ops.shape(y_pred)))
    if len(values.shape) > 1:
        values = ops.mean(values, axis=-1)
    return Term(values, stored.get("teacher_confidence"))


def _sequences_term(stored, y_pred, student_probabilities, temperature, loss_fn) -> Term:
    """Teacher-forced cross-entropy on the response tokens (sequence-level KD), weighted.

    The teacher's tokens are hard targets (no temperature); where the teacher
    also gave its top-k token distribution, the distillation loss on those
    buckets (at the temperature) is added at each response position.
    """
    student = as_logits(y_pred, student_probabilities)
    values = keras.losses.sparse_categorical_crossentropy(
        stored["teacher_tokens"], student, from_logits=True
    )
    if "teacher_topk_values" in stored:
        values = values + _top_k_term(stored, student, False, temperature, loss_fn).values
    return Term(values, stored.get("teacher_weight"), stored["teacher_response_mask"])


KINDS: dict[str, StoredKind] = {
    kind.name: kind
    for kind in (  # sequences first: its optional top-k keys are also the top-k kind's
        StoredKind(
            "sequences",
            {"teacher": "teacher_tokens", "response_mask": "teacher_response_mask"},
            None,  # keras_distill._src.labelling.responses writes these records itself
            _sequences_term,
            optional={
                "score": "teacher_score",
                "group_scores": "teacher_group_scores",
                "rank": "teacher_rank",  # what weighting and best-of-n read
                "topk_values": "teacher_topk_values",
                "topk_indices": "teacher_topk_indices",
                "rest_logsumexp": "teacher_rest_logsumexp",
            },  # the teacher's top-k, if any
            constants={"vocabulary_size": "teacher_vocabulary_size"},
            classes_last=False,
            derived=("teacher_weight",),
        ),
        StoredKind("logits", {"teacher": "teacher_logits"}, _encode_outputs, _distribution_term),
        StoredKind(
            "probabilities",
            {"teacher": "teacher_logits"},
            _encode_outputs,
            _distribution_term,
            decode=_decode_probabilities,
        ),
        StoredKind(
            "top_k",
            {
                "topk_values": "teacher_topk_values",
                "topk_indices": "teacher_topk_indices",
                "rest_logsumexp": "teacher_rest_logsumexp",
            },
            _encode_top_k,
            _top_k_term,
            constants={"teacher_classes": "teacher_classes"},
        ),
        StoredKind(
            "labels",
            {"teacher": "teacher_labels"},
            _encode_outputs,
            _labels_term,
            classes_last=False,
        ),
        StoredKind(
            "scores",
            {"teacher": "teacher_scores"},
            _encode_scores,
            _scores_term,
            optional={"confidence": "teacher_confidence"},
            classes_last=False,
            label_dtype="float32",
        ),
    )
}

TARGET_KEYS = frozenset(LABEL_KEYS).union(
    *(
        kind.target_keys | {*kind.optional.values(), *kind.constants.values(), *kind.derived}
        for kind in KINDS.values()
    )
)


def stored_kind(output: str, top_k: int | None) -> StoredKind:
    """The kind that `label_with_teacher(output=..., top_k=...)` stores.

    Example:
    >>> stored_kind("probabilities", top_k=5).name
    'top_k'
    """
    return KINDS["top_k"] if top_k is not None else KINDS[output]


def kind_of(stored: Mapping) -> StoredKind:
    """The kind whose target keys a dict of stored teacher outputs holds.

    Args:
        stored: The `teacher_*` entries of a target dict.

    Returns:
        The first matching `StoredKind`.

    Raises:
        ValueError: If no kind matches the keys.

    Example:
    >>> kind_of({"teacher_labels": 0}).name
    'labels'
    """
    for kind in KINDS.values():
        if kind.target_keys <= set(stored):
            return kind
    expected = " or ".join(repr(sorted(kind.target_keys)) for kind in KINDS.values())
    raise ValueError(
        f"Stored teacher outputs {sorted(stored)} are incomplete; expected {expected}."
    )


@dataclasses.dataclass(frozen=True)
class Targets:
    """A batch's targets, read once: hard labels, which of them are known, stored outputs.

    Attributes:
        labels: The hard labels, or None (`fit(x)` without labels).
        label_mask: 1 where a label is known, 0 where not (stored unlabelled
            examples), or None when every label is known.
        stored: The stored teacher outputs (`teacher_*` keys; empty for a live teacher).
        sample_weight: The batch's sample weights, or None.
    """

    labels: object = None
    label_mask: object = None
    stored: Mapping = dataclasses.field(default_factory=dict)
    sample_weight: object = None


def read_targets(y, sample_weight=None) -> Targets:
    """Plain labels or a target dict (labels, label mask, stored outputs) as a `Targets`.

    Keras gives a target dict one copy of a single `sample_weight` per key; those copies
    become the batch's one `sample_weight` again.

    Example:
    >>> read_targets({"labels": 1, "label_mask": 1.0, "teacher_labels": 2}).stored
    {'teacher_labels': 2}
    """
    if not (isinstance(y, dict) and y and set(y) <= TARGET_KEYS):
        return Targets(labels=y, sample_weight=sample_weight)
    if isinstance(sample_weight, dict) and set(sample_weight) == set(y):
        sample_weight = sample_weight.get("labels", next(iter(sample_weight.values())))
    stored = {key: value for key, value in y.items() if key not in LABEL_KEYS}
    return Targets(y.get("labels"), y.get("label_mask"), stored, sample_weight)
