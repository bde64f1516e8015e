"""The DistilBERT recipe (Sanh et al. 2019) in keras-distill's terms.

DistilBERT's training script: 5 x the soft-target cross-entropy at T = 2
(T**2-scaled), 2 x the hard (masked-LM) loss, 1 x the cosine loss between the
teacher's and the student's hidden states; the student starts from every
other teacher block.
"""

from __future__ import annotations

import keras

from keras_distill._src.objective.features import FeatureDistillation
from keras_distill._src.studies import training_recipes
from keras_distill._src.studies.datasets import Split
from keras_distill._src.training.initialization import init_from_teacher

DISTILBERT_TEMPERATURE = 2.0
DISTILBERT_WEIGHTS = {"soft": 5.0, "hard": 2.0, "cosine": 1.0}


def distilbert_objective(hidden_pairs) -> dict:
    """`Distiller` arguments for DistilBERT's objective, in keras-distill's terms.

    `alpha * hard + (1 - alpha) * (w_kl * KL + w_cos * cosine)` with the
    paper's 5 : 2 : 1 weights becomes alpha = 2/8 and weights 5/6 and 1/6
    (the cosine weight shared by the hidden-state pairs).

    Args:
        hidden_pairs: `(teacher layer, student layer)` name pairs whose outputs
            the cosine loss aligns (DistilBERT: the last hidden states).

    Returns:
        `temperature`, `alpha`, `distillation_loss` and `distillation_loss_weights`.

    Example:
    >>> objective = distilbert_objective([("encoder_4", "encoder_2")])
    >>> objective["alpha"], objective["distillation_loss_weights"]
    (0.25, [0.8333333333333334, 0.16666666666666666])
    """
    soft, hard, cosine = (DISTILBERT_WEIGHTS[k] for k in ("soft", "hard", "cosine"))
    pairs = list(hidden_pairs)
    features = [FeatureDistillation(t, s, loss="cosine") for t, s in pairs]
    return {
        "temperature": DISTILBERT_TEMPERATURE,
        "alpha": hard / (soft + hard + cosine),
        "distillation_loss": ["kl_divergence", *features],
        "distillation_loss_weights": [soft / (soft + cosine)]
        + [cosine / (soft + cosine) / len(pairs)] * len(pairs),
    }


def train_distilbert_style(
    teacher: keras.Model,
    student: keras.Model,
    data: Split,
    *,
    hidden_pairs,
    init: bool = True,
    **settings,
) -> tuple[float, object]:
    """The DistilBERT recipe: student initialised from the teacher, then KL + hard + cosine.

    Args:
        teacher: A trained Keras classifier (e.g. a stack of encoder blocks).
        student: An uncompiled student, typically the same architecture with
            half the blocks.
        data: A `kd.datasets.Split` with integer labels.
        hidden_pairs: See `distilbert_objective`.
        init: Initialise the student with `init_from_teacher` first.
        **settings: The fields of `kd.recipes.TrainingSettings`
            (`epochs` is required; `batch_size`, `learning_rate`, `verbose`,
            `callbacks`, ...), passed to `train_distilled` with the objective.

    Returns:
        `(test accuracy, the InitReport or None)`.

    Example:
    >>> import numpy as np
    >>> def stack(blocks):
    ...     return keras.Sequential([keras.Input((8,))] + [
    ...         keras.layers.Dense(8, activation="relu", name=f"block_{i}")
    ...         for i in range(blocks)] + [keras.layers.Dense(2, name="head")])
    >>> x, y = np.random.rand(32, 8).astype("float32"), np.arange(32) % 2
    >>> accuracy, report = train_distilbert_style(stack(4), stack(2), Split(x, y, x, y),
    ...     hidden_pairs=[("block_3", "block_1")], epochs=1)
    >>> report.copied[1]
    ('block_1', 'block_2')
    """
    objective = distilbert_objective(hidden_pairs)
    training_recipes.settings_from(
        "train_distilbert_style", settings, training_recipes.TrainingSettings
    )  # checked before the student is changed
    copied = init_from_teacher(student, teacher) if init else None
    accuracy = training_recipes.train_distilled(teacher, student, data, **settings, **objective)
    return accuracy, copied
