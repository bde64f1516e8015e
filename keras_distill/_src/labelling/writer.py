"""Label data with a teacher once, in bulk; train students from the stored outputs.

`label_with_teacher` runs a Keras teacher or any Python callable (a black box,
e.g. a remote model behind an API) over arrays or a `tf.data` dataset and
writes the inputs, any hard labels and the teacher's outputs to TFRecord
shards with a JSON manifest. Runs are resumable: completed shards are never
rewritten, and a rerun continues after the last complete shard.
`load_teacher_labels` (`keras_distill._src.labelling.reader`) reads them back as a
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

import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from keras_distill._src.labelling import arguments, calls, response_writer, worker_parts
from keras_distill._src.labelling.errors import TeacherLabelsError
from keras_distill._src.labelling.identity import Identity, examples_identity, opened_output
from keras_distill._src.labelling.manifest import Manifest, Settings
from keras_distill._src.labelling.responses import SequenceOptions
from keras_distill._src.labelling.shards import ShardWriter
from keras_distill._src.objective.stored_kinds import stored_kind
from keras_distill._src.teachers.black_box import PROBE_EXAMPLES, fingerprint_teacher
from keras_distill._src.teachers.ensemble import ensemble
from keras_distill._src.utils import inputs, storage


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
    overwrite: bool = False,
    **sequence_options,
) -> dict:
    """Runs a teacher over data once and stores its outputs as TFRecord shards.

    Args:
        teacher: A `keras.Model`, or any callable mapping a NumPy batch of
            inputs to a batch of outputs (a black box). For `output="scores"`
            it may return `(scores, confidence)`. A list of Keras models is
            stored as their ensemble (`kd.teachers.ensemble`, equal
            weights): the logits of their averaged probabilities (at T = 1).
        data: Inputs `x`, a tuple `(x, y)` of arrays, or a `tf.data.Dataset`
            of batches `x` or `(x, y)` (as for `fit`; it must be deterministic
            to be resumable).
        path: Directory for the shards and `manifest.json`: a local path, or
            a URL of a file system registered with TensorFlow (`ram://...`,
            `gs://...`; `s3://`, `hdfs://` with `tensorflow-io`).
        top_k: Store only the `top_k` largest logits/probabilities per
            position and their class indices, plus the log-sum-exp of the rest
            (the losses then compare teacher and student on those `k` classes
            and one bucket for all the others).
        batch_size: Examples per teacher call (for array data).
        output: `"logits"`, `"probabilities"`, `"scores"` (regression targets
            or ratings) or `"labels"` (class ids). By default `"logits"`, or
            `"probabilities"` for a Keras teacher that ends in a softmax.
            `"sequences"` (generated responses) is deprecated: use
            `kd.labelling.label_responses`, to which it is passed on.
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
        overwrite: Relabel into `path` even if it holds outputs of another
            teacher, data or settings, or a complete run: the old shards and
            manifest of this part are deleted first. By default such outputs
            are refused (a complete run of the same identity is returned as is).
        **sequence_options: For the deprecated `output="sequences"` only:
            the fields of `kd.labelling.SequenceOptions`.

    Returns:
        The manifest (also written to `path/manifest.json`, or to this
        worker's part manifest).

    Raises:
        TeacherLabelsError: If the teacher returns the wrong number of outputs,
            NaN/inf, non-integer labels or non-normalized probabilities; if
            `path` holds outputs of another teacher, data or settings (both
            named) and not `overwrite`; if another process is writing into
            `path` (its lock file names it); if `path`'s file system is not
            installed.
        ValueError: For an argument of the wrong type or range (named, with
            the value received), or an unknown `output`.

    Example:
    >>> import tempfile
    >>> x = np.random.rand(100, 4).astype("float32")
    >>> manifest = label_with_teacher(lambda b: b @ np.ones((4, 3)), x,
    ...                               tempfile.mkdtemp(), shard_size=40, verbose=0)
    >>> manifest["num_examples"], len(manifest["shards"])
    (100, 3)
    """
    teacher = ensemble(teacher) if isinstance(teacher, (list, tuple)) else teacher
    output = calls.output_kind(teacher, output)
    _check_arguments(
        output, top_k, (batch_size, shard_size), teacher_id, overwrite, sequence_options
    )
    calls.check_arguments(teacher, output, top_k, shard_size, batch_size)
    directory = storage.check_path(path, TeacherLabelsError)
    if output == "sequences":
        return _label_responses(
            teacher,
            data,
            directory,
            SequenceOptions(**sequence_options),
            dict(
                batch_size=batch_size, shard_size=shard_size, teacher_id=teacher_id, verbose=verbose
            ),
            dict(worker_index=worker_index, num_workers=num_workers, overwrite=overwrite),
        )
    part = worker_parts.plan(data, *worker_parts.worker_part(worker_index, num_workers))
    fingerprint = fingerprint_teacher(teacher, teacher_id)
    settings = Settings(fingerprint, part.data_id, output, top_k, shard_size, part.num_workers)
    identity = _identity(teacher, data, part, settings, teacher_id)
    with opened_output(directory, identity, part.worker_index, overwrite) as stored:
        manifest = stored or Manifest(settings, part.worker_index)
        return _label(teacher, data, part, ShardWriter(directory, manifest), batch_size, verbose)


def _label_responses(generate, prompts, directory: str, options, *keywords: dict) -> dict:
    """The deprecated `output="sequences"`: `label_responses`, with a `DeprecationWarning`."""
    warnings.warn(
        "label_with_teacher(generate, prompts, path, output='sequences', ...) is deprecated "
        "and goes in the next release; use kd.labelling.label_responses(generate, prompts, "
        "path, options=kd.labelling.SequenceOptions(vocabulary_size=..., max_length=...)).",
        DeprecationWarning,
        stacklevel=3,
    )
    run = {name: value for part in keywords for name, value in part.items()}
    return response_writer.label_responses(generate, prompts, directory, options=options, **run)


def _check_arguments(output, top_k, sizes, teacher_id, overwrite, sequence_options) -> None:
    """Refuses an argument of the wrong type or range, naming it (before the teacher runs)."""
    arguments.positive_int("top_k", top_k, allow_none=True)
    arguments.positive_int("batch_size", sizes[0])
    arguments.positive_int("shard_size", sizes[1])
    if teacher_id is not None and not isinstance(teacher_id, str):
        raise ValueError(f"`teacher_id` must be a string or None; received {teacher_id!r}.")
    arguments.flag("overwrite", overwrite)
    if sequence_options and output != "sequences":
        raise TypeError(
            f"{sorted(sequence_options)} apply to output='sequences' only; "
            f"received output={output!r}."
        )


def _first_inputs(data, part: worker_parts.Plan) -> np.ndarray:
    """The first examples' inputs of this worker's part; refuses an empty part."""
    first = next(iter(worker_parts.batches(data, part, 0, PROBE_EXAMPLES)), None)
    if first is None or len(inputs.unpack(first)[0]) == 0:
        raise TeacherLabelsError(
            "The data to label is empty (this worker's part has no example); nothing was written."
        )
    return inputs.unpack(first)[0]


def _is_keras_model(teacher) -> bool:
    import keras

    return isinstance(teacher, keras.Model)


def _identity(teacher, data, part: worker_parts.Plan, settings: Settings, teacher_id) -> Identity:
    """The run's identity: a callable teacher is also identified by what it answers."""
    first = _first_inputs(data, part)
    check_data = None
    if part.arrays is None:  # a dataset: its examples are compared with the stored shards'
        label_dtype = stored_kind(settings.output, settings.top_k).label_dtype

        def check_data(stored: Manifest, directory: str) -> None:
            worker_parts.check_resumed_data(data, part, stored, label_dtype, directory)

    return examples_identity(teacher, settings, first, teacher_id, check_data)


def _label(teacher, data, part, writer: ShardWriter, batch_size: int, verbose: int) -> dict:
    """Labels what remains of this worker's part (nothing if complete); the manifest's JSON form."""
    if writer.manifest.complete:
        return writer.manifest.to_json()
    settings = writer.manifest.settings
    kind = stored_kind(settings.output, settings.top_k)
    remaining = worker_parts.batches(data, part, writer.done, batch_size)
    probe = not _is_keras_model(teacher)  # a callable is identified by what it answers, too
    progress = _progress_bar(part, verbose)
    return _label_batches(teacher, remaining, writer, (kind, batch_size), probe, progress)


def _label_batches(teacher, batches, writer: ShardWriter, batching, probe: bool, progress) -> dict:
    """Runs the teacher over the remaining batches into the writer; the finished manifest.

    `batching` is `(stored kind, batch size)`: a Keras teacher is always called
    on `batch size` rows.
    """
    (kind, batch_size), settings = batching, writer.manifest.settings
    progress.update(writer.done)
    started, position = time.perf_counter(), writer.done
    for batch in batches:
        x, y = inputs.unpack(batch)
        outputs, confidence = calls.call_teacher(
            teacher, x, settings.output, position, rows=batch_size
        )
        if position == 0:  # what the manifest says of the teacher
            writer.manifest.facts.update(calls.teacher_facts(outputs, kind, probe))
        writer.add(calls.record_fields(x, y, outputs, confidence, kind, settings))
        position += len(x)
        rate = (position - writer.done) / max(time.perf_counter() - started, 1e-9)
        progress.update(position, values=[("examples/s", rate)])
    return writer.finish(position).to_json()


def _progress_bar(part: worker_parts.Plan, verbose: int):
    import keras

    return keras.utils.Progbar(part.total, unit_name="example", verbose=verbose)
