"""The terms of the distillation objective: output losses and feature terms, with weights.

`Distiller(distillation_loss=[...], distillation_loss_weights=[...])` takes
one term or several; `parse` checks them and orders them as
`keras_distill._src.objective.objective.compute` combines them (output losses first, then
feature terms), with the names their values are logged under.
"""

from __future__ import annotations

from keras_distill._src import losses
from keras_distill._src.objective.features import FeatureDistillation


def _term_name(term) -> str:
    if isinstance(term, str):
        return term
    return getattr(term, "name", None) or getattr(term, "__name__", None) or type(term).__name__


def parse(distillation_loss, weights, teacher):
    """(output loss functions, feature terms, weights in that order, log names); checked.

    Args:
        distillation_loss: One term or a list of terms (output losses as
            `keras_distill._src.losses.get` takes them, `FeatureDistillation`s).
        weights: One weight >= 0 per term, or None (1 each).
        teacher: The teacher, or None (feature terms then refused).

    Returns:
        `(loss functions, feature terms, weights, names)`, output terms first.

    Raises:
        ValueError: For an empty list, weights that do not match or are
            negative, or feature terms without a teacher.

    Example:
    >>> fns, features, weights, names = parse(["kl", "logit_mse"], [1.0, 0.5], None)
    >>> names, weights
    (['kl', 'logit_mse'], [1.0, 0.5])
    """
    terms = (
        list(distillation_loss)
        if isinstance(distillation_loss, (list, tuple))
        else [distillation_loss]
    )
    if not terms:
        raise ValueError("`distillation_loss` is an empty list; give at least one term.")
    weights = [1.0] * len(terms) if weights is None else [float(w) for w in weights]
    if len(weights) != len(terms) or any(not w >= 0 for w in weights):
        raise ValueError(
            f"`distillation_loss_weights` must hold one weight >= 0 per term "
            f"({len(terms)}); received {weights!r}."
        )
    is_feature = [isinstance(t, FeatureDistillation) for t in terms]
    order = sorted(range(len(terms)), key=lambda i: is_feature[i])  # outputs first, stable
    outputs = [terms[i] for i in order if not is_feature[i]]
    features = [terms[i] for i in order if is_feature[i]]
    if features and teacher is None:
        raise ValueError("Feature terms need a live teacher: stored outputs hold no features.")
    weights = [weights[i] for i in order]
    names = [_term_name(terms[i]) for i in order]
    names = [
        n if names.count(n) == 1 else f"{n}_{names[:i].count(n) + 1}" for i, n in enumerate(names)
    ]
    return [losses.get(t) for t in outputs], features, weights, names
