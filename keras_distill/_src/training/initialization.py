"""Initialising a student from its teacher's weights, as DistilBERT did.

DistilBERT (Sanh et al. 2019) halves BERT's encoder and starts the student
from the teacher: every other encoder block, and the embeddings and head as
they are. `init_from_teacher` does that for Keras models: with an explicit
`layer_map` it copies the named layers; without one it matches layers by
kind and weight shapes, copies layers that occur once in both models, and
for a stack of repeated blocks (k times as many in the teacher) takes every
k-th teacher block.
"""

from __future__ import annotations

import dataclasses

import keras

from keras_distill._src.utils import markdown


@dataclasses.dataclass(frozen=True)
class InitReport:
    """What `init_from_teacher` copied and what it skipped.

    Attributes:
        copied: `(student layer, teacher layer)` name pairs, in student order.
        skipped: `(student layer, reason)` pairs for layers left as they were.

    Example:
    >>> InitReport((("s", "t"),), (("head", "no match"),)).copied
    (('s', 't'),)
    """

    copied: tuple
    skipped: tuple

    def to_markdown(self) -> str:
        """The report as a Markdown table."""
        rows = [(s, t, "copied") for s, t in self.copied]
        rows += [(s, "", reason) for s, reason in self.skipped]
        return markdown.table(["student layer", "teacher layer", ""], rows, align="lll")


def _weighted_layers(model) -> list:
    """Layers with weights, nested models walked (e.g. a keras_hub backbone inside a model)."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += _weighted_layers(layer)
        elif layer.weights:
            found.append(layer)
    return found


def _signature(layer) -> tuple:
    return type(layer).__name__, tuple(tuple(w.shape) for w in layer.weights)


def _automatic_map(student_layers, teacher_layers) -> tuple[list, list]:
    """(pairs to copy, skipped with reasons), matching by kind and weight shapes."""
    pairs, skipped = [], []
    for signature in dict.fromkeys(_signature(layer) for layer in student_layers):
        students = [layer for layer in student_layers if _signature(layer) == signature]
        teachers = [layer for layer in teacher_layers if _signature(layer) == signature]
        if not teachers or len(teachers) % len(students):
            reason = (
                f"no teacher layer of kind {signature[0]} with weight shapes {list(signature[1])}"
                if not teachers
                else f"{len(students)} such layers against the teacher's {len(teachers)} "
                "(not a multiple)"
            )
            skipped += [(layer.name, reason) for layer in students]
            continue
        step = len(teachers) // len(students)  # DistilBERT: every other block (step 2)
        pairs += [(s, teachers[i * step]) for i, s in enumerate(students)]
    return pairs, skipped


def init_from_teacher(student: keras.Model, teacher: keras.Model, layer_map=None) -> InitReport:
    """Copies teacher weights into the student's layers of the same shapes.

    Args:
        student: The (built) student; its weights are overwritten where copied.
        teacher: The trained teacher; never modified.
        layer_map: Optional `{student layer name: teacher layer name}`. Without
            it, layers are matched by kind and weight shapes: one-to-one where
            both have the same number, every k-th teacher layer where the
            teacher has k times as many (a stack of blocks).

    Returns:
        An `InitReport` of copied and skipped layers.

    Raises:
        ValueError: For an unknown layer name in `layer_map` (the available
            ones listed) or weights of different shapes (both given).

    Example:
    >>> def stack(blocks):
    ...     return keras.Sequential([keras.Input((8,))] + [keras.layers.Dense(8) for _ in
    ...                             range(blocks)] + [keras.layers.Dense(3, name="head")])
    >>> teacher, student = stack(4), stack(2)
    >>> report = init_from_teacher(student, teacher)
    >>> len(report.copied), report.skipped
    (3, ())
    """
    student_layers, teacher_layers = _weighted_layers(student), _weighted_layers(teacher)
    if layer_map is None:
        pairs, skipped = _automatic_map(student_layers, teacher_layers)
    else:
        by_name = [
            {layer.name: layer for layer in layers} for layers in (student_layers, teacher_layers)
        ]
        skipped = []
        for role, names, layers in (
            ("student", list(layer_map), by_name[0]),
            ("teacher", list(layer_map.values()), by_name[1]),
        ):
            unknown = [name for name in names if name not in layers]
            if unknown:
                raise ValueError(
                    f"layer_map names {unknown}, which the {role} has not; its "
                    f"layers with weights are {sorted(layers)}."
                )
        pairs = [(by_name[0][s], by_name[1][t]) for s, t in layer_map.items()]
    for target, source in pairs:
        shapes = [tuple(w.shape) for w in target.weights], [tuple(w.shape) for w in source.weights]
        if shapes[0] != shapes[1]:
            raise ValueError(
                f"Student layer {target.name!r} has weights {shapes[0]}, teacher "
                f"layer {source.name!r} {shapes[1]}; they must match."
            )
        target.set_weights(source.get_weights())
    copied = {target.name for target, _ in pairs}
    skipped += [
        (layer.name, "not in layer_map")
        for layer in student_layers
        if layer_map is not None and layer.name not in copied
    ]
    order = {layer.name: i for i, layer in enumerate(student_layers)}
    return InitReport(
        tuple(sorted(((t.name, s.name) for t, s in pairs), key=lambda p: order[p[0]])),
        tuple(sorted(skipped, key=lambda p: order[p[0]])),
    )
