"""The keras.io distillation example's `compile(...)` arguments, as a `Distiller` reads them.

The example compiles with `compile(optimizer, metrics, student_loss_fn,
distillation_loss_fn=keras.losses.KLDivergence(), alpha=0.1, temperature=3)`.
`Distiller.compile` accepts those arguments: `student_loss_fn` is the
`loss`, `KLDivergence()` becomes `keras_distill._src.losses.kl_divergence` (the
softened, `T**2`-scaled KL the example computes), and `alpha`/`temperature`
set the variables. Without `alpha`/`temperature` the distiller keeps its own
values, which differ from the example's defaults: a warning says which are used.
"""

from __future__ import annotations

import warnings

from keras_distill._src import losses
from keras_distill._src.losses.losses import KERAS_KL_NAMES
from keras_distill._src.utils.console import print_msg

# The keras.io example's `compile` defaults.
EXAMPLE_ALPHA = 0.1
EXAMPLE_TEMPERATURE = 3.0


def hard_loss(loss, student_loss_fn):
    """The `loss` to compile: `loss`, or the example's `student_loss_fn`, not both."""
    if student_loss_fn is None:
        return loss
    if loss is not None:
        raise ValueError(
            "Give the hard-label loss as `loss` or as the keras.io example's "
            "`student_loss_fn`, not both."
        )
    return student_loss_fn


def distillation_loss(fn, several_terms: bool):
    """The identifier of `kd.losses` that replaces the example's `distillation_loss_fn`.

    Args:
        fn: `keras.losses.KLDivergence()` (or its function), or a
            `keras_distill._src.losses.DistillationLoss`.
        several_terms: Whether the distiller was built with several terms.

    Returns:
        `"kl_divergence"` or `fn` itself (a `DistillationLoss`).

    Raises:
        ValueError: With several terms.
        TypeError: For any other loss, which cannot see the temperature.

    Example:
    >>> import keras
    >>> distillation_loss(keras.losses.KLDivergence(), several_terms=False)  # doctest: +ELLIPSIS
    keras-distill: distillation_loss_fn=KLDivergence is used as ...
    'kl_divergence'
    """
    if several_terms:
        raise ValueError(
            "compile(distillation_loss_fn=...) replaces the one distillation loss of the "
            "keras.io example; this distiller has several terms. Give them with "
            "Distiller(distillation_loss=[...]) only."
        )
    if isinstance(fn, losses.DistillationLoss):
        return fn
    name = getattr(fn, "name", None) or getattr(fn, "__name__", None) or fn
    if name in KERAS_KL_NAMES:
        print_msg(
            f"keras-distill: distillation_loss_fn={type(fn).__name__} is used as "
            "kd.losses.kl_divergence: T**2 * KL(softmax(t / T) || "
            "softmax(s / T)), as the keras.io example computes it."
        )
        return "kl_divergence"
    raise TypeError(
        f"distillation_loss_fn={fn!r} cannot see the temperature; keras-distill maps "
        "keras.losses.KLDivergence() (the keras.io example's choice) or takes a "
        "kd.losses.DistillationLoss. Other losses: Distiller(distillation_loss=...)."
    )


def warn_kept_settings(values: dict, alpha, temperature) -> None:
    """Warns which alpha and temperature the example's `compile` path uses when not given.

    Args:
        values: The distiller's current `{"temperature": ..., "alpha": ...}`.
        alpha: `compile`'s `alpha` (None: not given).
        temperature: `compile`'s `temperature` (None: not given).
    """
    missing = [
        key for key, given in (("alpha", alpha), ("temperature", temperature)) if given is None
    ]
    if not missing:
        return
    used = ", ".join(f"{key}={values[key]:g}" for key in missing)
    example = {"alpha": EXAMPLE_ALPHA, "temperature": EXAMPLE_TEMPERATURE}
    theirs = ", ".join(f"{key}={example[key]:g}" for key in missing)
    warnings.warn(
        f"compile(student_loss_fn=..., distillation_loss_fn=...) without {' or '.join(missing)}: "
        f"this distiller uses {used} (keras-distill's defaults or the values given to "
        f"Distiller), not the keras.io example's compile defaults ({theirs}). Pass them to "
        "compile() to choose.",
        stacklevel=4,
    )
