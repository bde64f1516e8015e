"""Generating teachers: Keras and keras_hub language models as `generate` callables.

`keras_generator` decodes with any Keras causal language model (greedy or
sampled) and scores each response by the model's own log-probability;
`keras_hub_generator` wraps a `keras_hub` causal LM's `generate`. Either is
the `generate` that `label_with_teacher(generate, prompts, path,
output="sequences")` runs (see `keras_distill._src.labelling.responses`); `exact_match`
measures a student's greedy answers.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from keras_distill._src.teachers.outputs import logsumexp
from keras_distill._src.utils.model_inspection import weights_digest


def keras_generator(
    model,
    max_new_tokens: int,
    *,
    end_id: int | None = None,
    pad_id: int = 0,
    temperature: float = 0.0,
    seed: int | None = None,
    top_k: int | None = None,
) -> Callable:
    """A `generate` callable from a Keras language model: prompts to (responses, log-probs).

    The model maps `(batch, length)` tokens to next-token logits at every
    position (causal). Decoding is greedy with `temperature=0`, else sampled
    from `softmax(logits / temperature)`. The score of a response is the
    model's own log-probability of it (at T = 1), a teacher's confidence.

    Args:
        model: The language model (its input length is the longest sequence).
        max_new_tokens: Response tokens at most.
        end_id: A token that ends a response (kept in it), or None.
        pad_id: The padding token after each prompt (a prompt's trailing
            pads are stripped before decoding).
        temperature: 0 for greedy decoding, > 0 to sample.
        seed: Seed of the sampling.
        top_k: Also return the model's `top_k` most probable next tokens and
            their log-probabilities at every response position (stored for
            the student to match, as DistillKit's offline top-k).

    Returns:
        `generate(prompts) -> (responses, scores)`, or a dict with
        `"responses"`, `"scores"` and `"top_k"` when `top_k` is set; its `teacher_id` names the
        model's weights and the decoding, so `label_with_teacher` refuses to
        resume with another teacher. It raises `ValueError` for an empty
        prompt, a prompt longer than the model's input, or tokens that are
        not integers, naming the prompt.

    Example:
    >>> from keras_distill.architectures import causal_lm
    >>> generate = keras_generator(causal_lm(14, 8, blocks=1, width=16), 3)
    >>> responses, scores = generate([[1, 2], [3]])
    >>> [len(r) for r in responses], scores.shape
    ([3, 3], (2,))
    """
    length = int(model.inputs[0].shape[1])
    rng = np.random.default_rng(seed)

    def generate(prompts):
        tokens, ends = _prompt_batch(prompts, length, pad_id)
        decoded = _Decoding(len(ends))
        for _ in range(max_new_tokens):
            active = np.nonzero(~decoded.done & (ends < length))[0]
            if not len(active):
                break
            # the whole batch every step: one input shape, no retracing (finished rows are ignored)
            logits = np.asarray(model.predict_on_batch(tokens), "float64")
            logits = logits[active, ends[active] - 1]
            log_probs = _log_softmax(logits)
            choice = _choose(logits, log_probs, temperature, rng)
            for k, i in enumerate(active):
                tokens[i, ends[i]] = int(choice[k])
                decoded.add(i, int(choice[k]), log_probs[k], top_k, end_id)
                ends[i] += 1
        return decoded.result(top_k)

    # what label_with_teacher records of the teacher: its weights and how it decodes
    generate.teacher_id = (
        f"keras_generator:{model.name}:{weights_digest(model)}:"
        f"{max_new_tokens}:{end_id}:{temperature}:{seed}:{top_k}"
    )
    return generate


def _prompt_batch(prompts, length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """The prompts (trailing pads stripped) padded to the model's input, their lengths; checked."""
    rows = [_without_trailing_pads(np.asarray(p).reshape(-1), pad_id) for p in prompts]
    tokens = np.full((len(rows), length), pad_id, "int32")
    for i, row in enumerate(rows):
        if len(row) and not np.issubdtype(row.dtype, np.integer):
            raise ValueError(
                f"Prompt {i} must hold integer token ids; it has dtype {row.dtype} "
                f"({row[:5].tolist()})."
            )
        if len(row) == 0:
            raise ValueError(
                f"Prompt {i} is empty (no token other than pad_id={pad_id}): the first token "
                "would be predicted from no token. Give every prompt at least one token."
            )
        if len(row) > length:
            raise ValueError(
                f"Prompt {i} has {len(row)} tokens, more than the model's input length "
                f"{length}; shorten it (or use a model with a longer input)."
            )
        tokens[i, : len(row)] = row
    return tokens, np.array([len(r) for r in rows])


def _without_trailing_pads(row: np.ndarray, pad_id: int) -> np.ndarray:
    nonpad = np.nonzero(row != pad_id)[0]
    return row[: nonpad[-1] + 1 if len(nonpad) else 0]


def _choose(logits, log_probs, temperature: float, rng) -> np.ndarray:
    """The next token of each active row: greedy at temperature 0, else sampled."""
    if temperature > 0:
        return np.array(
            [rng.choice(len(p), p=np.exp(_log_softmax(p / temperature))) for p in logits]
        )
    return log_probs.argmax(-1)


class _Decoding:
    """The responses, scores and per-token top-k being decoded, one row per prompt."""

    def __init__(self, count: int):
        self.done, self.scores = np.zeros(count, bool), np.zeros(count)
        self.responses = [[] for _ in range(count)]
        self.distributions = [[] for _ in range(count)]

    def add(self, i: int, token: int, log_probs, top_k, end_id) -> None:
        self.scores[i] += log_probs[token]
        self.responses[i].append(token)
        if top_k:
            best = np.argsort(-log_probs, kind="stable")[:top_k]
            self.distributions[i].append((log_probs[best], best))
        self.done[i] = token == end_id

    def result(self, top_k):
        responses = [np.array(r, "int32") for r in self.responses]
        if not top_k:
            return responses, self.scores
        return {
            "responses": responses,
            "scores": self.scores,
            "top_k": [
                (np.stack([v for v, _ in d]), np.stack([i for _, i in d]))
                for d in self.distributions
            ],
        }


def exact_match(model, prompts, answers, *, end_id: int | None, pad_id: int = 0) -> float:
    """The fraction of prompts whose greedy response equals the answer exactly.

    Args:
        model: A Keras causal language model (see `keras_generator`).
        prompts: Prompt token lists.
        answers: The expected responses (token lists, ending in `end_id`).
        end_id: The token that ends a response.
        pad_id: The padding token.

    Returns:
        Exact-match accuracy in [0, 1].

    Example:
    >>> from keras_distill.architectures import causal_lm
    >>> lm = causal_lm(14, 8, blocks=1, width=16)
    >>> greedy, _ = keras_generator(lm, 2)([[1, 2]])  # the model's own greedy answer
    >>> exact_match(lm, [[1, 2], [1, 2]], [greedy[0].tolist(), [13, 13]], end_id=None)
    0.5
    """
    longest = max(len(a) for a in answers)
    responses, _ = keras_generator(model, longest, end_id=end_id, pad_id=pad_id)(prompts)
    return float(
        np.mean([np.array_equal(r, np.asarray(a)) for r, a in zip(responses, answers, strict=True)])
    )


def _log_softmax(values):
    return values - logsumexp(values, keepdims=True)


def keras_hub_generator(causal_lm, max_length: int, stop_token_ids=None) -> Callable:
    """A `generate` callable from a `keras_hub` causal LM (`causal_lm.generate`), on token ids.

    Args:
        causal_lm: A `keras_hub.models.CausalLM` (e.g. `GPT2CausalLM`), with or
            without a preprocessor; prompts are token ids.
        max_length: `generate`'s `max_length` (prompt and response).
        stop_token_ids: Token ids that end a response (`generate`'s argument;
            None generates up to `max_length`).

    Returns:
        `generate(prompts) -> responses` (the tokens after each prompt, up to
        the model's end).

    Example:
    >>> from keras_distill.generation import small_gpt2_lm
    >>> lm = small_gpt2_lm(vocabulary_size=10, length=8, blocks=1, width=8, heads=2)
    >>> generate = keras_hub_generator(lm, max_length=5)
    >>> [len(response) for response in generate([[1, 2], [3]])]  # up to 5 tokens in all
    [3, 4]
    """

    def generate(prompts):
        rows = [np.asarray(p, "int32").reshape(-1) for p in prompts]
        token_ids = np.zeros((len(rows), max_length), "int32")
        padding_mask = np.zeros((len(rows), max_length), bool)
        for i, row in enumerate(rows):
            token_ids[i, : len(row)], padding_mask[i, : len(row)] = row, True
        output = causal_lm.generate(
            {"token_ids": token_ids, "padding_mask": padding_mask},
            max_length=max_length,
            stop_token_ids=stop_token_ids,
        )
        ids, mask = np.asarray(output["token_ids"]), np.asarray(output["padding_mask"])
        return [ids[i, len(row) :][mask[i, len(row) :]] for i, row in enumerate(rows)]

    return generate
