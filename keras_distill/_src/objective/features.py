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

The distiller runs each model once per step: a `Tap` records the named
layers' outputs while the model runs (Functional, Sequential and subclassed
models; layers inside nested models by path, `"encoder/block_1"`).
"""

from __future__ import annotations

import threading

import keras
import tensorflow as tf
from keras import ops

from keras_distill._src.objective.objective import reduce

FEATURE_LOSSES = ("mse", "l1", "cosine", "attention")
PROJECTORS = ("auto", "dense", "conv", None)


@keras.saving.register_keras_serializable(package="keras_distill")
class FeatureDistillation:
    """A distillation term between a teacher layer's and a student layer's outputs.

    Pass it in `Distiller(..., distillation_loss=[...])` next to (or instead
    of) an output loss such as `"kl_divergence"`; its value is logged as
    `distillation_loss/<name>`.

    Args:
        teacher_layer: Name of the teacher's layer, or its path inside nested
            models (`"backbone/transformer_layer_1"`); any model kind.
        student_layer: Name or path of the student's layer.
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

    def __init__(
        self,
        teacher_layer: str,
        student_layer: str,
        loss: str = "mse",
        projector: str | None = "auto",
        name: str | None = None,
    ):
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
        return (
            f"FeatureDistillation({self.teacher_layer!r} -> {self.student_layer!r}, "
            f"loss={self.loss!r})"
        )

    def get_config(self) -> dict:
        """The constructor arguments."""
        return {
            "teacher_layer": self.teacher_layer,
            "student_layer": self.student_layer,
            "loss": self.loss,
            "projector": self.projector,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config: dict) -> FeatureDistillation:
        """Creates the term from `get_config()` output."""
        return cls(**config)


def find_layer(model, path: str, role: str):
    """The layer at `path` in `model` (`"encoder/block_1"` inside nested models or layers).

    Raises:
        ValueError: Naming the missing step and listing the layers available there.

    Example:
    >>> inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")],
    ...                          name="inner")
    >>> find_layer(keras.Sequential([keras.Input((4,)), inner]), "inner/d", "student").name
    'd'
    """
    layer = model
    for name in path.split("/"):
        children = direct_sublayers(layer)
        if not children:
            raise ValueError(
                f"The {role} layer path {path!r}: {layer.name!r} has no sublayers, "
                f"so no layer {name!r}."
            )
        names = [child.name for child in children]
        if name not in names:
            raise ValueError(
                f"The {role} {model.name!r} has no layer {path!r}: the layers of "
                f"{layer.name!r} are {names}."
            )
        layer = children[names.index(name)]
    return layer


def direct_sublayers(layer) -> list:
    """A model's `layers`; for any other layer, those it holds one level down.

    `keras.Model.layers` is Keras' public reading of the sublayers every layer
    tracks (in attributes, private ones too, and in lists and dicts); its getter
    serves a plain layer as well.
    """
    if isinstance(layer, keras.Model):
        return list(layer.layers)
    return list(keras.Model.layers.fget(layer))


def _recording(call, record: list):
    @tf.autograph.experimental.do_not_convert  # Keras' own calls are not converted either
    def recording_call(*args, **kwargs):
        outputs = call(*args, **kwargs)
        record.append(outputs)
        return outputs

    return recording_call


class Tap:
    """A model run once per call, returning `(its outputs, [outputs of the named layers])`.

    Works for Functional, Sequential and subclassed models and for layers
    inside nested models (paths such as `"encoder/block_1"`): while the model
    runs, each named layer's `call` also records its output, so the features
    come from the same forward pass as the outputs, from the same weights.

    Args:
        model: A built Keras model (a subclassed one called once on a batch).
        paths: The layer paths.
        role: `"teacher"` or `"student"`, for error messages.

    Raises:
        ValueError: For unknown paths (the available layers listed), an
            unbuilt subclassed model, or a layer called more than once per pass.

    Example:
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d"),
    ...                           keras.layers.Dense(2)])
    >>> tap = Tap(model, ["d"], "student")
    >>> outputs, features = tap(ops.zeros((1, 4)))
    >>> tuple(outputs.shape), tuple(features[0].shape), tap.shapes
    ((1, 2), (1, 3), [(None, 3)])
    """

    _lock = threading.Lock()  # the recording calls are set per pass; replicas trace in threads

    def __init__(self, model, paths: list[str], role: str):
        self.model, self.paths, self.role = model, list(paths), role
        self.layers = [find_layer(model, path, role) for path in self.paths]
        self.shapes = self._probe()

    def __call__(self, x, training=False):
        """`(the model's outputs, [the named layers' outputs])` from one forward pass."""
        records = {id(layer): [] for layer in self.layers}
        unique = {id(layer): layer for layer in self.layers}.values()
        with self._lock:
            for layer in unique:
                layer.call = _recording(layer.call, records[id(layer)])
            try:
                outputs = self.model(x, training=training)
            finally:
                for layer in unique:
                    del layer.call  # back to the class's own `call`
        for path, layer in zip(self.paths, self.layers, strict=True):
            if len(records[id(layer)]) != 1:
                raise ValueError(
                    f"The {self.role} layer {path!r} ran {len(records[id(layer)])} "
                    "times in one forward pass; name one that runs once."
                )
        return outputs, [records[id(layer)][0] for layer in self.layers]

    def _probe(self) -> list[tuple]:
        """The features' shapes (batch axis None), from one symbolic pass."""
        probe = tf.function(lambda x: self(x)[1], autograph=False)
        return [
            tuple(t.shape)
            for t in probe.get_concrete_function(self._input_spec()).structured_outputs
        ]

    def _input_spec(self):
        def spec(shape, dtype):
            return tf.TensorSpec((None, *shape[1:]), dtype)

        inputs = getattr(self.model, "inputs", None)
        if inputs:  # Functional or Sequential: its input structure (a dict for keras_hub models)
            structure = self.model.input if len(inputs) > 1 else inputs[0]
            return keras.tree.map_structure(lambda t: spec(t.shape, t.dtype), structure)
        build_config = self.model.get_build_config() or {}
        if "input_shape" not in build_config:
            raise ValueError(
                f"The {self.role} {self.model.name!r} is a subclassed model that "
                "has not been called; call it once on a batch before building the "
                "Distiller, so that its feature shapes are known."
            )
        return spec(build_config["input_shape"], "float32")


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
        raise ValueError(
            f"{where}: only the last (feature) axis may differ (a projector maps "
            "it); the rank and the other sizes must match."
        )
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
    layer = (
        keras.layers.Conv2D(width, 1, name=f"{term.name}_projector")
        if conv
        else keras.layers.Dense(width, name=f"{term.name}_projector")
    )
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
        self.teacher = Tap(teacher, [term.teacher_layer for term in self.terms], "teacher")
        self.student = Tap(student, [term.student_layer for term in self.terms], "student")
        self.projectors = [
            projector_for(term, t, s)
            for term, t, s in zip(self.terms, self.teacher.shapes, self.student.shapes, strict=True)
        ]

    def value(
        self, index: int, teacher_features, student_features, sample_weight=None, **reduction
    ):
        """The term's loss, a scalar averaged over examples (and valid positions).

        `reduction`: `mask` (the student features' mask, if any) and `replicas`, as `reduce`.
        """
        projector = self.projectors[index]
        projected = student_features if projector is None else projector(student_features)
        per_position = feature_loss(self.terms[index].loss, teacher_features, projected)
        mask = reduction.pop("mask", None)
        if mask is not None and len(mask.shape) != len(per_position.shape):
            mask = None
        return reduce(per_position, sample_weight, mask, **reduction)
