"""Small transformers: an encoder for 1-D signals and a decoder-only language model.

DistilBERT halves BERT's stack of encoder blocks; `transformer_classifier`
builds such a stack for offline sequence data (MNIST-1D's 40-step signals cut
into patches, one token per patch), so that halving it, initialising the
half from the teacher and exporting it can be shown and measured here. Each
block is one `TransformerBlock` layer, the unit `init_from_teacher` copies.
`causal_lm` is the same block, causal, over token embeddings: the teacher and
student of the generated-responses benchmark and tutorial. It is a
`CausalTransformerLM`, a Functional model that also offers keras-hub's
`call_with_cache`, so that `kd.generation.TokenDecoder` decodes it
with a key/value cache (one position per new token, not the whole sequence).
"""

from __future__ import annotations

import keras
from keras import ops

from keras_distill._src.studies.transformer_layers import (
    IntegerLayerNorm,
    PositionEmbedding,
    TransformerBlock,
)


def transformer_classifier(
    blocks: int,
    width: int = 32,
    heads: int = 4,
    patch: int = 4,
    length: int = 40,
    classes: int = 10,
    seed: int = 0,
    name: str = "transformer",
) -> keras.Model:
    """A transformer encoder classifier for 1-D signals: patches, `blocks` blocks, mean-pooled.

    The blocks are named `block_0`, `block_1`, ... so that feature terms can
    name them (`FeatureDistillation("block_3", "block_1", loss="cosine")`).

    Args:
        blocks: Number of `TransformerBlock`s.
        width: Model width.
        heads: Attention heads per block.
        patch: Signal steps per token (`length` must be a multiple).
        length: Signal length (40 for MNIST-1D).
        classes: Output classes.
        seed: Seed of the weight initialisation.
        name: Model name.

    Returns:
        An uncompiled Functional model from `(batch, length)` signals to logits.

    Raises:
        ValueError: When `length` is not a multiple of `patch` or `blocks` < 1.

    Example:
    >>> transformer_classifier(blocks=2).count_params()
    17962
    """
    if blocks < 1 or patch < 1 or length % patch:
        raise ValueError(
            f"Need blocks >= 1 and `length` a multiple of `patch`; received "
            f"blocks={blocks!r}, length={length!r}, patch={patch!r}."
        )
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((length,), name="signal")
    x = keras.layers.Reshape((length // patch, patch), name="patches")(inputs)
    x = PositionEmbedding(name="positions")(keras.layers.Dense(width, name="embedding")(x))
    for i in range(blocks):
        x = TransformerBlock(heads, width, name=f"block_{i}")(x)
    x = IntegerLayerNorm(name="final_norm")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(classes, name="logits")(x), name=name)


@keras.saving.register_keras_serializable(package="keras_distill")
class CausalTransformerLM(keras.Model):
    """A small decoder-only language model that also decodes through a key/value cache.

    A Functional model (built in `__init__`, as keras-hub backbones are) from
    `(batch, max_sequence_length)` int tokens to next-token logits at every
    position: token `Embedding` ("embedding"), `PositionEmbedding`
    ("positions"), causal `TransformerBlock`s ("block_0", ...), an
    `IntegerLayerNorm` ("final_norm") and a `Dense` ("logits"). Its
    `call_with_cache` is keras-hub's `CausalLM.call_with_cache`, and it
    describes its cache with keras-hub's backbone attributes (`num_layers`,
    `num_heads`, `hidden_dim`), so `kd.generation.TokenDecoder` decodes it
    one position per new token. Build it with `causal_lm`.

    Args:
        vocabulary_size: Token ids are in `[0, vocabulary_size)`.
        max_sequence_length: The longest sequence (prompt and response) it reads.
        num_layers: Number of causal `TransformerBlock`s.
        hidden_dim: Model width.
        num_heads: Attention heads per block.
        **kwargs: `keras.Model` arguments (`name`, ...).

    Raises:
        ValueError: When the vocabulary has fewer than 2 tokens, the length or the
            number of blocks is below 1, or `hidden_dim` is not a multiple of `num_heads`.

    Example:
    >>> lm = CausalTransformerLM(vocabulary_size=9, max_sequence_length=6, hidden_dim=8)
    >>> tokens = ops.convert_to_tensor([[1, 2, 3, 4, 5, 6]], "int32")
    >>> cache = ops.zeros((1, 2, 2, 6, 4, 2))  # (batch, layers, 2, length, heads, head_dim)
    >>> logits, hidden, cache = lm.call_with_cache(tokens, cache, 0)
    >>> float(ops.max(ops.abs(logits - lm(tokens)))) < 1e-5, tuple(hidden.shape)
    (True, (1, 6, 8))
    """

    def __init__(
        self,
        vocabulary_size: int,
        max_sequence_length: int,
        num_layers: int = 2,
        hidden_dim: int = 64,
        num_heads: int = 4,
        **kwargs,
    ):
        if vocabulary_size < 2 or max_sequence_length < 1 or num_layers < 1:
            raise ValueError(
                "Need vocabulary_size >= 2, max_sequence_length >= 1 and num_layers >= 1; "
                f"received vocabulary_size={vocabulary_size!r}, "
                f"max_sequence_length={max_sequence_length!r}, num_layers={num_layers!r}."
            )
        inputs = keras.Input((max_sequence_length,), dtype="int32", name="tokens")
        x = PositionEmbedding(name="positions")(
            keras.layers.Embedding(vocabulary_size, hidden_dim, name="embedding")(inputs)
        )
        for i in range(num_layers):
            x = TransformerBlock(num_heads, hidden_dim, causal=True, name=f"block_{i}")(x)
        x = IntegerLayerNorm(name="final_norm")(x)
        logits = keras.layers.Dense(vocabulary_size, name="logits")(x)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.vocabulary_size, self.max_sequence_length = vocabulary_size, max_sequence_length
        self.num_layers, self.hidden_dim, self.num_heads = num_layers, hidden_dim, num_heads

    def call_with_cache(self, token_ids, cache, cache_update_index):
        """Logits of `steps` new positions, reading and updating the key/value cache.

        Args:
            token_ids: `(batch, steps)` int tokens at the positions from `cache_update_index` on.
            cache: `(batch, num_layers, 2, length, num_heads, hidden_dim // num_heads)`
                keys and values of each block (keras-hub's layout).
            cache_update_index: The position of `token_ids[:, 0]`.

        Returns:
            `(logits, hidden_states, cache)`: `(batch, steps, vocabulary_size)` logits, the
            `(batch, steps, hidden_dim)` normalised last hidden states, the updated cache.
        """
        x = self.get_layer("embedding")(token_ids)
        x = self.get_layer("positions")(x, start_index=cache_update_index)
        caches = []
        for i in range(self.num_layers):
            block = self.get_layer(f"block_{i}")
            x, block_cache = block.call_with_cache(x, cache[:, i], cache_update_index)
            caches.append(block_cache)
        hidden_states = self.get_layer("final_norm")(x)
        logits = self.get_layer("logits")(hidden_states)
        return logits, hidden_states, ops.stack(caches, axis=1)

    def get_config(self) -> dict:
        """The constructor arguments."""
        return {
            "name": self.name,
            "trainable": self.trainable,
            "vocabulary_size": self.vocabulary_size,
            "max_sequence_length": self.max_sequence_length,
            "num_layers": self.num_layers,
            "hidden_dim": self.hidden_dim,
            "num_heads": self.num_heads,
        }


def causal_lm(
    vocabulary_size: int,
    length: int,
    blocks: int = 2,
    width: int = 64,
    heads: int = 4,
    seed: int = 0,
    name: str = "causal_lm",
) -> CausalTransformerLM:
    """A small decoder-only language model: token ids to next-token logits at every position.

    `kd.generation.TokenDecoder` decodes it with a key/value cache (its
    `call_with_cache`); the layers, weights and parameter count are those of
    the plain Functional model earlier versions returned, whose saved files
    still load (as Functional models, decoded without a cache).

    Args:
        vocabulary_size: Token ids are in `[0, vocabulary_size)`.
        length: The longest sequence (prompt and response) it reads.
        blocks: Number of causal `TransformerBlock`s.
        width: Model width.
        heads: Attention heads per block.
        seed: Seed of the weight initialisation.
        name: Model name.

    Returns:
        An uncompiled `CausalTransformerLM` from `(batch, length)` int tokens to
        `(batch, length, vocabulary_size)` logits; position `t` predicts token `t + 1`.

    Example:
    >>> lm = causal_lm(vocabulary_size=14, length=12, blocks=1, width=16)
    >>> tuple(lm.output.shape), lm.count_params()
    ((None, 12, 14), 2910)
    """
    keras.utils.set_random_seed(seed)
    return CausalTransformerLM(vocabulary_size, length, blocks, width, heads, name=name)
