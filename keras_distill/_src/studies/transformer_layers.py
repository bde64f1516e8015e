"""The layers of the small transformers in `studies.architectures`.

`TransformerBlock` is a pre-norm block of `CachedAttention` (Keras'
`MultiHeadAttention`, which can also attend through a key/value cache) and a
ReLU feed-forward layer, with `IntegerLayerNorm`s that export to int8 TFLite
Micro; `PositionEmbedding` adds learned position embeddings.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_distill")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding of each position to a `(batch, length, width)` sequence.

    Call arguments:
        inputs: The sequence; built on its full length.
        start_index: None when `inputs` hold every position; else the
            position of `inputs[:, 0]` (decoding a few positions at a time).

    Example:
    >>> layer = PositionEmbedding()
    >>> full = layer(ops.zeros((2, 5, 3)))
    >>> last = layer(ops.zeros((2, 1, 3)), start_index=4)  # position 4 alone
    >>> tuple(full.shape), tuple(last.shape), bool(ops.all(last[:, 0] == full[:, 4]))
    ((2, 5, 3), (2, 1, 3), True)
    """

    def build(self, input_shape):
        """Creates the `(length, width)` embedding."""
        self.embedding = self.add_weight(
            shape=tuple(input_shape[1:]),
            name="embedding",
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )

    def call(self, inputs, start_index=None):
        """The inputs plus the embedding of their positions."""
        embedding = self.embedding
        if start_index is not None:
            steps, width = ops.shape(inputs)[1], ops.shape(embedding)[1]
            embedding = ops.slice(embedding, [start_index, 0], [steps, width])
        return inputs + ops.cast(embedding, inputs.dtype)


@keras.saving.register_keras_serializable(package="keras_distill")
class IntegerLayerNorm(keras.layers.Layer):
    """Layer normalisation over the last axis, written in ops that TFLite Micro runs in int8.

    `keras.layers.LayerNormalization` converts to a graph with a float `Neg`
    that the int8 converter leaves in float; this computes the same
    `(x - mean) / sqrt(var + epsilon) * gamma + beta` with `MEAN`, `SUB`,
    `MUL`, `RSQRT` and `ADD`, all integer kernels in TFLite Micro.

    Args:
        epsilon: Added to the variance.
        **kwargs: `keras.layers.Layer` arguments.

    Example:
    >>> x = ops.convert_to_tensor([[1.0, 3.0]])
    >>> [round(float(v), 3) for v in IntegerLayerNorm()(x)[0]]
    [-1.0, 1.0]
    """

    def __init__(self, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        """Creates the scale `gamma` and offset `beta`."""
        self.gamma = self.add_weight(shape=(input_shape[-1],), name="gamma", initializer="ones")
        self.beta = self.add_weight(shape=(input_shape[-1],), name="beta", initializer="zeros")

    def call(self, inputs):
        """The normalised inputs, scaled and offset."""
        centred = inputs - ops.mean(inputs, axis=-1, keepdims=True)
        variance = ops.mean(centred * centred, axis=-1, keepdims=True)
        return centred * ops.rsqrt(variance + self.epsilon) * self.gamma + self.beta

    def get_config(self) -> dict:
        """The constructor arguments."""
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="keras_distill")
class CachedAttention(keras.layers.MultiHeadAttention):
    """`keras.layers.MultiHeadAttention` that also runs causal self-attention through a cache.

    Called as a layer it is `MultiHeadAttention` itself (same weights, same
    math); `call_with_cache` projects only the new positions, splices their
    keys and values into a key/value cache and attends causally over it, as
    keras-hub's `CachedMultiHeadAttention` does in its `TransformerDecoder`.

    Args:
        *args: `keras.layers.MultiHeadAttention` arguments (`num_heads`, `key_dim`, ...).
        **kwargs: `keras.layers.MultiHeadAttention` arguments.

    Example:
    >>> layer = CachedAttention(num_heads=2, key_dim=4)
    >>> x = keras.random.normal((1, 3, 8), seed=0)
    >>> full = layer(x, x, use_causal_mask=True)
    >>> cache = ops.zeros((1, 2, 3, 2, 4))  # (batch, keys and values, length, heads, key_dim)
    >>> _, cache = layer.call_with_cache(x[:, :2], cache, 0)  # positions 0 and 1
    >>> last, cache = layer.call_with_cache(x[:, 2:], cache, 2)  # position 2
    >>> float(ops.max(ops.abs(last - full[:, 2:]))) < 1e-5
    True
    """

    def call_with_cache(self, inputs, cache, cache_update_index):
        """Causal self-attention of `steps` new positions, reading and updating the cache.

        Args:
            inputs: `(batch, steps, width)`, the positions from `cache_update_index` on.
            cache: `(batch, 2, length, heads, key_dim)` keys then values of every position.
            cache_update_index: The position of `inputs[:, 0]` (an int or int tensor).

        Returns:
            `(batch, steps, width)` outputs and the cache with the new keys and values.
        """
        start = [0, cache_update_index, 0, 0]
        keys = ops.slice_update(cache[:, 0], start, self.key_dense(inputs))
        values = ops.slice_update(cache[:, 1], start, self.value_dense(inputs))
        positions = cache_update_index + ops.arange(ops.shape(inputs)[1], dtype="int32")
        visible = ops.arange(ops.shape(keys)[1], dtype="int32")[None, :] <= positions[:, None]
        attended, _ = self._compute_attention(
            self.query_dense(inputs), keys, values, attention_mask=visible[None]
        )
        return self.output_dense(attended), ops.stack([keys, values], axis=1)


@keras.saving.register_keras_serializable(package="keras_distill")
class TransformerBlock(keras.layers.Layer):
    """A pre-norm transformer encoder block: self-attention, then a feed-forward layer.

    Layer norms are `IntegerLayerNorm` and the feed-forward activation ReLU,
    so that the block exports to an int8 TFLite Micro model. A causal block
    also decodes through a key/value cache (`call_with_cache`).

    Args:
        heads: Attention heads.
        width: Model width (the last axis of inputs and outputs).
        hidden: Units of the feed-forward layer (default `2 * width`).
        causal: Each position attends only to itself and earlier ones (a
            decoder block, for language models).
        **kwargs: `keras.layers.Layer` arguments (`name`, ...).

    Raises:
        ValueError: When `width` is not a positive multiple of `heads`.

    Example:
    >>> tuple(TransformerBlock(heads=2, width=8)(ops.zeros((1, 5, 8))).shape)
    (1, 5, 8)
    """

    def __init__(
        self, heads: int, width: int, hidden: int | None = None, causal: bool = False, **kwargs
    ):
        super().__init__(**kwargs)
        self.causal = causal
        if heads < 1 or width < 1 or width % heads:
            raise ValueError(
                f"`width` must be a positive multiple of `heads`; received width="
                f"{width!r}, heads={heads!r}."
            )
        self.heads, self.width, self.hidden = heads, width, hidden or 2 * width
        self.attention_norm = IntegerLayerNorm()
        self.attention = CachedAttention(heads, width // heads)
        self.feedforward_norm = IntegerLayerNorm()
        self.feedforward = keras.layers.Dense(self.hidden, activation="relu")
        self.feedforward_output = keras.layers.Dense(width)

    def build(self, input_shape):
        """Builds the sublayers for `(batch, length, width)` inputs."""
        self.attention_norm.build(input_shape)
        self.attention.build(input_shape, input_shape)
        self.feedforward_norm.build(input_shape)
        self.feedforward.build(input_shape)
        self.feedforward_output.build((*input_shape[:-1], self.hidden))

    def call(self, inputs, training=False):
        """Self-attention, then the feed-forward layer, each with a residual connection."""
        normed = self.attention_norm(inputs)
        x = inputs + self.attention(normed, normed, training=training, use_causal_mask=self.causal)
        return self._add_feedforward(x)

    def call_with_cache(self, inputs, cache, cache_update_index):
        """The block on the positions from `cache_update_index` on, through a key/value cache.

        Args:
            inputs: `(batch, steps, width)`, the positions from `cache_update_index` on.
            cache: `(batch, 2, length, heads, width // heads)` keys then values.
            cache_update_index: The position of `inputs[:, 0]`.

        Returns:
            The block's `(batch, steps, width)` outputs and the updated cache.

        Raises:
            ValueError: For a block that is not causal (its positions see later ones).
        """
        if not self.causal:
            raise ValueError(
                f"Block {self.name!r} is not causal (causal=False): each position attends to "
                "later ones, so it cannot decode through a key/value cache."
            )
        attended, cache = self.attention.call_with_cache(
            self.attention_norm(inputs), cache, cache_update_index
        )
        return self._add_feedforward(inputs + attended), cache

    def _add_feedforward(self, x):
        """`x` plus the feed-forward layer of its normalised values (the residual connection)."""
        return x + self.feedforward_output(self.feedforward(self.feedforward_norm(x)))

    def get_config(self) -> dict:
        """The constructor arguments."""
        return {
            **super().get_config(),
            "heads": self.heads,
            "width": self.width,
            "hidden": self.hidden,
            "causal": self.causal,
        }
