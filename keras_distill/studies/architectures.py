"""Small transformers: an encoder for 1-D signals and a decoder-only language model.

DistilBERT halves BERT's stack of encoder blocks; `transformer_classifier`
builds such a stack for offline sequence data (MNIST-1D's 40-step signals cut
into patches, one token per patch), so that halving it, initialising the
half from the teacher and exporting it can be shown and measured here. Each
block is one `TransformerBlock` layer, the unit `init_from_teacher` copies.
`causal_lm` is the same block, causal, over token embeddings: the teacher and
student of the generated-responses benchmark and tutorial.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_distill")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding of each position to a `(batch, length, width)` sequence.

    Example:
    >>> tuple(PositionEmbedding()(ops.zeros((2, 5, 3))).shape)
    (2, 5, 3)
    """

    def build(self, input_shape):
        """Creates the `(length, width)` embedding."""
        self.embedding = self.add_weight(
            shape=tuple(input_shape[1:]),
            name="embedding",
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )

    def call(self, inputs):
        """The inputs plus the position embedding."""
        return inputs + ops.cast(self.embedding, inputs.dtype)


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
class TransformerBlock(keras.layers.Layer):
    """A pre-norm transformer encoder block: self-attention, then a feed-forward layer.

    Layer norms are `IntegerLayerNorm` and the feed-forward activation ReLU,
    so that the block exports to an int8 TFLite Micro model.

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
        self.attention = keras.layers.MultiHeadAttention(heads, width // heads)
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


def causal_lm(
    vocabulary_size: int,
    length: int,
    blocks: int = 2,
    width: int = 64,
    heads: int = 4,
    seed: int = 0,
    name: str = "causal_lm",
) -> keras.Model:
    """A small decoder-only language model: token ids to next-token logits at every position.

    Args:
        vocabulary_size: Token ids are in `[0, vocabulary_size)`.
        length: The longest sequence (prompt and response) it reads.
        blocks: Number of causal `TransformerBlock`s.
        width: Model width.
        heads: Attention heads per block.
        seed: Seed of the weight initialisation.
        name: Model name.

    Returns:
        An uncompiled Functional model from `(batch, length)` int tokens to
        `(batch, length, vocabulary_size)` logits; position `t` predicts token `t + 1`.

    Example:
    >>> tuple(causal_lm(vocabulary_size=14, length=12, blocks=1, width=16).output.shape)
    (None, 12, 14)
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((length,), dtype="int32", name="tokens")
    x = PositionEmbedding(name="positions")(
        keras.layers.Embedding(vocabulary_size, width, name="embedding")(inputs)
    )
    for i in range(blocks):
        x = TransformerBlock(heads, width, causal=True, name=f"block_{i}")(x)
    x = IntegerLayerNorm(name="final_norm")(x)
    return keras.Model(inputs, keras.layers.Dense(vocabulary_size, name="logits")(x), name=name)
