"""Feature (intermediate-layer) distillation: a student layer learns a teacher layer's output.

A `FeatureDistillation` term names a teacher layer and a student layer and a
loss between their outputs: `"mse"` (FitNets, Romero et al. 2015), `"l1"`,
`"cosine"` (DistilBERT's hidden-state loss, Sanh et al. 2019: one minus the
cosine similarity along the feature axis) or `"attention"` (attention
transfer, Zagoruyko & Komodakis 2017: the normalised spatial map of squared
activations of 4-D feature maps). When the widths differ, a trainable
projector (a `Dense` on the last axis, or a 1x1 `Conv2D` for feature maps)
maps the student's features to the teacher's width; it trains with the
student and is saved with the distiller, not with the student.

The distiller runs each model once per step: `extractor` rebuilds a
Functional or Sequential model as one that also returns the named layers'
outputs, from the same layers and weights.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_distill.objective import reduce

FEATURE_LOSSES = ("mse", "l1", "cosine", "attention")
PROJECTORS = ("auto", "dense", "conv", None)


@keras.saving.register_keras_serializable(package="keras_distill")
class FeatureDistillation:
    """A distillation term between a teacher layer's and a student layer's outputs.

    Pass it in `Distiller(..., distillation_loss=[...])` next to (or instead
    of) an output loss such as `"kl_divergence"`; its value is logged as
    `distillation_loss/<name>`.

    Args:
        teacher_layer: Name of the teacher's layer (a top-level layer of a
            Functional or Sequential model).
        student_layer: Name of the student's layer.
        loss: One of `FEATURE_LOSSES`.
        projector: `"auto"` (a `Dense` on the last axis, a 1x1 `Conv2D` for
            4-D feature maps, only when the widths differ), `"dense"`,
            `"conv"`, or None (the widths must match). Attention transfer
            needs none.
        name: The log name (default `feature_<student_layer>`).

    Raises:
        ValueError: For an unknown loss or projector.

    Example:
    >>> term = FeatureDistillation("hidden_2", "hidden_1", loss="cosine")
    >>> term.name, term.loss
    ('feature_hidden_1', 'cosine')
    """

    def __init__(self, teacher_layer: str, student_layer: str, loss: str = "mse",
                 projector: str | None = "auto", name: str | None = None):  # fmt: skip
        if loss not in FEATURE_LOSSES:
            raise ValueError(f"`loss` must be one of {FEATURE_LOSSES}; received {loss!r}.")
        if projector not in PROJECTORS:
            raise ValueError(f"`projector` must be one of {PROJECTORS}; received {projector!r}.")
        self.teacher_layer = teacher_layer
        self.student_layer = student_layer
        self.loss = loss
        self.projector = projector
        self.name = name or f"feature_{student_layer}"

    def __repr__(self) -> str:
        return (f"FeatureDistillation({self.teacher_layer!r} -> {self.student_layer!r}, "
                f"loss={self.loss!r})")  # fmt: skip

    def get_config(self) -> dict:
        """The constructor arguments."""
        return {"teacher_layer": self.teacher_layer, "student_layer": self.student_layer,
                "loss": self.loss, "projector": self.projector, "name": self.name}  # fmt: skip

    @classmethod
    def from_config(cls, config: dict) -> FeatureDistillation:
        """Creates the term from `get_config()` output."""
        return cls(**config)


def layer_output(model, name: str, role: str):
    """The symbolic output of a model's top-level layer, or a clear error.

    Example:
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")])
    >>> tuple(layer_output(model, "d", "teacher").shape)
    (None, 3)
    """
    names = [layer.name for layer in model.layers]
    if name not in names:
        raise ValueError(f"The {role} {model.name!r} has no layer {name!r}; its layers are "
                         f"{names}.")  # fmt: skip
    try:
        return model.get_layer(name).output
    except (AttributeError, ValueError) as error:
        raise ValueError(
            f"The {role} layer {name!r} has no single symbolic output (a subclassed model, or a "
            "layer called several times); feature distillation needs a Functional or "
            "Sequential model."
        ) from error


def extractor(model, names: list[str], role: str):
    """`model` rebuilt to return `(its outputs, [outputs of the named layers])` in one pass.

    Example:
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d"),
    ...                           keras.layers.Dense(2)])
    >>> outputs, features = extractor(model, ["d"], "student")(ops.zeros((1, 4)))
    >>> tuple(outputs.shape), tuple(features[0].shape)
    ((1, 2), (1, 3))
    """
    if not getattr(model, "inputs", None):
        raise ValueError(f"The {role} {model.name!r} has no symbolic inputs; feature "
                         "distillation needs a built Functional or Sequential model.")  # fmt: skip
    features = [layer_output(model, name, role) for name in names]
    # A Sequential model's `output` is that of its last call (e.g. inside an ensemble), not of
    # its own graph; a Functional model's is its own output structure.
    outputs = model.outputs[0] if isinstance(model, keras.Sequential) else model.output
    return keras.Model(model.inputs, (outputs, features), name=f"{model.name}_with_features")


def projector_for(term: FeatureDistillation, teacher_shape: tuple, student_shape: tuple):
    """A projector layer from the student's width to the teacher's, or None; checks shapes.

    Raises:
        ValueError: With both shapes, for a rank or length mismatch no
            projector can fix, or differing widths with `projector=None`.

    Example:
    >>> projector_for(FeatureDistillation("t", "s"), (None, 8), (None, 4)).units
    8
    """
    where = f"{term!r}: teacher features {teacher_shape}, student features {student_shape}"
    if len(teacher_shape) != len(student_shape) or any(
        t is not None and s is not None and t != s
        for t, s in zip(teacher_shape[1:-1], student_shape[1:-1], strict=True)
    ):
        raise ValueError(f"{where}: only the last (feature) axis may differ (a projector maps "
                         "it); the rank and the other sizes must match.")  # fmt: skip
    if term.loss == "attention":
        if len(teacher_shape) != 4:
            raise ValueError(f"{where}: attention transfer takes 4-D feature maps.")
        return None
    width, student_width = teacher_shape[-1], student_shape[-1]
    if term.projector not in ("dense", "conv") and width == student_width:
        return None
    if term.projector is None:
        raise ValueError(f"{where}: the widths differ; use projector='auto'.")
    conv = term.projector == "conv" or (term.projector == "auto" and len(teacher_shape) == 4)
    layer = (keras.layers.Conv2D(width, 1, name=f"{term.name}_projector") if conv
             else keras.layers.Dense(width, name=f"{term.name}_projector"))  # fmt: skip
    layer.build(student_shape)
    return layer


def _attention_map(features):
    squared = ops.mean(ops.square(ops.cast(features, "float32")), axis=-1)  # (batch, H, W)
    flat = ops.reshape(squared, (ops.shape(squared)[0], -1))
    return flat / (ops.norm(flat, axis=-1, keepdims=True) + 1e-12)


def feature_loss(loss: str, teacher_features, student_features):
    """The loss per example (and position) between teacher and student features.

    Args:
        loss: One of `FEATURE_LOSSES`.
        teacher_features: The teacher's features.
        student_features: The student's features (projected to the teacher's width).

    Returns:
        A float32 tensor: per position for `"mse"`, `"l1"`, `"cosine"` (the
        feature axis reduced), per example for `"attention"`.

    Example:
    >>> import numpy as np
    >>> x = np.array([[1.0, 0.0]])
    >>> float(feature_loss("cosine", x, 2 * x)[0]), float(feature_loss("mse", x, 0 * x)[0])
    (0.0, 0.5)
    """
    teacher = ops.stop_gradient(ops.cast(teacher_features, "float32"))
    student = ops.cast(student_features, "float32")
    if loss == "attention":
        return ops.sum(ops.square(_attention_map(student) - _attention_map(teacher)), axis=-1)
    if loss == "cosine":
        t = teacher / (ops.norm(teacher, axis=-1, keepdims=True) + 1e-12)
        s = student / (ops.norm(student, axis=-1, keepdims=True) + 1e-12)
        return 1.0 - ops.sum(t * s, axis=-1)
    difference = student - teacher
    return ops.mean(ops.square(difference) if loss == "mse" else ops.abs(difference), axis=-1)


class Extraction:
    """What a distiller needs for its feature terms: extractors and projectors.

    A plain object, so Keras does not track the extractors (they share the
    teacher's and student's layers and weights); the distiller tracks the
    projectors itself, so that they train and are saved with it.

    Args:
        teacher: The teacher model.
        student: The student model.
        terms: The `FeatureDistillation` terms.

    Raises:
        ValueError: For unknown layer names (the available ones listed) or
            shapes no projector can reconcile (both shapes given).

    Example:
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="t"),
    ...                             keras.layers.Dense(3)])
    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="s"),
    ...                             keras.layers.Dense(3)])
    >>> Extraction(teacher, student, [FeatureDistillation("t", "s")]).projectors[0].units
    8
    """

    def __init__(self, teacher, student, terms):
        self.terms = list(terms)
        self.teacher = extractor(teacher, [t.teacher_layer for t in self.terms], "teacher")
        self.student = extractor(student, [t.student_layer for t in self.terms], "student")
        self.projectors = [
            projector_for(term, tuple(t.shape), tuple(s.shape))
            for term, t, s in zip(self.terms, self.teacher.outputs[-len(self.terms):],
                                  self.student.outputs[-len(self.terms):], strict=True)
        ]  # fmt: skip

    def value(self, index: int, teacher_features, student_features, sample_weight=None):
        """The term's loss, a scalar averaged over examples (and valid positions)."""
        projector = self.projectors[index]
        projected = student_features if projector is None else projector(student_features)
        per_position = feature_loss(self.terms[index].loss, teacher_features, projected)
        mask = getattr(student_features, "_keras_mask", None)
        if mask is not None and len(mask.shape) != len(per_position.shape):
            mask = None
        return reduce(per_position, sample_weight, mask)
