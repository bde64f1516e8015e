"""Calling a teacher for stored outputs: its output kind, its checked outputs, the record fields.

Shared by both writers (`label_with_teacher` and `kd.labelling.beam`):
`call_teacher` runs a Keras model or a callable on a batch and checks what it
returns; `record_fields` turns a batch into the fields of its records.
"""

from __future__ import annotations

import numpy as np

from keras_distill._src.labelling.errors import TeacherLabelsError
from keras_distill._src.labelling.manifest import Settings
from keras_distill._src.teachers.black_box import PROBE_EXAMPLES, outputs_digest
from keras_distill._src.teachers.outputs import check_finite, check_values, teacher_name
from keras_distill._src.utils.model_inspection import probability_outputs

OUTPUT_KINDS = ("logits", "probabilities", "scores", "labels", "sequences")


def _run(teacher, x: np.ndarray, kind: str, rows: int | None):
    import keras

    if isinstance(teacher, keras.Model):
        if rows is not None and len(x) < rows:  # one batch shape: the same floats on every path
            padding = np.zeros((rows - len(x),) + x.shape[1:], x.dtype)
            return np.asarray(teacher.predict_on_batch(np.concatenate([x, padding])))[
                : len(x)
            ], None
        return teacher.predict_on_batch(x), None
    outputs = teacher(x)
    if kind == "scores" and isinstance(outputs, tuple):
        return outputs
    return outputs, None


def call_teacher(teacher, x: np.ndarray, kind: str, start: int, rows: int | None = None):
    """Runs the teacher on a batch: (outputs, confidence or None) as NumPy, checked.

    A Keras teacher is called on `rows` rows (a shorter batch padded with
    zeros, the padding's outputs dropped): its floats can depend on the batch
    size, and both writers call it with their `batch_size` so that they store
    the same bytes whatever the batches they happen to form.

    Raises:
        TeacherLabelsError: For the wrong number of outputs or non-integer labels.
        TeacherOutputError: For NaN/inf (the examples named) or non-normalized
            probabilities (see `keras_distill._src.teachers.outputs`).

    Warns:
        When outputs stored as logits look like probabilities.
    """
    outputs, confidence = _run(teacher, x, kind, rows)
    outputs = np.asarray(outputs)
    where = f"examples {start}-{start + len(x) - 1}"
    if outputs.ndim == 0 or len(outputs) != len(x):
        raise TeacherLabelsError(
            f"The teacher returned {0 if outputs.ndim == 0 else len(outputs)} outputs for a "
            f"batch of {len(x)} inputs ({where}); it must return one output per input."
        )
    if kind == "labels":
        if not np.issubdtype(outputs.dtype, np.integer):
            raise TeacherLabelsError(
                f"output='labels' needs integer class ids; the teacher returned "
                f"{outputs.dtype} ({where})."
            )
        return outputs.astype("int32"), None
    if kind in ("logits", "probabilities"):
        check_values(outputs, teacher_name(teacher), kind == "probabilities", "output", start)
    else:
        check_finite(outputs, teacher_name(teacher), start)
    outputs = outputs.astype("float32")
    if confidence is not None:
        confidence = np.asarray(confidence, "float32").reshape(len(x))
    return outputs, confidence


def probe_of(teacher, x: np.ndarray, kind: str) -> str:
    """The digest of a callable teacher's outputs on the first `PROBE_EXAMPLES` examples of `x`."""
    outputs, _ = call_teacher(teacher, x[:PROBE_EXAMPLES], kind, 0)
    return outputs_digest(outputs[:PROBE_EXAMPLES])


def record_fields(x, labels, outputs, confidence, kind, settings: Settings) -> dict:
    """A batch's record fields: the inputs, the teacher's encoded outputs, the labels if known.

    Raises:
        TeacherLabelsError: If `settings.top_k` is not below the number of classes.
    """
    if settings.top_k is not None:
        check_top_k(settings.top_k, outputs.shape[-1])
    fields = {"x": x, **kind.encode(outputs, confidence, settings.to_json())}
    if labels is not None:
        fields["labels"] = np.asarray(labels).astype(kind.label_dtype)
    return fields


def teacher_facts(outputs: np.ndarray, kind, probe: bool) -> dict:
    """The probe digest (callables) and class count (class outputs), from the first batch."""
    facts = {"teacher_probe": outputs_digest(outputs[:PROBE_EXAMPLES])} if probe else {}
    if kind.classes_last:
        facts["teacher_classes"] = int(outputs.shape[-1])
    return facts


def output_kind(teacher, output: str | None) -> str:
    """`output`, or the default for the teacher: probabilities for a softmax Keras model."""
    if output is not None:
        return output
    import keras

    if isinstance(teacher, keras.Model) and probability_outputs(teacher, "auto", "teacher"):
        return "probabilities"
    return "logits"  # log-probabilities are logits too


def check_arguments(teacher, output, top_k, shard_size, batch_size) -> None:
    """Refuses an unknown output kind, top-k of non-class outputs, sizes < 1, a non-callable."""
    if output not in OUTPUT_KINDS:
        raise ValueError(f"`output` must be one of {OUTPUT_KINDS}; received {output!r}.")
    if top_k is not None and output not in ("logits", "probabilities"):
        raise ValueError(f"top_k applies to logits or probabilities, not output={output!r}.")
    if shard_size < 1 or batch_size < 1:
        raise ValueError(
            f"`shard_size` and `batch_size` must be >= 1; received {shard_size}, {batch_size}."
        )
    if not callable(teacher):
        raise TypeError(f"`teacher` must be a keras.Model or a callable; received {teacher!r}.")


def check_top_k(k: int, classes: int) -> None:
    """Refuses a top-k that is not between 1 and the class count minus one."""
    if not 0 < k < classes:
        raise TeacherLabelsError(
            f"top_k must be between 1 and {classes - 1} (the number of classes "
            f"minus one); received {k}."
        )
