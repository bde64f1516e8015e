"""Decoding causal LMs with keras-hub's samplers, with a key/value cache when the model has one.

`TokenDecoder` runs a `keras_hub.samplers` sampler (greedy, or random at a
temperature) in one compiled loop over a batch of prompts. A model with a
key/value cache (`has_key_value_cache`: keras-hub's `call_with_cache`, as a
keras-hub `CausalLM` such as `GPT2CausalLM` and `studies.architectures.causal_lm`
offer) decodes through it: the prompt fills the cache once, then each new
token costs one position's forward pass, so a response costs time linear in
its length. Any other Keras causal LM (functional or subclassed, token ids to
next-token logits at every position) decodes without a cache: every new token
reruns the whole sequence. Both give the same greedy tokens (tested).

`small_gpt2_lm` builds a small random-weight `GPT2CausalLM` from keras-hub's
`GPT2Backbone` (its `TransformerDecoder` layers carry the cache).
"""

from __future__ import annotations

import dataclasses
import sys

import keras
import numpy as np
import tensorflow as tf
from keras import ops


def _keras_hub():
    try:
        import keras_hub
    except ImportError as error:  # pragma: no cover - keras-hub is a test dependency
        raise ImportError(
            "Cached decoding reuses keras-hub's samplers and decoder layers; install it with "
            "`pip install keras-hub`."
        ) from error
    return keras_hub


def is_keras_hub_lm(model) -> bool:
    """Whether `model` is a keras-hub `CausalLM` (decodes with a key/value cache)."""
    hub = sys.modules.get("keras_hub")  # a keras-hub model means keras-hub is imported
    return hub is not None and isinstance(model, hub.models.CausalLM)


def cache_layout(model) -> tuple[int, int, int] | None:
    """`(layers, heads, head_dim)` of a model's key/value cache, or None when it has none.

    The model offers keras-hub's `call_with_cache(token_ids, cache,
    cache_update_index)`, returning `(logits, hidden_states, cache)`, and
    describes its cache `(batch, layers, 2, length, heads, head_dim)` with
    keras-hub's backbone attributes (`num_layers`, `num_heads` or
    `num_key_value_heads`, `hidden_dim` or `head_dim`), on its `backbone` (a
    keras-hub `CausalLM`) or on itself.

    Example:
    >>> cache_layout(small_gpt2_lm(vocabulary_size=10, length=6, blocks=1, width=8, heads=2))
    (1, 2, 4)
    """
    described = getattr(model, "backbone", model)
    layers = getattr(described, "num_layers", None)
    heads = getattr(described, "num_key_value_heads", None) or getattr(described, "num_heads", None)
    head_dim = getattr(described, "head_dim", None)
    if head_dim is None and heads and getattr(described, "hidden_dim", None):
        head_dim = described.hidden_dim // getattr(described, "num_heads", heads)
    if not callable(getattr(model, "call_with_cache", None)) or not (layers and heads and head_dim):
        return None
    return int(layers), int(heads), int(head_dim)


def has_key_value_cache(model) -> bool:
    """Whether `TokenDecoder` can decode `model` through a key/value cache (see `cache_layout`).

    Example:
    >>> has_key_value_cache(small_gpt2_lm(vocabulary_size=10, length=6, blocks=1, width=8, heads=2))
    True
    """
    return cache_layout(model) is not None


def lm_logits(model, tokens, training: bool = False, pad_id: int = 0):
    """Next-token logits `(batch, length, vocabulary)` of a causal LM for `(batch, length)` tokens.

    A model with a fixed input length longer than `length` reads the tokens
    padded with `pad_id` (causal: the padding changes no logit returned).

    Example:
    >>> lm = small_gpt2_lm(vocabulary_size=10, length=6, blocks=1, width=8, heads=2)
    >>> tuple(lm_logits(lm, np.ones((2, 6), "int32")).shape)
    (2, 6, 10)
    """
    tokens = ops.convert_to_tensor(tokens, "int32")
    if is_keras_hub_lm(model):
        inputs = {"token_ids": tokens, "padding_mask": ops.ones_like(tokens, dtype="bool")}
        return model(inputs, training=training)
    length, fixed = ops.shape(tokens)[1], context_length(model)
    if fixed is None:
        return model(tokens, training=training)
    padded = ops.pad(tokens, [[0, 0], [0, fixed - length]], constant_values=pad_id)
    return model(padded, training=training)[:, :length]


def context_length(model) -> int | None:
    """The longest sequence the model reads (None when its input length is free).

    Example:
    >>> context_length(small_gpt2_lm(vocabulary_size=10, length=6, blocks=1, width=8, heads=2))
    6
    """
    if is_keras_hub_lm(model):
        return int(model.backbone.max_sequence_length)
    inputs = getattr(model, "inputs", None)
    if inputs:
        length = inputs[0].shape[1]
        return None if length is None else int(length)
    return None


def vocabulary_size(model) -> int:
    """The size of the model's next-token distribution.

    Example:
    >>> vocabulary_size(small_gpt2_lm(vocabulary_size=10, length=6, blocks=1, width=8, heads=2))
    10
    """
    if is_keras_hub_lm(model):
        return int(model.backbone.vocabulary_size)
    outputs = getattr(model, "outputs", None)
    if outputs:
        return int(outputs[0].shape[-1])
    return int(lm_logits(model, np.ones((1, context_length(model) or 1), "int32")).shape[-1])


def small_gpt2_lm(
    vocabulary_size: int,
    length: int,
    blocks: int = 2,
    width: int = 64,
    heads: int = 4,
    seed: int = 0,
    name: str = "gpt2_lm",
):
    """A small random-weight keras-hub `GPT2CausalLM` on token ids (no preprocessor, no download).

    Args:
        vocabulary_size: Token ids are in `[0, vocabulary_size)`.
        length: The longest sequence (prompt and response) it reads.
        blocks: Transformer decoder layers.
        width: Hidden width (a multiple of `heads`); the feed-forward is `2 * width`.
        heads: Attention heads.
        seed: Seed of the weight initialisation.
        name: Model name.

    Returns:
        A `keras_hub.models.GPT2CausalLM` without dropout.

    Example:
    >>> lm = small_gpt2_lm(vocabulary_size=10, length=6, blocks=1, width=8, heads=2)
    >>> type(lm).__name__, lm.count_params()
    ('GPT2CausalLM', 744)
    >>> TokenDecoder(lm, max_new_tokens=2)([[1, 2]]).tokens.shape  # decodes with its cache
    (1, 4)
    """
    hub = _keras_hub()
    keras.utils.set_random_seed(seed)
    backbone = hub.models.GPT2Backbone(
        vocabulary_size=vocabulary_size,
        num_layers=blocks,
        num_heads=heads,
        hidden_dim=width,
        intermediate_dim=2 * width,
        dropout=0.0,
        max_sequence_length=length,
    )
    return hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None, name=name)


@dataclasses.dataclass(frozen=True)
class Decoded:
    """A decoded batch: each row its prompt then its response, in one array.

    Attributes:
        tokens: `(batch, width)` int32 token ids (positions after a response hold junk or pads).
        prompt_lengths: `(batch,)` tokens of each prompt.
        response_mask: `(batch, width)` float32, 1 at each response token (up to and
            including the first `end_id`, at most `max_new_tokens`).

    Example:
    >>> tokens = np.array([[5, 6, 7, 0]], "int32")
    >>> Decoded(tokens, np.array([2]), response_mask(tokens, [2], 2, None)).responses()
    [array([7, 0], dtype=int32)]
    """

    tokens: np.ndarray
    prompt_lengths: np.ndarray
    response_mask: np.ndarray

    def responses(self) -> list[np.ndarray]:
        """Each row's response tokens."""
        return [row[mask > 0] for row, mask in zip(self.tokens, self.response_mask, strict=True)]


def prompt_array(prompts, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded `(batch, width)` prompts and their lengths, from an array or token lists.

    A 2-D array keeps its width; token lists are padded to the longest.

    Raises:
        ValueError: For an empty prompt or non-integer tokens, naming the prompt.

    Example:
    >>> tokens, lengths = prompt_array([[5, 6, 7], [8]])
    >>> tokens.tolist(), lengths.tolist()
    ([[5, 6, 7], [8, 0, 0]], [3, 1])
    """
    rows = [np.asarray(p).reshape(-1) for p in prompts]
    lengths = []
    for i, row in enumerate(rows):
        if len(row) and not np.issubdtype(row.dtype, np.integer):
            raise ValueError(f"Prompt {i} must hold integer token ids; it has dtype {row.dtype}.")
        nonpad = np.nonzero(row != pad_id)[0]
        if not len(nonpad):
            raise ValueError(
                f"Prompt {i} is empty (no token other than pad_id={pad_id}); give every "
                "prompt at least one token."
            )
        lengths.append(int(nonpad[-1]) + 1)
    # an array keeps its width (one shape per batch: no retracing); token lists their longest
    tokens = np.full((len(rows), max(len(row) for row in rows)), pad_id, "int32")
    for i, row in enumerate(rows):
        tokens[i, : lengths[i]] = row[: lengths[i]]
    return tokens, np.array(lengths, "int32")


def response_mask(tokens, prompt_lengths, max_new_tokens: int, end_id: int | None) -> np.ndarray:
    """1 at each response token: after the prompt, `max_new_tokens` at most, to the first `end_id`.

    Example:
    >>> response_mask(np.array([[1, 2, 9, 3]]), np.array([1]), 3, end_id=9).tolist()
    [[0.0, 1.0, 1.0, 0.0]]
    """
    positions = np.arange(tokens.shape[1])[None, :]
    starts = np.asarray(prompt_lengths)[:, None]
    mask = (positions >= starts) & (positions < starts + max_new_tokens)
    if end_id is not None:
        ended = np.cumsum(mask & (tokens == end_id), axis=1)
        mask &= (ended - (mask & (tokens == end_id))) == 0  # keep the end token itself
    return mask.astype("float32")


class TokenDecoder:
    """Greedy or sampled decoding of a causal LM over batches of prompts; compiled, cached.

    Args:
        model: A Keras causal LM from `(batch, length)` tokens to next-token
            logits, or a keras-hub `CausalLM`; decoded with its key/value
            cache when it has one (`has_key_value_cache`: a keras-hub
            `CausalLM`, `studies.architectures.causal_lm`).
        max_new_tokens: Response tokens at most.
        temperature: 0 for greedy decoding (keras-hub's `GreedySampler`), else
            sampling from `softmax(logits / temperature)` (its `RandomSampler`);
            a `keras.Variable` is read at every call (a schedule may change it).
        end_id: A token that ends a response (kept in it), or None.
        pad_id: The padding token after each prompt.
        seed: Seed of the sampling.
        use_cache: "auto" (the cache when the model has one), True, or False
            (rerun the whole sequence for every token, e.g. to compare).

    Example:
    >>> lm = small_gpt2_lm(vocabulary_size=10, length=8, blocks=1, width=8, heads=2)
    >>> decoded = TokenDecoder(lm, max_new_tokens=3)([[1, 2], [3]])
    >>> decoded.tokens.shape, [len(r) for r in decoded.responses()]
    ((2, 5), [3, 3])
    """

    def __init__(
        self,
        model,
        max_new_tokens: int,
        temperature=0.0,
        end_id: int | None = None,
        pad_id: int = 0,
        seed: int | None = None,
        use_cache: str | bool = "auto",
    ):
        if int(max_new_tokens) < 1:
            raise ValueError(f"`max_new_tokens` must be >= 1; received {max_new_tokens!r}.")
        if use_cache not in ("auto", True, False):
            raise ValueError(f'`use_cache` must be "auto", True or False; received {use_cache!r}.')
        self.cached = has_key_value_cache(model) if use_cache == "auto" else bool(use_cache)
        if self.cached and not has_key_value_cache(model):
            raise ValueError(
                f"use_cache=True needs a model with a key/value cache (keras-hub's "
                f"`call_with_cache`, e.g. a keras-hub CausalLM or `architectures.causal_lm`); "
                f"{type(model).__name__} {model.name!r} has none. Use use_cache='auto'."
            )
        self.model, self.max_new_tokens = model, int(max_new_tokens)
        self.end_id, self.pad_id = end_id, pad_id
        self.context = context_length(model)
        samplers = _keras_hub().samplers
        greedy = not isinstance(temperature, keras.Variable) and float(temperature) == 0.0
        self.sampler = (
            samplers.GreedySampler()
            if greedy
            else samplers.RandomSampler(seed=seed, temperature=temperature)
        )
        self._decode = tf.function(  # one trace for every batch size, prompt width and start
            self._decode_batch,
            input_signature=[
                tf.TensorSpec((None, None), "int32"),
                tf.TensorSpec((None, None), "bool"),
                tf.TensorSpec((), "int32"),
            ],
        )

    def __call__(self, prompts) -> Decoded:
        """Decodes the prompts (an int array right-padded with `pad_id`, or token lists)."""
        tokens, lengths = prompt_array(prompts, self.pad_id)
        width = tokens.shape[1] + self.max_new_tokens
        if self.context is not None and width > self.context:
            raise ValueError(
                f"Prompts of {tokens.shape[1]} tokens plus max_new_tokens={self.max_new_tokens} "
                f"make {width} tokens, more than the model's context of {self.context}; "
                "shorten the prompts or max_new_tokens."
            )
        padded = np.pad(tokens, ((0, 0), (0, self.max_new_tokens)), constant_values=self.pad_id)
        is_prompt = np.arange(width)[None, :] < lengths[:, None]
        decoded = self._decode(
            tf.constant(padded, "int32"),
            tf.constant(is_prompt),
            tf.constant(lengths.min(), "int32"),
        )
        decoded = np.asarray(decoded).astype("int32")
        mask = response_mask(decoded, lengths, self.max_new_tokens, self.end_id)
        return Decoded(decoded, lengths, mask)

    @property
    def tracing_count(self) -> int:
        """How many times the decoding loop was traced (1 after any number of calls).

        Example:
        >>> lm = small_gpt2_lm(vocabulary_size=10, length=8, blocks=1, width=8, heads=2)
        >>> decoder = TokenDecoder(lm, max_new_tokens=2)
        >>> _ = decoder([[1, 2], [3]]), decoder([[4, 5, 6]])
        >>> decoder.tracing_count
        1
        """
        return self._decode.experimental_get_tracing_count()

    def _decode_batch(self, tokens, is_prompt, start):
        stop = None if self.end_id is None else (self.end_id,)
        if self.cached:
            return self.sampler(
                next=self._next_cached,
                prompt=tokens,
                cache=self._seeded_cache(tokens),
                index=start,
                mask=is_prompt,
                stop_token_ids=stop,
            )
        return self.sampler(
            next=self._next_uncached,
            prompt=tokens,
            index=start,
            mask=is_prompt,
            stop_token_ids=stop,
        )

    def _seeded_cache(self, tokens):
        """A key/value cache in keras-hub's layout, filled with the (padded) prompt."""
        layers, heads, head_dim = cache_layout(self.model)
        batch, width = ops.shape(tokens)[0], ops.shape(tokens)[1]
        shape = [batch, layers, 2, width, heads, head_dim]
        cache = ops.zeros(shape, dtype=self.model.compute_dtype)
        _, _, cache = self.model.call_with_cache(tokens, cache, 0)
        return cache

    def _next_cached(self, prompt, cache, index):
        """The logits after position `index - 1`, one position through the cache."""
        token = ops.slice(prompt, [0, index - 1], [ops.shape(prompt)[0], 1])
        logits, hidden, cache = self.model.call_with_cache(token, cache, index - 1)
        return ops.squeeze(logits, axis=1), ops.squeeze(hidden, axis=1), cache

    def _next_uncached(self, prompt, cache, index):
        """The logits after position `index - 1`, rerunning the whole sequence."""
        logits = lm_logits(self.model, prompt, pad_id=self.pad_id)
        return ops.take(logits, index - 1, axis=1), None, cache
