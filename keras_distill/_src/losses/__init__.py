"""Distillation losses between teacher and student logits.

Every loss comes as a function `fn(teacher_logits, student_logits,
temperature)` (in `divergences`) and as a serializable `keras.losses.Loss`
class (in `losses`); `get`, `serialize` and `deserialize` resolve either from a
name, as `keras.losses` does.
"""

from keras_distill._src.losses.divergences import (
    decoupled_kd,
    dist,
    jensen_shannon_divergence,
    kl_divergence,
    logit_mse,
    needs_full_logits,
    reverse_kl_divergence,
    standardized_kl_divergence,
    top_k_logits,
    uses_labels,
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
from keras_distill._src.losses.token_divergences import (
    generalized_jsd,
    masked_sequence_mean,
    token_divergence,
    top_k_buckets,
)

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
    "masked_sequence_mean",
    "token_divergence",
    "top_k_buckets",
    "get",
    "jensen_shannon_divergence",
    "kl_divergence",
    "logit_mse",
    "needs_full_logits",
    "reverse_kl_divergence",
    "serialize",
    "standardized_kl_divergence",
    "top_k_logits",
    "uses_labels",
]
