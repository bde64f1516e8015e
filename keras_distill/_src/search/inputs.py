"""The checked inputs of a search (teachers, data) and what identifies a search."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from keras_distill._src.studies import input_checks
from keras_distill._src.studies.datasets import Split
from keras_distill._src.teachers.black_box import fingerprint_arrays, fingerprint_teacher
from keras_distill._src.utils.inputs import collect


@dataclasses.dataclass(frozen=True)
class SearchInputs:
    """Teachers by name, the data as arrays (validation as `test`), the number of classes."""

    teachers: dict
    split: Split
    num_classes: int


def checked_inputs(teachers, train_data, validation_data, trials, epochs, batch_size):
    """Checks and normalises `find_student`'s teachers, data and counts.

    Raises:
        ValueError: Naming what is wrong, before anything is trained or written.
    """
    for name, value in (("trials", trials), ("epochs", epochs), ("batch_size", batch_size)):
        input_checks.positive_int(name, value)
    if validation_data is None:
        raise ValueError(
            "`validation_data` is required: the front is measured on it (int8 accuracy in "
            "TFLite Micro). Hold out part of the training data, e.g. 20%."
        )
    x, y = _arrays(train_data, "train_data")
    x_val, y_val = _arrays(validation_data, "validation_data")
    if x.shape[1:] != x_val.shape[1:]:
        raise ValueError(
            f"The training examples have shape {x.shape[1:]} but the validation examples "
            f"{x_val.shape[1:]}."
        )
    named = _named(teachers)
    num_classes = _classes(named, max(int(y.max()), int(y_val.max())) + 1)
    return SearchInputs(named, Split(x, y, x_val, y_val), num_classes)


def _arrays(data, name: str) -> tuple:
    x, y = collect(data)
    if y is None or len(x) == 0:
        raise ValueError(
            f"`{name}` must hold examples with integer labels: `(x, y)` arrays or a "
            f"tf.data.Dataset of `(x, y)` batches; received {len(x)} examples"
            f"{'' if y is not None else ' without labels'}."
        )
    input_checks.check_labels(x, y, f"labels of `{name}`")
    y = np.asarray(y).reshape(-1)
    return np.asarray(x, "float32"), y.astype("int32")


def _named(teachers) -> dict:
    if isinstance(teachers, keras.Model):
        teachers = [teachers]
    if isinstance(teachers, (list, tuple)):
        names = [t.name if isinstance(t, keras.Model) else str(i) for i, t in enumerate(teachers)]
        if len(set(names)) < len(names):
            names = [f"{name}_{i}" for i, name in enumerate(names)]
        teachers = dict(zip(names, teachers, strict=True))
    if not isinstance(teachers, dict) or not teachers:
        raise ValueError(
            "`teachers` must be a keras.Model, or a non-empty list or dict (name -> model) "
            f"of them; received {teachers!r}."
        )
    for name, teacher in teachers.items():
        if not isinstance(teacher, keras.Model):
            raise ValueError(f"Teacher {name!r} is {teacher!r}, not a keras.Model.")
    return {str(name): teacher for name, teacher in teachers.items()}


def _classes(teachers: dict, label_classes: int) -> int:
    widths = {name: int(teacher.outputs[0].shape[-1]) for name, teacher in teachers.items()}
    for name, width in widths.items():
        if width != label_classes:
            raise ValueError(
                f"Teacher {name!r} outputs {width} classes, but the labels have "
                f"{label_classes} (0 to {label_classes - 1}). Every teacher must classify "
                "the labels' classes."
            )
    return label_classes


def identity(inputs: SearchInputs, budget, space, augment, settings: dict) -> dict:
    """What a stored search is of: data, teachers, budget and settings (JSON-ready).

    The settings hold the space's recipe options: a rerun that would choose
    among other ones (e.g. quantization-aware training) is another search.
    """
    split = inputs.split
    return {
        "data": fingerprint_arrays(split.x_train, split.y_train, split.x_test, split.y_test),
        "teachers": {name: fingerprint_teacher(t, None) for name, t in inputs.teachers.items()},
        "budget": {**dataclasses.asdict(budget), "given": list(budget.given)},  # as JSON holds it
        "settings": {
            **settings,
            "space": space.name,
            "recipe options": space.recipe_options(),
            "augment": None if augment is None else type(augment).__name__,
        },
    }
