"""Per-token divergences between a teacher's and a student's next-token distributions.

The generalized Jensen-Shannon divergence of GKD (Agarwal et al., ICLR 2024),
as TRL's `GKDTrainer` computes it: with the mixture
`M = beta * P_teacher + (1 - beta) * P_student`,

    JSD(beta) = beta * KL(P_teacher || M) + (1 - beta) * KL(P_student || M),

and its two ends taken as the KL divergences themselves: `beta = 0` is the
forward `KL(P_teacher || P_student)` (mean-seeking, supervised KD) and
`beta = 1` the reverse `KL(P_student || P_teacher)` (mode-seeking).

A teacher gives either its full next-token log-probabilities
`(batch, length, vocabulary)` or only its `k` most probable tokens, as
`(log_probs, token_ids)` each `(batch, length, k)` (a teacher served with
top-k logits). The top-k form compares `k + 1` buckets: the `k` tokens and
the remaining mass of all the others (`1 - sum` of the `k` probabilities,
for the teacher and for the student alike, at least `REST_FLOOR`).

At a temperature `T`, the student's distribution is `softmax(logits / T)`
and the teacher's `softmax(log_probs / T)`; in the top-k form the teacher's
remaining mass is tempered as one bucket.
"""

from __future__ import annotations

from keras import ops

REST_FLOOR = 1e-7  # the smallest remaining mass in the top-k form (its log stays finite)


def check_beta(beta: float) -> float:
    """`beta` as a float, if it is in [0, 1]."""
    if not 0.0 <= float(beta) <= 1.0:
        raise ValueError(
            f"`beta` must be in [0, 1] (0: forward KL, 1: reverse KL, between: the "
            f"generalized JSD); received beta={beta!r}."
        )
    return float(beta)


def kl_from_log_probs(p_log_probs, q_log_probs):
    """`KL(P || Q)` over the last axis, from log-probabilities.

    Example:
    >>> import numpy as np
    >>> p = np.log([[0.5, 0.5]]); q = np.log([[0.25, 0.75]])
    >>> round(float(kl_from_log_probs(p, q)[0]), 4)
    0.1438
    """
    return ops.sum(ops.exp(p_log_probs) * (p_log_probs - q_log_probs), axis=-1)


def generalized_jsd(teacher_log_probs, student_log_probs, beta):
    """`JSD(beta)` per position, over the last axis (forward KL at 0, reverse KL at 1).

    Args:
        teacher_log_probs: The teacher's log-probabilities, `(..., classes)`.
        student_log_probs: The student's, the same shape.
        beta: A float or scalar tensor (e.g. a variable a callback schedules)
            in [0, 1].

    Returns:
        The divergence per position, `(...)`.

    Example:
    >>> import numpy as np
    >>> t = np.log([[0.9, 0.1]]); s = np.log([[0.5, 0.5]])
    >>> [round(float(generalized_jsd(t, s, b)[0]), 4) for b in (0.0, 0.5, 1.0)]
    [0.3681, 0.1017, 0.5108]
    """
    beta = ops.cast(beta, student_log_probs.dtype)
    mixture = ops.logsumexp(
        ops.stack(
            [student_log_probs + ops.log(1.0 - beta), teacher_log_probs + ops.log(beta)], axis=0
        ),
        axis=0,
    )
    mixed = beta * kl_from_log_probs(teacher_log_probs, mixture) + (1.0 - beta) * kl_from_log_probs(
        student_log_probs, mixture
    )
    forward = kl_from_log_probs(teacher_log_probs, student_log_probs)
    reverse = kl_from_log_probs(student_log_probs, teacher_log_probs)
    return ops.where(beta <= 0.0, forward, ops.where(beta >= 1.0, reverse, mixed))


def top_k_buckets(teacher_top_log_probs, teacher_top_ids, student_log_probs):
    """The `k + 1` bucket log-probabilities of teacher and student: the teacher's top k, the rest.

    Args:
        teacher_top_log_probs: The teacher's `k` largest log-probabilities, `(..., k)`.
        teacher_top_ids: Their token ids, `(..., k)`.
        student_log_probs: The student's full log-probabilities, `(..., vocabulary)`.

    Returns:
        `(teacher, student)`, each `(..., k + 1)`: the `k` tokens' log-probabilities
        then the log of the remaining mass.

    Example:
    >>> import numpy as np
    >>> s = np.log([[0.1, 0.2, 0.7]])
    >>> t, s2 = top_k_buckets(np.log([[0.6]]), np.array([[2]]), s)
    >>> np.round(np.exp(t), 3).tolist(), np.round(np.exp(s2), 3).tolist()
    ([[0.6, 0.4]], [[0.7, 0.3]])
    """
    student_top = ops.take_along_axis(student_log_probs, ops.cast(teacher_top_ids, "int32"), -1)
    chosen = ops.sum(
        ops.one_hot(ops.cast(teacher_top_ids, "int32"), ops.shape(student_log_probs)[-1]), axis=-2
    )
    hidden = ops.where(chosen > 0, -1e9, student_log_probs)
    floor = ops.log(ops.cast(REST_FLOOR, student_log_probs.dtype))
    student_rest = ops.maximum(ops.logsumexp(hidden, axis=-1, keepdims=True), floor)
    teacher_top = ops.cast(teacher_top_log_probs, student_log_probs.dtype)
    teacher_mass = ops.sum(ops.exp(teacher_top), axis=-1, keepdims=True)
    teacher_rest = ops.maximum(ops.log(ops.maximum(1.0 - teacher_mass, 0.0)), floor)
    return (
        ops.concatenate([teacher_top, teacher_rest], axis=-1),
        ops.concatenate([student_top, student_rest], axis=-1),
    )


def token_divergence(teacher, student_logits, beta, temperature=1.0):
    """`JSD(beta)` at each position between a teacher and a student's logits, at a temperature.

    Args:
        teacher: The teacher's next-token log-probabilities `(batch, length,
            vocabulary)`, or its top k as a `(log_probs, token_ids)` pair, each
            `(batch, length, k)` (compared as `k + 1` buckets with the rest).
        student_logits: The student's logits, `(batch, length, vocabulary)`.
        beta: In [0, 1] (0: forward KL, 1: reverse KL).
        temperature: Divides the student's logits and the teacher's log-probabilities.

    Returns:
        The divergence per position, `(batch, length)`.

    Example:
    >>> import numpy as np
    >>> teacher = np.log(np.full((1, 2, 3), 1 / 3))
    >>> tuple(token_divergence(teacher, np.zeros((1, 2, 3)), 0.5).shape)
    (1, 2)
    """
    temperature = ops.cast(temperature, "float32")
    student_log_probs = ops.log_softmax(ops.cast(student_logits, "float32") / temperature, axis=-1)
    if isinstance(teacher, tuple | list):
        top_log_probs, top_ids = teacher
        teacher_buckets, student_buckets = top_k_buckets(top_log_probs, top_ids, student_log_probs)
        teacher_log_probs = ops.log_softmax(teacher_buckets / temperature, axis=-1)
        return generalized_jsd(teacher_log_probs, student_buckets, beta)
    teacher_log_probs = ops.log_softmax(ops.cast(teacher, "float32") / temperature, axis=-1)
    return generalized_jsd(teacher_log_probs, student_log_probs, beta)


def masked_sequence_mean(per_token, mask):
    """The mean over each sequence's masked positions, then over the sequences that have any.

    GKD's `D(p_T || p_S)(y | x)` is the divergence averaged over the `L_y`
    tokens of each response; the batch loss is its mean over responses.
    (TRL's `GKDTrainer` instead averages over all response tokens of the batch.)

    Args:
        per_token: `(batch, length)` values.
        mask: `(batch, length)`, 1 where a position counts.

    Returns:
        A scalar (0 when no position counts).

    Example:
    >>> import numpy as np
    >>> float(masked_sequence_mean(np.array([[1.0, 3.0], [5.0, 0.0]]),
    ...                            np.array([[1.0, 1.0], [1.0, 0.0]])))
    3.5
    """
    mask = ops.cast(mask, per_token.dtype)
    counts = ops.sum(mask, axis=-1)
    per_sequence = ops.sum(per_token * mask, axis=-1) / ops.maximum(counts, 1.0)
    present = ops.cast(counts > 0, per_token.dtype)
    return ops.sum(per_sequence * present) / ops.maximum(ops.sum(present), 1.0)
