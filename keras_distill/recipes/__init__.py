"""The library's training recipes for classifiers, as plain functions.

`train_from_scratch`, `train_distilled` and `train_function_matching` train a
Keras classifier (integer labels, logits out) and return its test accuracy;
`train_recommended` and `choose_temperature` choose on a held-out part of the
training split; `train_distilbert_style` is the DistilBERT recipe. Sweeps, the
demo and the benchmarks train through them, so their comparisons share one
optimizer, schedule and data handling.
"""

from keras_distill._src.studies.recipes import (
    DistillationSettings,
    TrainingSettings,
    choose_temperature,
    distilbert_objective,
    train_distilbert_style,
    train_distilled,
    train_from_scratch,
    train_function_matching,
    train_recommended,
)

__all__ = [
    "DistillationSettings",
    "TrainingSettings",
    "choose_temperature",
    "distilbert_objective",
    "train_distilbert_style",
    "train_distilled",
    "train_from_scratch",
    "train_function_matching",
    "train_recommended",
]
