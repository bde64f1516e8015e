"""Model builders used by the studies and tutorials: transformers and a causal language model."""

from keras_distill._src.studies.architectures import (
    CausalTransformerLM,
    causal_lm,
    transformer_classifier,
)
from keras_distill._src.studies.transformer_layers import PositionEmbedding, TransformerBlock

__all__ = [
    "CausalTransformerLM",
    "PositionEmbedding",
    "TransformerBlock",
    "causal_lm",
    "transformer_classifier",
]
