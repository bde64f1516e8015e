"""The checks a `Distiller` makes on its teacher and student when it is constructed.

Each check raises (or warns) with what was wrong, what was expected and the
models' names, before anything trains.
"""

from __future__ import annotations

import warnings

import keras

from keras_distill._src.teachers import ensemble
from keras_distill._src.training import augment_checks
from keras_distill._src.utils.model_inspection import (
    check_compatible,
    probability_outputs,
    symbolic_outputs,
)


def _model_kind(model_class: type) -> str:
    return f"{model_class.__module__.split('.')[0]}.Model"


def check_types(teacher, student, model_class: type) -> None:
    """Raises TypeError unless both are models of `model_class` (the teacher may be None)."""
    for role, model in (("teacher", teacher), ("student", student)):
        optional = role == "teacher" and model is None
        if not isinstance(model, model_class) and not optional:
            raise TypeError(
                f"`{role}` must be a {_model_kind(model_class)}; received {type(model).__name__}."
            )


def check_student_not_among_teachers(teacher, student) -> None:
    """Raises ValueError if the student is the teacher or one of a list of teachers.

    Example:
    >>> student = keras.Sequential()
    >>> try:
    ...     check_student_not_among_teachers([keras.Sequential(), student], student)
    ... except ValueError as error:
    ...     print("teacher 1" in str(error))
    True
    """
    if teacher is student:
        raise ValueError(
            "`teacher` and `student` are the same model object; distillation "
            "needs a separate student (e.g. a smaller keras.Model)."
        )
    if isinstance(teacher, (list, tuple)):
        for index, model in enumerate(teacher):
            if model is student:
                raise ValueError(
                    f"The student {student.name!r} is also teacher {index} of the list of "
                    "teachers; the teachers are frozen and the student is trained, so a model "
                    "cannot be both. Pass the other teachers only."
                )


def warn_if_teacher_is_smaller(teacher, student) -> None:
    """Warns when the teacher has fewer parameters than the student (swapped arguments?)."""
    if teacher is None or not (teacher.built and student.built):
        return
    if teacher.count_params() < student.count_params():
        warnings.warn(
            f"The teacher {teacher.name!r} ({teacher.count_params():,} parameters) is smaller "
            f"than the student {student.name!r} ({student.count_params():,}). keras-distill "
            "takes (teacher, student); the keras.io example takes (student, teacher). Pass "
            "them by keyword, Distiller(teacher=..., student=...), to be sure.",
            stacklevel=5,
        )


def check_trainable(student) -> None:
    """Raises ValueError if the student has nothing to train."""
    if not student.trainable or (student.built and not student.trainable_weights):
        raise ValueError(
            f"The student {student.name!r} has no trainable weights "
            f"(student.trainable={student.trainable}); there is nothing to train."
        )


def _input_shapes(model) -> list | None:
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    return [tuple(t.shape[1:]) for t in keras.tree.flatten(inputs)] if inputs else None


def _differ(a: tuple, b: tuple) -> bool:
    return len(a) != len(b) or any(
        x is not None and y is not None and x != y for x, y in zip(a, b, strict=True)
    )


def check_input_shapes(teacher, student, teacher_inputs) -> None:
    """Raises ValueError if the teacher cannot take the student's inputs as they are.

    Only models with known inputs (Functional, built Sequential) are compared;
    with `teacher_inputs` the user adapts the batch, so nothing is compared.

    Example:
    >>> teacher = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten()])
    >>> student = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten()])
    >>> try:
    ...     check_input_shapes(teacher, student, None)
    ... except ValueError as error:
    ...     print("teacher_inputs=" in str(error))
    True
    """
    if teacher is None or teacher_inputs is not None:
        return
    teacher_shapes, student_shapes = _input_shapes(teacher), _input_shapes(student)
    if teacher_shapes is None or student_shapes is None:
        return
    if len(teacher_shapes) != len(student_shapes) or any(
        _differ(t, s) for t, s in zip(teacher_shapes, student_shapes, strict=True)
    ):
        raise ValueError(
            f"The teacher {teacher.name!r} takes inputs of shape {teacher_shapes} (without the "
            f"batch axis) but the student {student.name!r} takes {student_shapes}; both models "
            "see every batch. Pass Distiller(..., teacher_inputs=fn), where fn (a function or "
            "a Keras layer) turns the student's batch into the teacher's, e.g. "
            "teacher_inputs=lambda x: keras.ops.repeat(x, 3, axis=-1) for a grayscale "
            "student and an RGB teacher."
        )


def check_teacher_inputs(teacher_inputs, teacher) -> None:
    """Raises unless `teacher_inputs` is None or a callable, with a live teacher."""
    if teacher_inputs is None:
        return
    if not callable(teacher_inputs):
        raise TypeError(
            "`teacher_inputs` must be a function or a Keras layer from the student's batch "
            f"to the teacher's; received {teacher_inputs!r}."
        )
    if teacher is None:
        raise ValueError(
            "`teacher_inputs` adapts the batch for a live teacher; with teacher=None the "
            "stored outputs were computed already. Drop `teacher_inputs`."
        )


def warn_shared_layers(teacher, student) -> None:
    """Warns, naming the layers, when the student holds weights of the teacher.

    The teacher's weights are never trained, so such weights stay as they are.

    Example:
    >>> shared = keras.layers.Dense(2, name="shared")
    >>> teacher = keras.Sequential([keras.Input((2,)), shared])
    >>> student = keras.Sequential([keras.Input((2,)), shared, keras.layers.Dense(2)])
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_shared_layers(teacher, student)
    >>> "shared']" in str(caught[0].message)
    True
    """
    if teacher is None:
        return
    teacher_ids = {id(v) for v in teacher.weights}
    shared = [v for v in student.trainable_weights if id(v) in teacher_ids]
    if not shared:
        return
    paths = [getattr(v, "path", None) or v.name for v in shared]
    layers = sorted({path.rsplit("/", 1)[0] for path in paths})
    warnings.warn(
        f"The student {student.name!r} shares layers with the teacher {teacher.name!r}: "
        f"{layers}. The teacher is frozen, so these layers' weights will not be trained. "
        "Give the student its own layers (e.g. clone them with "
        "keras.models.clone_model) to train them.",
        stacklevel=5,
    )


def checked_teacher(teacher, student, model_class, teacher_weights, teacher_average):
    """The one teacher (an ensemble of a list), once teacher and student pass their checks."""
    check_student_not_among_teachers(teacher, student)
    teacher = ensemble.one_teacher(teacher, teacher_weights, teacher_average)
    check_types(teacher, student, model_class)
    warn_if_teacher_is_smaller(teacher, student)
    check_trainable(student)
    warn_shared_layers(teacher, student)
    return teacher


def check_inputs(teacher, student, augment, teacher_inputs) -> None:
    """What the models are fed: the teacher's input adapter and the augmentation.

    Example:
    >>> import keras
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> student = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    >>> check_inputs(teacher, student, None, None)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ...
    """
    check_teacher_inputs(teacher_inputs, teacher)
    check_input_shapes(teacher, student, teacher_inputs)
    augment_checks.check_augment(augment, teacher)
    augment_checks.warn_image_layers_on_signals(augment, student)


def output_kinds(teacher, student, teacher_output, student_output) -> tuple[bool, bool]:
    """(teacher's outputs are probabilities, student's are), once their outputs match.

    Example:
    >>> import keras
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, "softmax")])
    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> output_kinds(teacher, student, "auto", "auto")
    (True, False)
    """
    teacher_probabilities = teacher is not None and probability_outputs(
        teacher, teacher_output, "teacher"
    )
    student_probabilities = probability_outputs(student, student_output, "student")
    teacher_outputs = symbolic_outputs(teacher) if teacher is not None else None
    student_outputs = symbolic_outputs(student)
    if teacher_outputs and student_outputs:
        check_compatible(teacher_outputs, student_outputs, "at construction")
    return teacher_probabilities, student_probabilities
