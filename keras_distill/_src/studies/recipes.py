"""The library's recommended training recipes for classifiers, as plain functions.

`train_from_scratch`, `train_distilled` and `train_function_matching` train a
Keras classifier (integer labels, logits out) and return its test accuracy
(`training_recipes`); `train_recommended` and
`choose_temperature` choose a recipe or a temperature on a held-out part of
the training split (`recipe_selection`); `train_distilbert_style` is the
DistilBERT recipe (`distilbert`). `sweep`, `teacher_assistant_chain`, the demo
and the quality and defaults benchmarks train through them, so their
comparisons use the same optimizer, schedule and data handling. The data is a
`kd.datasets.Split`.
"""

from __future__ import annotations

import warnings

from keras_distill._src.studies.datasets import Split
from keras_distill._src.studies.distilbert import (
    DISTILBERT_TEMPERATURE,
    DISTILBERT_WEIGHTS,
    distilbert_objective,
    train_distilbert_style,
)
from keras_distill._src.studies.recipe_selection import (
    RECOMMENDED_CANDIDATES,
    choose_temperature,
    train_recommended,
)
from keras_distill._src.studies.training_recipes import (
    FUNCTION_MATCHING_ALPHA,
    FUNCTION_MATCHING_BATCH_SIZE,
    FUNCTION_MATCHING_LEARNING_RATE,
    FUNCTION_MATCHING_SETTINGS,
    FUNCTION_MATCHING_TEMPERATURE,
    RECOMMENDED_ALPHA,
    RECOMMENDED_TEMPERATURE,
    SCHEDULES,
    DistillationSettings,
    TrainingSettings,
    test_accuracy,
    train_distilled,
    train_from_scratch,
    train_function_matching,
)

__all__ = [
    "DISTILBERT_TEMPERATURE",
    "DISTILBERT_WEIGHTS",
    "FUNCTION_MATCHING_ALPHA",
    "FUNCTION_MATCHING_BATCH_SIZE",
    "FUNCTION_MATCHING_LEARNING_RATE",
    "FUNCTION_MATCHING_SETTINGS",
    "FUNCTION_MATCHING_TEMPERATURE",
    "RECOMMENDED_ALPHA",
    "RECOMMENDED_CANDIDATES",
    "RECOMMENDED_TEMPERATURE",
    "SCHEDULES",
    "DistillationSettings",
    "Split",
    "TrainingSettings",
    "choose_temperature",
    "distilbert_objective",
    "test_accuracy",
    "train_distilbert_style",
    "train_distilled",
    "train_from_scratch",
    "train_function_matching",
    "train_recommended",
]


def __getattr__(name: str):
    # `recipes.Data` was a second name for `datasets.Split`; kept for one release.
    if name == "Data":
        warnings.warn(
            "`kd.recipes.Data` is `kd.datasets.Split`; "
            "use `Split` (the name `Data` goes in the next release).",
            DeprecationWarning,
            stacklevel=2,
        )
        return Split
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
