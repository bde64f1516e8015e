"""Distillation losses between teacher and student logits.

Every loss comes as a function and as a thin `keras.losses.Loss` class, like
`keras.losses.categorical_crossentropy` and `keras.losses.CategoricalCrossentropy`.

The functions take `(teacher_logits, student_logits, temperature)` and return one
value per position (the last axis, the classes, is reduced), so `(batch,)` for a
classifier and `(batch, time)` for a sequence model. They always compute in
float32, so students trained under `mixed_float16` get an exact loss.

The softmax-based losses soften both distributions with the temperature `T` and
multiply the result by `T**2` (Hinton et al., 2015), which keeps the size of
their gradients independent of `T`, so `alpha` means the same thing at every
temperature.

Beyond Hinton's KL: `decoupled_kd` (DKD, which also takes the hard labels:
a function whose `uses_labels` attribute is true gets `labels=` from the
`Distiller`), `dist` (DIST, correlations instead of values) and
`standardized_kl_divergence` (logit standardization). Losses whose
`needs_full_logits` attribute is true refuse stored top-k outputs.
"""

from __future__ import annotations

import functools

import keras
from keras import ops

from keras_distill._src.losses.divergences import (
    LossFn,
    decoupled_kd,
    dist,
    jensen_shannon_divergence,
    kl_divergence,
    logit_mse,
    reverse_kl_divergence,
    standardized_kl_divergence,
)


class DistillationLoss(keras.losses.Loss):
    """A `keras.losses.Loss` that wraps a distillation loss function.

    `y_true` holds the teacher's logits and `y_pred` the student's. Use it for
    custom training loops or pass it to `Distiller(distillation_loss=...)`; the
    distiller then uses the loss function with its own temperature variable.

    Args:
        fn: Callable `fn(teacher_logits, student_logits, temperature)` returning
            one loss value per position (the last axis reduced).
        temperature: Positive float (or a scalar variable) passed to `fn`.
        reduction: As for `keras.losses.Loss`.
        name: Optional name of the loss.
        dtype: Dtype of the computation, float32 by default.

    Raises:
        TypeError: If `fn` is not callable.
        ValueError: If `temperature` is not positive.

    Example:
    >>> import numpy as np
    >>> loss = DistillationLoss(kl_divergence, temperature=2.0)
    >>> float(loss(np.zeros((4, 3)), np.zeros((4, 3))))
    0.0
    """

    def __init__(
        self,
        fn: LossFn,
        temperature: float = 1.0,
        reduction: str | None = "sum_over_batch_size",
        name: str | None = None,
        dtype: str | None = None,
    ):
        if not callable(fn):
            raise TypeError(
                "`fn` must be a callable fn(teacher_logits, student_logits, "
                f"temperature); received fn={fn!r}."
            )
        if isinstance(temperature, (int, float)) and not temperature > 0:
            raise ValueError(f"`temperature` must be > 0; received {temperature!r}.")
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.fn = fn
        self.temperature = temperature

    def call(self, y_true, y_pred):
        """Returns `fn(y_true, y_pred, temperature)`, per position."""
        return self.fn(y_true, y_pred, self.temperature)

    def _loss_config(self) -> dict:
        return {
            **super().get_config(),
            "temperature": float(ops.convert_to_numpy(self.temperature)),
        }

    def get_config(self) -> dict:
        """Returns the loss configuration."""
        return {**self._loss_config(), "fn": keras.saving.serialize_keras_object(self.fn)}

    @classmethod
    def from_config(cls, config: dict) -> DistillationLoss:
        """Creates the loss from `get_config()` output."""
        config = dict(config)
        if "fn" in config:
            config["fn"] = keras.saving.deserialize_keras_object(config["fn"])
        return cls(**config)


class _NamedDistillationLoss(DistillationLoss):
    """Base of the built-in loss classes, whose function is fixed.

    Subclasses with options (e.g. DKD's `alpha` and `beta`) pass them as
    `options`; the function is then bound to them with `functools.partial`.
    """

    loss_fn: LossFn

    def __init__(
        self,
        temperature: float = 1.0,
        reduction: str | None = "sum_over_batch_size",
        name: str | None = None,
        dtype: str | None = None,
        **options,
    ):
        fn = type(self).loss_fn
        super().__init__(
            functools.partial(fn, **options) if options else fn,
            temperature=temperature,
            reduction=reduction,
            name=name,
            dtype=dtype,
        )
        self.options = options

    def get_config(self) -> dict:
        return {**self._loss_config(), **self.options}


@keras.saving.register_keras_serializable(package="keras_distill")
class KLDivergence(_NamedDistillationLoss):
    """Loss class of `kl_divergence`, the default distillation loss.

    Example:
    >>> import numpy as np
    >>> loss = KLDivergence(temperature=4.0)
    >>> float(loss(np.zeros((2, 5)), np.zeros((2, 5))))
    0.0
    """

    loss_fn = staticmethod(kl_divergence)


@keras.saving.register_keras_serializable(package="keras_distill")
class ReverseKLDivergence(_NamedDistillationLoss):
    """Loss class of `reverse_kl_divergence`.

    Example:
    >>> import numpy as np
    >>> loss = ReverseKLDivergence(temperature=2.0)
    >>> float(loss(np.ones((2, 5)), np.ones((2, 5))))
    0.0
    """

    loss_fn = staticmethod(reverse_kl_divergence)


@keras.saving.register_keras_serializable(package="keras_distill")
class JensenShannonDivergence(_NamedDistillationLoss):
    """Loss class of `jensen_shannon_divergence`.

    Example:
    >>> import numpy as np
    >>> loss = JensenShannonDivergence()
    >>> float(loss(np.zeros((2, 5)), np.zeros((2, 5))))
    0.0
    """

    loss_fn = staticmethod(jensen_shannon_divergence)


@keras.saving.register_keras_serializable(package="keras_distill")
class LogitMSE(_NamedDistillationLoss):
    """Loss class of `logit_mse`.

    Example:
    >>> loss = LogitMSE()
    >>> float(loss([[1.0, 3.0]], [[0.0, 0.0]]))
    5.0
    """

    loss_fn = staticmethod(logit_mse)


@keras.saving.register_keras_serializable(package="keras_distill")
class StandardizedKLDivergence(_NamedDistillationLoss):
    """Loss class of `standardized_kl_divergence` (logit standardization).

    Example:
    >>> import numpy as np
    >>> loss = StandardizedKLDivergence(temperature=2.0)
    >>> float(loss(np.array([[1.0, 0.0]]), np.array([[5.0, 0.0]]))) < 1e-6
    True
    """

    loss_fn = staticmethod(standardized_kl_divergence)


@keras.saving.register_keras_serializable(package="keras_distill")
class DecoupledKD(_NamedDistillationLoss):
    """Loss class of `decoupled_kd` (DKD), with its weights `alpha` (TCKD) and `beta` (NCKD).

    Inside a `Distiller` the hard labels reach it; called alone
    (`loss(teacher_logits, student_logits)`) it uses the teacher's argmax as
    the target class.

    Args:
        alpha: Weight of target-class KD.
        beta: Weight of non-target-class KD.
        temperature: Positive float passed to the function (a `Distiller`
            uses its own temperature variable instead).
        **kwargs: `reduction`, `name`, `dtype`, as for `keras.losses.Loss`.

    Example:
    >>> import numpy as np
    >>> loss = DecoupledKD(alpha=1.0, beta=8.0, temperature=4.0)
    >>> float(loss(np.array([[2.0, 0.0, 1.0]]), np.array([[2.0, 0.0, 1.0]])))
    0.0
    """

    loss_fn = staticmethod(decoupled_kd)

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: float = 1.0, **kwargs):
        super().__init__(temperature=temperature, alpha=float(alpha), beta=float(beta), **kwargs)


@keras.saving.register_keras_serializable(package="keras_distill")
class DIST(_NamedDistillationLoss):
    """Loss class of `dist`, with the weights `beta` (inter-class) and `gamma` (intra-class).

    Args:
        beta: Weight of the inter-class relation term.
        gamma: Weight of the intra-class relation term.
        temperature: Positive float passed to the function.
        **kwargs: `reduction`, `name`, `dtype`, as for `keras.losses.Loss`.

    Example:
    >>> import numpy as np
    >>> loss = DIST(beta=1.0, gamma=1.0)
    >>> t = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    >>> round(float(loss(t, t)), 6)
    0.0
    """

    loss_fn = staticmethod(dist)

    def __init__(self, beta: float = 1.0, gamma: float = 1.0, temperature: float = 1.0, **kwargs):
        super().__init__(temperature=temperature, beta=float(beta), gamma=float(gamma), **kwargs)


# Keras' own KL divergence, as the keras.io example passes it (`distillation_loss_fn=`).
KERAS_KL_NAMES = ("kl_divergence", "kld", "kullback_leibler_divergence", "KLDivergence")

_BY_NAME: dict[str, LossFn] = {
    "kl_divergence": kl_divergence,
    "kl": kl_divergence,
    "reverse_kl_divergence": reverse_kl_divergence,
    "reverse_kl": reverse_kl_divergence,
    "jensen_shannon_divergence": jensen_shannon_divergence,
    "jensen_shannon": jensen_shannon_divergence,
    "js": jensen_shannon_divergence,
    "logit_mse": logit_mse,
    "mse": logit_mse,
    "standardized_kl_divergence": standardized_kl_divergence,
    "standardized_kl": standardized_kl_divergence,
    "decoupled_kd": decoupled_kd,
    "dkd": decoupled_kd,
    "dist": dist,
}


def get(identifier: str | DistillationLoss | LossFn) -> LossFn:
    """Returns the distillation loss function an identifier names.

    Args:
        identifier: A name (`"kl_divergence"`/`"kl"`, `"reverse_kl_divergence"`/
            `"reverse_kl"`, `"jensen_shannon_divergence"`/`"js"`,
            `"logit_mse"`/`"mse"`), a `DistillationLoss` instance (its function
            is returned), or a callable
            `fn(teacher_logits, student_logits, temperature)`.

    Returns:
        The loss function.

    Raises:
        ValueError: If a name is unknown.
        TypeError: If the identifier is neither a name nor a callable.

    Example:
    >>> get("kl") is kl_divergence
    True
    """
    if isinstance(identifier, str):
        try:
            return _BY_NAME[identifier]
        except KeyError:
            raise ValueError(
                f"Unknown distillation loss {identifier!r}; expected one of "
                f"{sorted(_BY_NAME)}, a DistillationLoss instance or a callable "
                "fn(teacher_logits, student_logits, temperature)."
            ) from None
    if isinstance(identifier, DistillationLoss):
        return identifier.fn
    if isinstance(identifier, keras.losses.Loss) or not callable(identifier):
        raise TypeError(
            "`distillation_loss` must be a name, a keras_distill DistillationLoss "
            "or a callable fn(teacher_logits, student_logits, temperature); "
            f"received {identifier!r}. Keras' own losses take (y_true, y_pred) "
            "and cannot see the temperature."
        )
    return identifier


def serialize(loss: str | DistillationLoss | LossFn) -> str | dict:
    """Serializes a distillation loss: a name stays a name, objects become configs.

    Args:
        loss: Anything `get` accepts, a `kd.FeatureDistillation`,
            or a list of them (the terms of `Distiller(distillation_loss=[...])`).

    Returns:
        The name, or the Keras serialization of the object or function.

    Example:
    >>> serialize("kl")
    'kl'
    >>> serialize(KLDivergence(temperature=2.0))["class_name"]
    'KLDivergence'
    """
    if isinstance(loss, (list, tuple)):
        return [serialize(term) for term in loss]
    if isinstance(loss, str):
        return loss
    return keras.saving.serialize_keras_object(loss)


def deserialize(config: str | dict, custom_objects: dict | None = None):
    """The inverse of `serialize`: a name is checked and kept, a config is rebuilt.

    Args:
        config: A loss name, a Keras serialization config, or a list of them.
        custom_objects: As for `keras.saving.deserialize_keras_object`.

    Returns:
        A name, a `DistillationLoss` or a loss function, as `get` accepts.

    Raises:
        ValueError: If a name is unknown.

    Example:
    >>> deserialize(serialize(JensenShannonDivergence())).fn is jensen_shannon_divergence
    True
    """
    if isinstance(config, list):
        return [deserialize(term, custom_objects) for term in config]
    if isinstance(config, str):
        get(config)
        return config
    return keras.saving.deserialize_keras_object(config, custom_objects=custom_objects)
