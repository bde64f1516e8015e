"""Several teachers as one: the weighted average of their softened probabilities (or logits).

`ensemble(teachers, weights)` builds a Functional model that runs every
teacher on the same inputs and combines their outputs, so that a `Distiller`
(and `label_with_teacher`) sees one teacher. With `average="probabilities"`
(the default) it returns `T * log(sum_i w_i * softmax(t_i / T))`: logits whose
softmax at the distiller's temperature T is exactly the weighted average of
the teachers' temperature-softened probabilities, the target of
multi-teacher KD (Hinton et al. 2015 distil an ensemble this way). Averaging
probabilities keeps each teacher's confidence: a teacher with larger logits
does not outvote the others, as it would with `average="logits"`, which
returns `sum_i w_i * t_i` (independent of T). Teachers that end in a softmax
are read as log-probabilities.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_distill._src.utils.model_inspection import (
    as_logits,
    check_compatible,
    probability_outputs,
)

AVERAGES = ("probabilities", "logits")
COMBINE_NAME = "teacher_ensemble_average"


class _Temperature:
    """A plain holder, so that Keras does not track the distiller's variable twice."""

    def __init__(self):
        self.variable = None


@keras.saving.register_keras_serializable(package="keras_distill")
class EnsembleAverage(keras.layers.Layer):
    """Combines a list of teachers' logits: weighted probabilities at T, or weighted logits.

    Args:
        weights: One weight per teacher (normalized to sum to 1).
        average: `"probabilities"` or `"logits"`.
        **kwargs: Passed to `keras.layers.Layer`.

    Example:
    >>> import numpy as np
    >>> layer = EnsembleAverage([1.0, 1.0], "logits")
    >>> np.asarray(layer([np.array([[2.0, 0.0]]), np.array([[0.0, 2.0]])])).tolist()
    [[1.0, 1.0]]
    """

    def __init__(self, weights, average: str = "probabilities", **kwargs):
        super().__init__(**kwargs)
        self.weights_ = [float(w) for w in weights]
        self.average = average
        self._temperature = _Temperature()

    def link_temperature(self, variable) -> None:
        """Reads the temperature from `variable` (the distiller's) from now on."""
        self._temperature.variable = variable

    def call(self, logits):
        """The combined logits of the teachers' `logits` (a list)."""
        total = sum(self.weights_)
        weights = [w / total for w in self.weights_]
        if self.average == "logits":
            return sum(w * ops.cast(t, "float32") for w, t in zip(weights, logits, strict=True))
        variable = self._temperature.variable
        temperature = 1.0 if variable is None else ops.convert_to_tensor(variable)
        log_probabilities = ops.stack(
            [
                ops.log_softmax(ops.cast(t, "float32") / temperature, axis=-1) + ops.log(w)
                for w, t in zip(weights, logits, strict=True)
                if w > 0
            ]
        )
        return temperature * ops.logsumexp(log_probabilities, axis=0)

    def get_config(self) -> dict:
        """The weights and the averaging."""
        return {**super().get_config(), "weights": self.weights_, "average": self.average}


def ensemble(teachers, weights=None, average: str = "probabilities", name: str = "teachers"):
    """One teacher from several: a Functional model averaging their outputs.

    Args:
        teachers: A list of trained single-output `keras.Model`s with the same
            inputs and outputs of the same shape.
        weights: One weight >= 0 per teacher (equal by default), not all 0.
        average: `"probabilities"` (the weighted average of the softened
            probabilities, at the distiller's temperature) or `"logits"`.
        name: The model name.

    Returns:
        A `keras.Model` returning combined logits.

    Raises:
        ValueError: For fewer than two teachers, weights that do not match,
            an unknown `average`, or teachers whose outputs differ.

    Example:
    >>> a = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> b = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> tuple(ensemble([a, b]).outputs[0].shape)
    (None, 3)
    """
    teachers = list(teachers)
    weights = [1.0] * len(teachers) if weights is None else [float(w) for w in weights]
    if not all(math.isfinite(w) for w in weights):
        raise ValueError(
            f"`teacher_weights` must be finite numbers >= 0, one per teacher; received "
            f"teacher_weights={weights!r}."
        )
    if len(teachers) < 2 or len(weights) != len(teachers) or min(weights) < 0 or not sum(weights):
        raise ValueError(
            f"An ensemble takes two or more teachers and one weight >= 0 each, not all 0; "
            f"received {len(teachers)} teachers and teacher_weights={weights!r}."
        )
    if average not in AVERAGES:
        raise ValueError(f"`average` must be one of {AVERAGES}; received {average!r}.")
    first = teachers[0]
    inputs = [keras.Input(tuple(i.shape[1:]), dtype=i.dtype) for i in first.inputs]
    logits = []
    for index, teacher in enumerate(teachers):
        if len(teacher.outputs) != 1:
            raise ValueError(
                f"Teacher {index} ({teacher.name!r}) has {len(teacher.outputs)} "
                "outputs; an ensemble takes single-output teachers."
            )
        check_compatible(first.outputs, teacher.outputs, f"between teacher 0 and teacher {index}")
        outputs = teacher(inputs[0] if len(inputs) == 1 else inputs)
        logits.append(as_logits(outputs, probability_outputs(teacher, "auto", "teacher")))
    combined = EnsembleAverage(weights, average, name=COMBINE_NAME)(logits)
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs, combined, name=name)


def one_teacher(teacher, weights=None, average: str = "probabilities"):
    """The teacher, or the `ensemble` of a list of teachers (what `Distiller` takes).

    Raises:
        ValueError: For `weights` given with a single teacher (and as `ensemble` raises).
    """
    if isinstance(teacher, (list, tuple)):
        return ensemble(teacher, weights, average)
    if weights is not None:
        raise ValueError("`teacher_weights` weighs a list of teachers; `teacher` is one model.")
    return teacher


def combiner(teacher):
    """The `EnsembleAverage` layer of a model `ensemble` built, or None."""
    layers = [layer for layer in getattr(teacher, "layers", []) if layer.name == COMBINE_NAME]
    return layers[0] if layers and isinstance(layers[0], EnsembleAverage) else None
