"""Label data with a teacher once, in bulk; train students from the stored outputs.

`label_with_teacher` runs a Keras teacher or any Python callable (a black box,
e.g. a remote model behind an API) over arrays or a `tf.data` dataset and
writes the inputs, any hard labels and the teacher's outputs to TFRecord
shards with a JSON manifest. Runs are resumable: completed shards are never
rewritten, and a rerun continues after the last complete shard.
`load_teacher_labels` (`keras_distill.labelling.reader`) reads them back as a
`tf.data.Dataset` for `Distiller(teacher=None, ...).fit`.

Each element of the loaded dataset is `(x, targets)`, where `targets` is a
dict with the keys the `Distiller` understands:

- `"labels"` and `"label_mask"`: the hard label and 1.0, or a placeholder and
  0.0 for an unlabeled example (it then contributes only the distillation
  term);
- the teacher's output, by kind: `"teacher_logits"` (logits, or the log of
  stored probabilities), `"teacher_topk_values"`/`"teacher_topk_indices"`/
  `"teacher_rest_logsumexp"` (top-k), `"teacher_labels"`, or
  `"teacher_scores"` with optional `"teacher_confidence"`.

Stored outputs are only valid for the exact inputs they were computed on
("consistent teaching"): if your training pipeline augments the inputs, train
with the live teacher instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from keras_distill.labelling import responses, shards
from keras_distill.labelling.shards import TeacherLabelsError
from keras_distill.objective import stored_kinds as targets
from keras_distill.teachers.ensemble import ensemble
from keras_distill.utils import inputs
from keras_distill.utils.model_inspection import probability_outputs, weights_digest

OUTPUT_KINDS = ("logits", "probabilities", "scores", "labels", "sequences")
PROBE_EXAMPLES = 8  # a callable teacher's outputs on these first examples identify it


def _arrays_of(data):
    """(x, y or None) for array data; None for a `tf.data.Dataset`."""
    import tensorflow as tf

    if isinstance(data, tf.data.Dataset):
        return None
    x, y = inputs.unpack(data)
    if y is not None and len(y) != len(x):
        raise TeacherLabelsError(f"The inputs have {len(x)} examples but the labels have {len(y)}.")
    return x, y


def _worker_part(worker_index: int | None, num_workers: int | None) -> tuple[int, int]:
    """(index, count) from the arguments, else from TF_CONFIG, else (0, 1)."""
    if worker_index is None and num_workers is None and os.environ.get("TF_CONFIG"):
        config = json.loads(os.environ["TF_CONFIG"])
        cluster, task = config.get("cluster", {}), config.get("task", {})
        members = [("chief", i) for i in range(len(cluster.get("chief", [])))]
        members += [("worker", i) for i in range(len(cluster.get("worker", [])))]
        me = (task.get("type"), task.get("index", 0))
        if me in members:
            worker_index, num_workers = members.index(me), len(members)
    worker_index = 0 if worker_index is None else worker_index
    num_workers = 1 if num_workers is None else num_workers
    if not 0 <= worker_index < num_workers:
        raise ValueError(
            f"`worker_index` must be in [0, num_workers); received worker_index={worker_index}, "
            f"num_workers={num_workers}."
        )
    return worker_index, num_workers


def fingerprint_teacher(teacher, teacher_id: str | None) -> str:
    """What the manifest records of a teacher: its id, its weights, or its name.

    Example:
    >>> fingerprint_teacher(len, "api-v1")
    'id:api-v1'
    """
    import keras

    if teacher_id is not None:
        return f"id:{teacher_id}"
    if isinstance(teacher, keras.Model):
        return f"keras:{teacher.name}:{weights_digest(teacher)}"
    if hasattr(teacher, "teacher_id"):  # e.g. keras_distill.teachers.generation.keras_generator's
        return f"id:{teacher.teacher_id}"
    name = getattr(teacher, "__qualname__", type(teacher).__qualname__)
    return f"callable:{getattr(teacher, '__module__', '')}.{name}"


def _fingerprint_arrays(*arrays) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        if array is not None:
            digest.update(str((array.shape, array.dtype)).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def call_teacher(teacher, x: np.ndarray, kind: str, start: int):
    """Runs the teacher on a batch: (outputs, confidence or None) as NumPy, checked.

    Raises:
        TeacherLabelsError: For the wrong number of outputs, NaN/inf, non-integer
            labels or non-normalized probabilities (the examples named).

    Example:
    >>> call_teacher(lambda b: b * 2, np.ones((2, 3), "float32"), "logits", 0)[0].shape
    (2, 3)
    """
    import keras

    if isinstance(teacher, keras.Model):
        outputs, confidence = teacher.predict_on_batch(x), None
    else:
        outputs = teacher(x)
        confidence = None
        if kind == "scores" and isinstance(outputs, tuple):
            outputs, confidence = outputs
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
    outputs = outputs.astype("float32")
    if not np.all(np.isfinite(outputs)):
        bad = np.unique(np.nonzero(~np.isfinite(outputs.reshape(len(x), -1)))[0]) + start
        raise TeacherLabelsError(
            f"The teacher returned NaN or infinite values for examples {bad[:10].tolist()}; "
            "nothing of this batch was stored."
        )
    if kind == "probabilities":
        sums = outputs.sum(-1)
        if np.any(outputs < 0) or not np.allclose(sums, 1.0, atol=1e-3):
            raise TeacherLabelsError(
                f"output='probabilities' needs non-negative values that sum to 1 over the "
                f"last axis; sums range {sums.min():.4g}..{sums.max():.4g} ({where}). Use "
                "output='logits' for unnormalized scores."
            )
    if confidence is not None:
        confidence = np.asarray(confidence, "float32").reshape(len(x))
    return outputs, confidence


def label_with_teacher(
    teacher: Callable[[np.ndarray], Any],
    data,
    path: str | os.PathLike,
    *,
    top_k: int | None = None,
    batch_size: int = 256,
    output: str | None = None,
    shard_size: int = 10_000,
    teacher_id: str | None = None,
    worker_index: int | None = None,
    num_workers: int | None = None,
    verbose: int = 1,
    **sequence_options,
) -> dict:
    """Runs a teacher over data once and stores its outputs as TFRecord shards.

    Args:
        teacher: A `keras.Model`, or any callable mapping a NumPy batch of
            inputs to a batch of outputs (a black box). For `output="scores"`
            it may return `(scores, confidence)`. A list of Keras models is
            stored as their ensemble (`keras_distill.teachers.ensemble.ensemble`, equal
            weights): the logits of their averaged probabilities (at T = 1).
        data: Inputs `x`, a tuple `(x, y)` of arrays, or a `tf.data.Dataset`
            of batches `x` or `(x, y)` (as for `fit`; it must be deterministic
            to be resumable).
        path: Directory for the shards and `manifest.json`.
        top_k: Store only the `top_k` largest logits/probabilities per
            position and their class indices, plus the log-sum-exp of the rest
            (see `keras_distill.losses.top_k_logits`).
        batch_size: Examples per teacher call (for array data).
        output: `"logits"`, `"probabilities"`, `"scores"` (regression targets
            or ratings), `"labels"` (class ids) or `"sequences"` (generated
            responses: `teacher` is `generate(prompts) -> responses` or
            `(responses, scores)`, `data` the prompts; see
            `keras_distill.labelling.responses`). By default `"logits"`, or
            `"probabilities"` for a Keras teacher that ends in a softmax.
        shard_size: Examples per shard; a killed run loses at most one shard.
        teacher_id: A string identifying a callable teacher's version (e.g. a
            model name and date); a resume with a different id is refused.
            Keras teachers are identified by their weights.
        worker_index: This worker's part, for labelling on several machines
            into one directory: each labels a disjoint, deterministic part
            (a contiguous range of array data; `dataset.shard` of a dataset)
            into its own shards and `manifest-part-I-of-N.json`.
        num_workers: Number of parts. Both default to the `TF_CONFIG`
            cluster (chief first, then workers), else to one part.
        verbose: 1 shows a progress bar with throughput.
        **sequence_options: For `output="sequences"` only: `vocabulary_size`,
            `max_length` (prompt + response tokens), `pad_id` (0),
            `num_samples` (responses per prompt, 1), `score` (a grader
            `score(prompt, response) -> float`) and `tokenizer` (for string
            prompts); see `keras_distill.labelling.responses.SequenceOptions`.

    Returns:
        The manifest (also written to `path/manifest.json`, or to this
        worker's part manifest).

    Raises:
        TeacherLabelsError: If the teacher returns the wrong number of outputs,
            NaN/inf, non-integer labels or non-normalized probabilities; if
            `path` holds outputs of another teacher, data or settings.
        ValueError: If `output` or `top_k` is invalid.

    Example:
    >>> import tempfile
    >>> x = np.random.rand(100, 4).astype("float32")
    >>> manifest = label_with_teacher(lambda b: b @ np.ones((4, 3)), x,
    ...                               tempfile.mkdtemp(), shard_size=40, verbose=0)
    >>> manifest["num_examples"], len(manifest["shards"])
    (100, 3)
    """
    teacher = ensemble(teacher) if isinstance(teacher, (list, tuple)) else teacher
    output = output_kind(teacher, output)
    check_arguments(teacher, output, top_k, shard_size, batch_size)
    if output == "sequences":
        return responses.label_sequences(
            teacher,
            data,
            path,
            options=responses.SequenceOptions(**sequence_options),
            teacher_id=fingerprint_teacher(teacher, teacher_id),
            batch_size=batch_size,
            shard_size=shard_size,
            verbose=verbose,
        )
    if sequence_options:
        raise TypeError(
            f"{sorted(sequence_options)} apply to output='sequences' only; "
            f"received output={output!r}."
        )
    worker_index, num_workers = _worker_part(worker_index, num_workers)
    plan = _plan(data, worker_index, num_workers)
    first = next(iter(_batches(data, plan, 0, PROBE_EXAMPLES, worker_index, num_workers)), None)
    if first is None or len(inputs.unpack(first)[0]) == 0:
        raise TeacherLabelsError(
            "The data to label is empty (this worker's part has no example); nothing was written."
        )
    settings = {
        "teacher": fingerprint_teacher(teacher, teacher_id),
        "data": plan.data_id,
        "output": output,
        "top_k": top_k,
        "shard_size": shard_size,
        "num_workers": num_workers,
    }
    writer = shards.ShardWriter(pathlib.Path(path), settings, worker_index)
    if writer.manifest.get("complete"):
        return writer.manifest
    kind = targets.stored_kind(output, top_k)
    if plan.arrays is None:
        _check_resumed_data(data, writer, kind, worker_index, num_workers)
    probe = not _is_keras_model(teacher)  # a callable is identified by what it answers, too
    if probe and "teacher_probe" in writer.manifest:
        outputs, _ = call_teacher(teacher, inputs.unpack(first)[0], output, 0)
        _check_probe(writer, outputs, teacher_id)
    batches = _batches(data, plan, writer.done, batch_size, worker_index, num_workers)
    return _label_batches(
        teacher, batches, writer, kind, settings, probe, _progress_bar(plan.total, verbose)
    )


def _label_batches(teacher, batches, writer, kind, settings: dict, probe: bool, progress) -> dict:
    """Runs the teacher over the remaining batches into the writer; the finished manifest."""
    output = settings["output"]
    progress.update(writer.done)
    started, position = time.perf_counter(), writer.done
    for batch in batches:
        x, y = inputs.unpack(batch)
        outputs, confidence = call_teacher(teacher, x, output, position)
        if position == 0:  # what the manifest says of the teacher
            writer.manifest.update(teacher_facts(outputs, kind, probe))
        writer.add(record_fields(x, y, outputs, confidence, kind, settings))
        position += len(x)
        rate = (position - writer.done) / max(time.perf_counter() - started, 1e-9)
        progress.update(position, values=[("examples/s", rate)])
    return writer.finish(position)


def record_fields(x, labels, outputs, confidence, kind, settings: dict) -> dict:
    """A batch's record fields: the inputs, the teacher's encoded outputs, the labels if known.

    Shared by both writers (`label_with_teacher` and `keras_distill.labelling.beam`).

    Raises:
        ValueError: If `settings["top_k"]` is not below the number of classes.

    Example:
    >>> fields = record_fields(np.zeros((2, 4)), np.array([0, 1]), np.zeros((2, 3)), None,
    ...                        targets.KINDS["logits"], {"top_k": None})
    >>> sorted(fields)
    ['labels', 'teacher', 'x']
    """
    if settings["top_k"] is not None:
        check_top_k(settings["top_k"], outputs.shape[-1])
    fields = {"x": x, **kind.encode(outputs, confidence, settings)}
    if labels is not None:
        fields["labels"] = np.asarray(labels).astype(kind.label_dtype)
    return fields


def teacher_facts(outputs: np.ndarray, kind, probe: bool) -> dict:
    """The probe digest (callables) and class count (class outputs), from the first batch.

    Example:
    >>> teacher_facts(np.zeros((2, 3)), targets.KINDS["logits"], probe=False)
    {'teacher_classes': 3}
    """
    facts = {"teacher_probe": _outputs_digest(outputs[:PROBE_EXAMPLES])} if probe else {}
    if kind.classes_last:
        facts["teacher_classes"] = int(outputs.shape[-1])
    return facts


def _is_keras_model(teacher) -> bool:
    import keras

    return isinstance(teacher, keras.Model)


def _outputs_digest(outputs: np.ndarray) -> str:
    """A hash of a callable teacher's outputs on the first examples (rounded: 4 decimals)."""
    values = np.round(outputs.astype("float64"), 4) if outputs.dtype.kind == "f" else outputs
    return hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()[:16]


def _check_probe(writer, outputs: np.ndarray, teacher_id: str | None) -> None:
    if _outputs_digest(outputs[:PROBE_EXAMPLES]) != writer.manifest["teacher_probe"]:
        named = f" (teacher_id={teacher_id!r} is the same)" if teacher_id else ""
        raise TeacherLabelsError(
            f"This teacher answers differently on the first {PROBE_EXAMPLES} examples than the "
            f"one whose outputs are stored in {str(writer.directory)!r}{named}; refusing to "
            "mix two teachers' outputs. Use a new directory (or a new teacher_id for a new "
            "teacher version). Nothing was changed."
        )


def _check_resumed_data(data, writer, kind, worker_index: int, num_workers: int) -> None:
    """Refuses to resume over a dataset whose first examples are not the ones labelled."""
    examples = data.unbatch()
    if num_workers > 1:
        examples = examples.shard(num_workers, worker_index)
    stream = examples.take(writer.done).as_numpy_iterator()
    for index, shard in enumerate(writer.manifest["shards"]):
        records = []
        for _ in range(shard["examples"]):
            x, y = inputs.unpack(next(stream, (np.zeros(0),)))
            records.append({"x": x, "labels": None if y is None else y.astype(kind.label_dtype)})
        if shard.get("data_sha256") not in (None, shards.data_digest(records)):
            raise TeacherLabelsError(
                f"The dataset differs from the one whose first {writer.done} examples are "
                f"labelled in {str(writer.directory)!r} (shard {index} holds other examples); "
                "refusing to mix them. Use a new directory, or pass the same dataset in the "
                "same order. Nothing was changed."
            )


def _progress_bar(total: int | None, verbose: int):
    import keras

    return keras.utils.Progbar(total, unit_name="example", verbose=verbose)


def output_kind(teacher, output: str | None) -> str:
    """`output`, or the default for the teacher: probabilities for a softmax Keras model.

    Example:
    >>> output_kind(len, None)
    'logits'
    """
    if output is not None:
        return output
    import keras

    if isinstance(teacher, keras.Model) and probability_outputs(teacher, "auto", "teacher"):
        return "probabilities"
    return "logits"


def check_arguments(teacher, output, top_k, shard_size, batch_size) -> None:
    """Refuses an unknown output kind, top-k of non-class outputs, sizes < 1, a non-callable.

    Example:
    >>> check_arguments(len, "logits", None, 10, 10) is None
    True
    """
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
    """Refuses a top-k that is not between 1 and the class count minus one.

    Example:
    >>> check_top_k(2, 10) is None
    True
    """
    if not 0 < k < classes:
        raise TeacherLabelsError(
            f"top_k must be between 1 and {classes - 1} (the number of classes "
            f"minus one); received {k}."
        )


class _Plan(NamedTuple):
    arrays: tuple | None  # this worker's (x, y) for array data, None for a dataset
    data_id: str
    total: int | None


def _plan(data, worker_index: int, num_workers: int) -> _Plan:
    """This worker's part of the data and the data's fingerprint."""
    arrays = _arrays_of(data)
    if arrays is None:
        return _Plan(None, f"dataset:{data.element_spec}", None)
    size = len(arrays[0])
    start, stop = size * worker_index // num_workers, size * (worker_index + 1) // num_workers
    part = tuple(None if a is None else a[start:stop] for a in arrays)
    return _Plan(part, f"arrays:{_fingerprint_arrays(*arrays)}", stop - start)


def _batches(data, plan: _Plan, done: int, batch_size: int, worker_index: int, num_workers: int):
    """Batches of this worker's examples, from example `done` on."""
    if plan.arrays is None:
        examples = data.unbatch()
        if num_workers > 1:
            examples = examples.shard(num_workers, worker_index)
        return examples.skip(done).batch(batch_size).as_numpy_iterator()
    x_all, y_all = plan.arrays
    return (
        (x_all[i : i + batch_size],) + (() if y_all is None else (y_all[i : i + batch_size],))
        for i in range(done, len(x_all), batch_size)
    )
