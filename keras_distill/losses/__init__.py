"""Distillation losses between teacher and student logits.

Every loss comes as a function `fn(teacher_logits, student_logits,
temperature)` and as a serializable `keras.losses.Loss` class; `get`,
`serialize` and `deserialize` resolve either from a name, as `keras.losses`
does. The token-level functions compare language models position by position.
"""

from keras_distill._src.losses.divergences import (
    decoupled_kd,
    dist,
    jensen_shannon_divergence,
    kl_divergence,
    logit_mse,
    reverse_kl_divergence,
    standardized_kl_divergence,
)
from keras_distill._src.losses.losses import (
    DIST,
    DecoupledKD,
    DistillationLoss,
    JensenShannonDivergence,
    KLDivergence,
    LogitMSE,
    ReverseKLDivergence,
    StandardizedKLDivergence,
    deserialize,
    get,
    serialize,
)
from keras_distill._src.losses.token_divergences import generalized_jsd, token_divergence

__all__ = [
    "DIST",
    "DecoupledKD",
    "DistillationLoss",
    "JensenShannonDivergence",
    "KLDivergence",
    "LogitMSE",
    "ReverseKLDivergence",
    "StandardizedKLDivergence",
    "decoupled_kd",
    "deserialize",
    "dist",
    "generalized_jsd",
    "get",
    "jensen_shannon_divergence",
    "kl_divergence",
    "logit_mse",
    "reverse_kl_divergence",
    "serialize",
    "standardized_kl_divergence",
    "token_divergence",
]
