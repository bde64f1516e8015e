"""A generating teacher's responses, stored: checked, scored, one record per response.

Sequence-level distillation (Kim & Rush 2016) needs no access to the
teacher's insides: give it prompts, keep its responses, and train a small
language model on them with teacher forcing. `label_with_teacher(generate,
prompts, path, output="sequences", ...)` stores them with this module: every
response (several per prompt with `num_samples`) as one record of the prompt
and response tokens, a mask of the response tokens, and a score (the
teacher's own, e.g. its log-probability, or a grader's). The records use the
same shards, manifest, checksums and resumption as every stored output; the
Beam path (`kd.labelling.beam`) writes them with the same functions.

`load_teacher_labels(path, score_weighting=..., best_of_n=...)`
(`keras_distill._src.labelling.reader`) reads them back for `Distiller(teacher=None,
student=causal_lm)`, which then trains with the cross-entropy of the
student on the response tokens, each response weighted by a function of its
score (`keras_distill._src.labelling.reader.SCORE_WEIGHTINGS`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from keras_distill._src.labelling.errors import TeacherLabelsError
from keras_distill._src.teachers.outputs import checked_log_probabilities, teacher_name
from keras_distill._src.utils.model_inspection import PROBABILITY_FLOOR


@dataclasses.dataclass(frozen=True)
class SequenceOptions:
    """What `label_with_teacher(output="sequences")` needs besides the teacher and prompts.

    Attributes:
        vocabulary_size: Token ids must be in `[0, vocabulary_size)`.
        max_length: Longest prompt + response, in tokens; records are padded to it.
        pad_id: The padding token (stripped from the end of padded rows).
        num_samples: Responses per prompt (`generate` is called that many times).
        score: Optional grader `score(prompt, response) -> float`, on tokens
            (or strings, with a tokenizer).
        tokenizer: Optional `tokenizer(text) -> token ids`, for string prompts
            and responses.

    Raises:
        ValueError: For sizes < 1 or a pad id outside the vocabulary.

    Example:
    >>> import tempfile
    >>> import keras_distill as kd
    >>> options = kd.labelling.SequenceOptions(vocabulary_size=8, max_length=6, num_samples=2)
    >>> reverse = lambda prompts: [list(prompt)[::-1] for prompt in prompts]
    >>> manifest = kd.labelling.label_responses(
    ...     reverse, [[1, 2], [3, 4, 5]], tempfile.mkdtemp(), options=options, verbose=0)
    >>> manifest["num_examples"]  # two responses per prompt
    4
    """

    vocabulary_size: int | None = None
    max_length: int | None = None
    pad_id: int = 0
    num_samples: int = 1
    score: Callable | None = None
    tokenizer: Callable | None = None

    def __post_init__(self):
        if self.vocabulary_size is None or self.max_length is None:
            raise ValueError(
                "output='sequences' needs `vocabulary_size` and `max_length`; received "
                f"{self.vocabulary_size!r}, {self.max_length!r}."
            )
        if min(self.vocabulary_size, self.max_length, self.num_samples) < 1:
            raise ValueError(
                f"`vocabulary_size`, `max_length` and `num_samples` must be >= 1; "
                f"received {self.vocabulary_size}, {self.max_length}, "
                f"{self.num_samples}."
            )
        if not 0 <= self.pad_id < self.vocabulary_size:
            raise ValueError(f"`pad_id` must be in [0, vocabulary_size); received {self.pad_id}.")


class Sample(NamedTuple):
    """One checked response: its tokens, score, and optional top-k `(log-probs, indices)`."""

    response: np.ndarray
    score: float
    top_k: tuple | None


def _tokens(row, options: SequenceOptions, padded: bool) -> np.ndarray:
    if isinstance(row, str):
        if options.tokenizer is None:
            raise TeacherLabelsError(
                "Prompts or responses are strings; pass tokenizer= (a "
                "callable from text to token ids)."
            )
        row = options.tokenizer(row)
    tokens = np.asarray(row).reshape(-1)
    if padded:  # a row of a padded array: its trailing pads are padding
        tokens = _without_trailing_pads(tokens, options.pad_id)
    return tokens


def _without_trailing_pads(tokens: np.ndarray, pad_id: int) -> np.ndarray:
    nonpad = np.nonzero(tokens != pad_id)[0]
    return tokens[: nonpad[-1] + 1 if len(nonpad) else 0]


def normalized_prompt(prompt, index: int, options: SequenceOptions) -> np.ndarray:
    """One prompt as integer token ids without trailing padding; refuses an empty one.

    The one prompt normalisation of both writers (`label_with_teacher` and
    `kd.labelling.beam`), so that they store the same records: a
    prompt's trailing `pad_id` tokens are padding (of a padded array, or of a
    list), and the response follows the last real token.

    Args:
        prompt: Token ids (a row of a padded array, a list) or a string (with
            `options.tokenizer`).
        index: The prompt's index, for the message.
        options: The `SequenceOptions`.

    Raises:
        TeacherLabelsError: If the prompt is empty (or all padding), or its
            tokens are not integers.
    """
    tokens = _tokens(prompt, options, padded=False)
    if len(tokens) and not np.issubdtype(tokens.dtype, np.integer):
        raise TeacherLabelsError(
            f"Prompt {index} must hold integer token ids; it has dtype {tokens.dtype} "
            f"({tokens[:5].tolist()}). Cast the prompts to int32."
        )
    tokens = _without_trailing_pads(tokens, options.pad_id)
    if len(tokens) == 0:
        raise TeacherLabelsError(
            f"Prompt {index} is empty (no token other than pad_id={options.pad_id}: "
            f"{np.asarray(prompt).tolist()!r}); a response needs a prompt to follow. Remove it. "
            "Nothing was written."
        )
    return tokens


def prompt_tokens(prompts, options: SequenceOptions) -> list[np.ndarray]:
    """The prompts as token arrays (`normalized_prompt`): from a padded array, lists, or strings."""
    rows = [normalized_prompt(row, i, options) for i, row in enumerate(prompts)]
    if not rows:
        raise TeacherLabelsError("There are no prompts to label; nothing was written.")
    return rows


def _responses(generated, prompts: list, start: int, options: SequenceOptions):
    """(responses as returned, as token arrays, scores or None, top-k or None), checked."""
    scores = top_k = None
    if isinstance(generated, dict):
        generated, scores, top_k = (generated.get(k) for k in ("responses", "scores", "top_k"))
    elif isinstance(generated, tuple) and len(generated) == 2:
        generated, scores = generated
    if hasattr(generated, "to_list"):  # a tf.RaggedTensor
        generated = generated.to_list()
    padded = isinstance(generated, np.ndarray) and generated.ndim == 2
    if len(generated) != len(prompts):
        raise TeacherLabelsError(
            f"`generate` returned {len(generated)} responses for "
            f"{len(prompts)} prompts (prompts {start}-"
            f"{start + len(prompts) - 1}); it must return one per "
            "prompt. Nothing of this batch was stored."
        )
    generated = list(generated)
    responses = [_tokens(row, options, padded) for row in generated]
    if scores is not None:
        scores = np.asarray(scores, "float64").reshape(-1)
        if len(scores) != len(prompts):
            raise TeacherLabelsError(
                f"`generate` returned {len(scores)} scores for "
                f"{len(prompts)} prompts (prompts {start}-...)."
            )
    if top_k is not None and len(top_k) != len(prompts):
        raise TeacherLabelsError(
            f"`generate` returned top-k outputs for {len(top_k)} responses "
            f"of {len(prompts)} (prompts {start}-...)."
        )
    return generated, responses, scores, top_k


def _checked_top_k(index: int, top_k, response, options: SequenceOptions, teacher: str) -> tuple:
    """(log-probabilities, indices), each `(response tokens, k)`, of one response; checked.

    The values are read by `checked_log_probabilities`, the one reading of a
    teacher's log-probabilities (a `TeacherOutputError` for NaN/inf or values
    that are not log-probabilities).
    """
    values, indices = (np.asarray(a) for a in top_k)
    where = f"the top-k outputs of the response to prompt {index}"
    if values.shape != indices.shape or values.ndim != 2 or len(values) != len(response):
        raise TeacherLabelsError(
            f"{where} must be two arrays of shape (response tokens "
            f"{len(response)}, k); received {values.shape} and "
            f"{indices.shape}."
        )
    if np.any((indices < 0) | (indices >= options.vocabulary_size)):
        raise TeacherLabelsError(f"{where} have token ids outside [0, {options.vocabulary_size}).")
    values = checked_log_probabilities(
        values[None], teacher, top_k=True, start=index, unit="the top-k outputs of prompts"
    )
    return values[0], indices.astype("int32")


def _check_pair(index: int, prompt, response, score, options: SequenceOptions) -> None:
    where = f"prompt {index}"
    if len(response) == 0:
        raise TeacherLabelsError(
            f"The teacher's response to {where} is empty; nothing of this batch was stored."
        )
    for name, tokens in (("prompt", prompt), ("response", response)):
        if not np.issubdtype(tokens.dtype, np.integer):
            raise TeacherLabelsError(
                f"The {name} of {where} must hold integer token ids; it has dtype "
                f"{tokens.dtype} ({tokens[:5].tolist()})."
            )
        bad = tokens[(tokens < 0) | (tokens >= options.vocabulary_size)]
        if len(bad):
            raise TeacherLabelsError(
                f"The {name} of {where} has tokens outside the vocabulary "
                f"[0, {options.vocabulary_size}): {bad[:5].tolist()}."
            )
    if len(prompt) + len(response) > options.max_length:
        raise TeacherLabelsError(
            f"{where}: {len(prompt)} prompt + {len(response)} response "
            f"tokens exceed max_length={options.max_length}; raise it or "
            "generate shorter responses."
        )
    if not np.isfinite(score):
        raise TeacherLabelsError(
            f"The score of a response to {where} is {score}; scores must "
            "be finite. Nothing of this batch was stored."
        )


def response_records(prompts: list, samples: list, first: int, options: SequenceOptions) -> dict:
    """One record per (prompt, sample): tokens, next tokens, response mask, scores, rank.

    Args:
        prompts: Consecutive prompts' token arrays, the first of index `first`.
        samples: Their `Sample`s (`sample_batch`).
        first: The first prompt's index.
        options: The `SequenceOptions`.

    Returns:
        `{field: array with one row per record}`, prompt-major.
    """
    n, length = options.num_samples, options.max_length
    count = len(prompts) * n
    x = np.full((count, length), options.pad_id, "int32")
    mask = np.zeros((count, length), "float32")
    scores = np.array(
        [[sample.score for sample in per_prompt] for per_prompt in samples], "float32"
    )
    top_k = _top_k_fields(samples, count, length) if samples[0][0].top_k is not None else {}
    for i, (prompt, per_prompt) in enumerate(zip(prompts, samples, strict=True)):
        for j, sample in enumerate(per_prompt):
            row, end = i * n + j, len(prompt) + len(sample.response)
            x[row, :end] = np.concatenate([prompt, sample.response])
            mask[row, len(prompt) - 1 : end - 1] = 1.0  # positions that predict the response
            if top_k:
                top_k["topk_values"][row, len(prompt) - 1 : end - 1] = sample.top_k[0]
                top_k["topk_indices"][row, len(prompt) - 1 : end - 1] = sample.top_k[1]
    teacher = np.concatenate([x[:, 1:], np.full((count, 1), options.pad_id, "int32")], axis=1)
    ranks = np.argsort(np.argsort(-scores, axis=1, kind="stable"), axis=1).astype("int32")
    return {
        "x": x,
        "teacher": teacher,
        "response_mask": mask,
        "score": scores.reshape(-1),
        "group_scores": np.repeat(scores, n, axis=0),
        "rank": ranks.reshape(-1),
        "prompt_index": np.repeat(np.arange(first, first + len(prompts), dtype="int64"), n),
        **_with_rest(top_k),
    }


def _top_k_fields(samples: list, count: int, length: int) -> dict:
    k = samples[0][0].top_k[0].shape[-1]
    return {
        "topk_values": np.zeros((count, length, k), "float32"),
        "topk_indices": np.zeros((count, length, k), "int32"),
    }


def _with_rest(top_k: dict) -> dict:
    """The top-k fields plus the log of the probability mass outside them, per position."""
    if not top_k:
        return {}
    rest = 1.0 - np.exp(top_k["topk_values"].astype("float64")).sum(-1)
    return {
        **top_k,
        "rest_logsumexp": np.log(np.maximum(rest, PROBABILITY_FLOOR)).astype("float32"),
    }


def sample_batch(generate, batch: list, raw: list, indices: list, options: SequenceOptions):
    """`num_samples` checked `Sample`s per prompt of a batch, and whether they are scored.

    Args:
        generate: The teacher's `generate` callable.
        batch: The prompts' token arrays.
        raw: The prompts as given (what `generate` and the grader see).
        indices: The prompts' indices, for error messages.
        options: The `SequenceOptions`.

    Raises:
        TeacherLabelsError: Naming the prompt, for any response that fails a check.
    """
    per_prompt = [[] for _ in batch]
    where, name = f"prompts {indices[0]}-{indices[-1]}", teacher_name(generate)
    for _ in range(options.num_samples):
        as_returned, responses, scores, top_k = _responses(
            generate(raw), batch, indices[0], options
        )
        for i, response in enumerate(responses):
            score = 0.0 if scores is None else scores[i]
            if options.score is not None:  # the grader sees what the teacher was given and said
                score = float(options.score(raw[i], as_returned[i]))
            _check_pair(indices[i], batch[i], response, score, options)
            checked = (
                None
                if top_k is None
                else _checked_top_k(indices[i], top_k[i], response, options, name)
            )
            per_prompt[i].append(Sample(response, score, checked))
    if len({sample.top_k is None for samples in per_prompt for sample in samples}) > 1:
        raise TeacherLabelsError(f"Some responses of {where} have top-k outputs and some have not.")
    return per_prompt, scores is not None or options.score is not None


def check_same_top_k(manifest: dict, sample: Sample, start: int) -> None:
    """Records the top-k size of the run's responses; refuses a batch with another."""
    k = None if sample.top_k is None else int(sample.top_k[0].shape[-1])
    if manifest.setdefault("response_top_k", k) != k:
        raise TeacherLabelsError(
            f"The responses to prompts from {start} on have top-k outputs "
            f"of size {k}, earlier ones {manifest['response_top_k']}; "
            "every response of a run must have the same."
        )
