"""What `OnPolicyDistiller` checks and assembles: its settings, sequences, a teacher's scores.

A training sequence is a prompt followed by a response, in one row: the
student's sample, a reference response, or the teacher's own greedy answer.
`response_mask` marks the response tokens, the positions the loss counts.
"""

from __future__ import annotations

import numpy as np

from keras_distill._src.teachers.cached_decoding import Decoded, prompt_array, response_mask
from keras_distill._src.teachers.outputs import TeacherOutputError, checked_log_probabilities


def check_fraction(name: str, value) -> float:
    """`value` as a float, if it is in [0, 1]."""
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be in [0, 1]; received {name}={value!r}.")
    return value


def check_width(width: int, max_new_tokens: int, contexts: dict) -> None:
    """Refuses prompts that, with `max_new_tokens`, do not fit a model's context.

    Args:
        width: Tokens per prompt (the prompt array's width).
        max_new_tokens: Response tokens at most.
        contexts: `{"student": length or None, "teacher": ...}`.
    """
    for who, context in contexts.items():
        if context is not None and width + max_new_tokens > context:
            raise ValueError(
                f"Prompts of {width} tokens plus max_new_tokens={max_new_tokens} make "
                f"{width + max_new_tokens} tokens, more than the {who}'s context of {context}; "
                "shorten the prompts or max_new_tokens."
            )


def joined(prompts, responses, width: int, end_id: int | None, pad_id: int = 0) -> Decoded:
    """Each prompt followed by its reference response, padded to `width`.

    Args:
        prompts: `(batch, prompt_width)` right-padded prompts.
        responses: `(batch, response_width)` right-padded responses.
        width: The width of the sequences.
        end_id: The token that ends a response, or None.
        pad_id: The padding token.

    Example:
    >>> joined(np.array([[4, 5, 0]]), np.array([[7, 9]]), 5, end_id=9).tokens.tolist()
    [[4, 5, 7, 9, 0]]
    """
    tokens, lengths = prompt_array(prompts, pad_id)
    responses = np.asarray(responses)
    sequences = np.full((len(tokens), width), pad_id, "int32")
    for i, (prompt, length) in enumerate(zip(tokens, lengths, strict=True)):
        response = responses[i][: width - length]
        sequences[i, :length] = prompt[:length]
        sequences[i, length : length + len(response)] = response
    mask = response_mask(sequences, lengths, width, end_id)
    mask *= sequences != pad_id  # a reference response ends at its padding
    return Decoded(sequences, lengths, mask)


def padded_to(decoded: Decoded, width: int, pad_id: int = 0) -> Decoded:
    """The decoded batch padded with `pad_id` to `width` tokens (one shape for every step).

    Example:
    >>> d = padded_to(Decoded(np.ones((1, 2), "int32"), np.array([1]), np.ones((1, 2))), 4)
    >>> d.tokens.tolist(), d.response_mask.tolist()
    ([[1, 1, 0, 0]], [[1.0, 1.0, 0.0, 0.0]])
    """
    extra = ((0, 0), (0, width - decoded.tokens.shape[1]))
    return Decoded(
        np.pad(decoded.tokens, extra, constant_values=pad_id),
        decoded.prompt_lengths,
        np.pad(decoded.response_mask, extra).astype("float32"),
    )


def checked_scores(scores, shape: tuple, vocabulary: int, name: str):
    """A teacher callable's next-token log-probabilities, if they have the shape and are such.

    Their values are read by `keras_distill._src.teachers.outputs.checked_log_probabilities`
    (finite, not probabilities; top-k values <= 0).

    Args:
        scores: `(batch, length, vocabulary)` log-probabilities, or a
            `(log_probs, token_ids)` pair each `(batch, length, k)`.
        shape: `(batch, length)` of the scored sequences.
        vocabulary: The student's vocabulary size.
        name: The teacher's name, for the errors.

    Returns:
        float32 log-probabilities, or the `(float32, int32)` pair.

    Raises:
        TeacherOutputError: For another shape, top-k ids outside the
            vocabulary, NaN/inf, probabilities, or top-k values that are not
            log-probabilities.
    """
    if isinstance(scores, tuple | list):
        if len(scores) != 2:
            raise TeacherOutputError(
                f"The teacher {name} returned {len(scores)} arrays; a top-k teacher returns "
                "(log_probs, token_ids), each (batch, length, k)."
            )
        values, ids = (np.asarray(s) for s in scores)
        _check_shape(values, shape, None, name)
        _check_shape(ids, values.shape[:2], values.shape[-1], name)
        if values.shape[-1] >= vocabulary or ids.min() < 0 or ids.max() >= vocabulary:
            raise TeacherOutputError(
                f"The teacher {name}'s top-k has k={values.shape[-1]} and token ids in "
                f"[{ids.min()}, {ids.max()}]; k must be below the vocabulary size "
                f"{vocabulary} and the ids in [0, {vocabulary})."
            )
        return checked_log_probabilities(values, name, top_k=True), ids.astype("int32")
    scores = np.asarray(scores)
    _check_shape(scores, shape, vocabulary, name)
    return checked_log_probabilities(scores, name, top_k=False)


def _check_shape(array, shape: tuple, last: int | None, name: str) -> None:
    expected = (*shape, "k" if last is None else last)
    if array.ndim != 3 or array.shape[:2] != tuple(shape) or last not in (None, array.shape[-1]):
        raise TeacherOutputError(
            f"The teacher {name} returned an array of shape {array.shape} for sequences of "
            f"shape {tuple(shape)}; expected {expected}: next-token log-probabilities at "
            "every position."
        )
