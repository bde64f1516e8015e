"""Teacher outputs computed once per `fit` for inputs that are in memory.

With NumPy (or tensor) inputs and no `augment`, a live teacher would give the
same outputs for the same inputs at every epoch (it runs in inference mode).
`Distiller.fit` therefore runs it once, in one batched pass before the first
epoch, and passes its logits next to the labels as stored teacher outputs
(`"teacher_logits"`, `keras_distill._src.objective.stored_kinds`), so every epoch costs about a
plain student epoch. The outputs live for that `fit` call only, so a later
`fit` with other data or a changed teacher never sees stale ones.

It is skipped (the teacher runs live, as before) for `tf.data` or generator
input (its order and content may change each epoch), with `augment` (every
view is new), with `class_weight` or per-position sample weights (Keras needs plain labels
for them),
multi-output teachers, and outputs larger than the budget (a sequence model's
logits can be: store top-k with `label_with_teacher` instead).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keras_distill._src.objective import stored_kinds
from keras_distill._src.teachers.ensemble import combiner
from keras_distill._src.teachers.outputs import check_values
from keras_distill._src.utils.console import print_msg
from keras_distill._src.utils.model_inspection import as_logits, symbolic_outputs

SETTINGS = ("auto", True, False)
DEFAULT_BUDGET_BYTES = 1 << 30
PREDICT_BATCH_SIZE = 1024


def check_setting(setting) -> None:
    """Raises ValueError unless `setting` is "auto", True, False or a byte budget."""
    if isinstance(setting, bool) or setting == "auto":
        return
    if isinstance(setting, int) and setting > 0:
        return
    raise ValueError(
        "`cache_teacher_outputs` must be 'auto', True, False or a positive number of bytes "
        f"(the budget of 'auto'); received {setting!r}."
    )


def _in_memory(x) -> bool:
    leaves = keras.tree.flatten(x)
    return bool(leaves) and all(isinstance(v, np.ndarray) or tf.is_tensor(v) for v in leaves)


def _reason_not_to_cache(distiller, arguments) -> str | None:
    """Why the teacher must run live in this `fit` call, or None."""
    x, y = arguments.get("x"), arguments.get("y")
    if distiller.teacher is None:
        return "no teacher"
    if distiller.augment is not None:
        return "`augment` makes new views every step"
    combine = combiner(distiller.teacher)
    if combine is not None and combine.average == "probabilities":
        return "an ensemble's averaged probabilities depend on the temperature, which may change"
    if distiller.uses_feature_terms:
        return "feature terms need the teacher's intermediate outputs at every step"
    if not _in_memory(x):
        return "the inputs are not arrays in memory (a tf.data dataset is never cached)"
    if len(keras.tree.flatten(x)[0]) == 0:
        return "the inputs hold no examples"
    if arguments.get("class_weight") is not None:
        return "`class_weight` needs plain labels"
    weights = arguments.get("sample_weight")
    if weights is not None and np.ndim(weights) > 1:
        return "per-position sample weights need plain labels"
    if isinstance(y, dict) and not set(y) <= stored_kinds.TARGET_KEYS:
        return "the targets are a dict of several outputs"
    if stored_kinds.read_targets(y).stored:
        return "the targets already hold teacher outputs"
    if not (distiller.teacher.built and distiller.student.built):
        return "the models are not built yet (their outputs are checked in the first step)"
    outputs = symbolic_outputs(distiller.teacher)
    if outputs is None:  # a subclassed teacher: ask it about one example
        outputs = distiller.teacher.predict(keras.tree.map_structure(lambda v: v[:1], x), verbose=0)
    if len(keras.tree.flatten(outputs)) != 1:
        return "the teacher has several outputs"
    shape = tuple(keras.tree.flatten(outputs)[0].shape[1:])
    size = 4 * len(keras.tree.flatten(x)[0]) * int(np.prod([d or 1 for d in shape]))
    setting = distiller.cache_teacher_outputs
    budget = setting if not isinstance(setting, bool) and isinstance(setting, int) else None
    if setting != True and size > (budget or DEFAULT_BUDGET_BYTES):  # noqa: E712
        return (
            f"the teacher's outputs would take {size / 2**20:,.0f} MiB (over the budget); store "
            "top-k outputs with label_with_teacher, or pass cache_teacher_outputs=True"
        )
    return None


def _rows(x, start: int, stop: int):
    return keras.tree.map_structure(lambda v: v[start:stop], x)


def _teacher_view(distiller, x):
    """The inputs as the teacher takes them (`teacher_inputs` applied batch by batch)."""
    if distiller.teacher_inputs is None:
        return x
    count = len(keras.tree.flatten(x)[0])
    views = [
        distiller.teacher_view(_rows(x, start, start + PREDICT_BATCH_SIZE))
        for start in range(0, count, PREDICT_BATCH_SIZE)
    ]
    return keras.tree.map_structure(
        lambda *parts: np.concatenate([keras.ops.convert_to_numpy(p) for p in parts]), *views
    )


def _teacher_logits(distiller, x, verbose) -> np.ndarray:
    predicted = distiller.teacher.predict(
        _teacher_view(distiller, x), batch_size=PREDICT_BATCH_SIZE, verbose=verbose
    )
    probabilities = distiller.teacher_outputs_are_probabilities
    check_values(predicted, distiller.teacher.name, probabilities, "teacher_output")
    return keras.ops.convert_to_numpy(as_logits(predicted, probabilities))


def _with_teacher_outputs(y, logits) -> dict:
    if isinstance(y, dict):
        return {**y, "teacher_logits": logits}
    return {"teacher_logits": logits} if y is None else {"labels": y, "teacher_logits": logits}


def cached_arguments(distiller, arguments: dict) -> dict:
    """The `fit` arguments to change so that the teacher's outputs come with the targets.

    Args:
        distiller: The `Distiller` whose `fit` is called.
        arguments: `fit`'s bound arguments (`x`, `y`, `validation_data`, ...).

    Returns:
        The arguments to replace (`y`, `validation_data`), or `{}` when the
        teacher runs live; a one-line reason is printed at `verbose`.

    Raises:
        ValueError: If `cache_teacher_outputs=True` but the outputs cannot be cached.
    """
    setting = distiller.cache_teacher_outputs
    if setting is False:
        return {}
    verbose = arguments.get("verbose", "auto")
    verbose = 1 if verbose == "auto" else verbose
    reason = _reason_not_to_cache(distiller, arguments)
    if reason is not None:
        if setting is True:
            raise ValueError(
                f"cache_teacher_outputs=True, but the outputs cannot be cached: {reason}."
            )
        if verbose and reason != "no teacher":
            print_msg(f"Teacher outputs not cached ({reason}); the teacher runs live.")
        return {}
    if verbose:
        print_msg("Computing the teacher's outputs once for this fit (in memory).")
    changed = {
        "y": _with_teacher_outputs(
            arguments.get("y"), _teacher_logits(distiller, arguments["x"], verbose)
        )
    }
    validation = arguments.get("validation_data")
    if isinstance(validation, tuple) and _in_memory(validation[0]) and len(validation) >= 2:
        logits = _teacher_logits(distiller, validation[0], 0)
        changed["validation_data"] = (
            validation[0],
            _with_teacher_outputs(validation[1], logits),
            *validation[2:],
        )
    return changed
