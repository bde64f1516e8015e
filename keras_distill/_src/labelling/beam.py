"""Bulk teacher labelling on Apache Beam (optional: `pip install keras-distill[beam]`).

`LabelShardChunks` is a `PTransform` from a `PCollection` of
`keras_distill._src.labelling.beam_steps.ShardChunk`s (a shard's contiguous
examples as NumPy arrays: one element per shard, sliced in bulk) to the same
shards and manifest that `keras_distill.label_with_teacher` writes, so that
`load_teacher_labels` reads them as usual. The teacher runs in Beam's
`RunInference` on whole chunks (pre-batched elements, in slices of 256 rows),
loaded once per worker: a Keras model from a `.keras` path
(`KerasModelHandler`) or any Python callable (`CallableModelHandler`); each
chunk is written as a whole shard. `LabelWithTeacher` takes a user's
`PCollection` of `(index, example)` pairs (an example is `x` or `(x, y)`, or a
prompt for a generating teacher) and groups them into chunks first. A shard's
contents depend only on its examples and the manifest only on the shards, so
neither depends on the runner's parallelism or element order; the manifest is
written last, so a failed pipeline leaves none that claims completeness, and a
rerun rewrites the same files.

`label` runs it in one call for NumPy arrays, a `tf.data.Dataset` of batches
or TFRecord files (`TFRecordInputs`): it streams the examples one shard at a
time into a staging folder that every worker reads through `tf.io.gfile`
(`keras_distill._src.labelling.beam_inputs`: `<path>/.staging-<uuid>/` by default,
so a bucket output path stages on the bucket; or under `staging_dir=`), saves
a Keras teacher there too, carries one small range per shard through the
pipeline, and deletes the staging folder when the run ends, whether it
succeeded or failed.

It runs on any Beam runner (DirectRunner here; Dataflow, Flink, Spark with
their pipeline options). Records, checks and manifest come from the same
code as the local path (`keras_distill._src.labelling.shards`, `keras_distill._src.labelling.calls`,
`keras_distill._src.labelling.responses.normalized_prompt`, the input check
`keras_distill._src.labelling.worker_parts.labelled_arrays`), and `label` opens its
output as `label_with_teacher` does (`keras_distill._src.labelling.identity`: the
directory rule, a lock held while the pipeline runs, the identity check).
Paths go through `tf.io.gfile` (`keras_distill._src.utils.storage`), so a
bucket path works where TensorFlow has its file system.
"""

from __future__ import annotations

import contextlib
import os

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler, RunInference

from keras_distill._src.labelling import (
    beam_inputs,
    beam_steps,
    calls,
    lock,
    response_writer,
    responses,
    shards,
)
from keras_distill._src.labelling.beam_handlers import (
    CallableModelHandler,
    ChunkHandler,
    GenerateModelHandler,
    KerasModelHandler,
)
from keras_distill._src.labelling.beam_inputs import TFRecordInputs
from keras_distill._src.labelling.errors import TeacherLabelsError
from keras_distill._src.labelling.identity import (
    Identity,
    examples_identity,
    locked_output,
    opened_output,
    previous_outputs,
)
from keras_distill._src.labelling.manifest import MANIFEST, Settings
from keras_distill._src.teachers.black_box import fingerprint_teacher
from keras_distill._src.utils import storage

__all__ = [
    "CallableModelHandler",
    "GenerateModelHandler",
    "KerasModelHandler",
    "LabelShardChunks",
    "LabelWithTeacher",
    "TFRecordInputs",
    "label",
    "label_settings",
]


def _checked_handler(handler, kinds: tuple) -> ModelHandler:
    if not isinstance(handler, kinds):
        raise TypeError(
            "`handler` must be a keras-distill Beam model handler: wrap a callable teacher as "
            "CallableModelHandler(teacher), a saved Keras model as KerasModelHandler(path), "
            "a generate callable as GenerateModelHandler(generate, options); received "
            f"{handler!r}."
        )
    return handler


def _opened(path, settings) -> tuple[str, Settings]:
    """The checked output path and settings; refuses a foreign directory or a complete run."""
    settings = settings if isinstance(settings, Settings) else Settings.from_json(settings)
    path = storage.check_path(path, TeacherLabelsError)
    _refuse_complete(path, Identity(settings))
    return path, settings


def _written(entries, path: str, settings: Settings, facts: dict):
    """The manifest, made and written last from every shard's entry."""
    return (
        entries
        | "All" >> beam.combiners.ToList()
        | "Manifest" >> beam.Map(beam_steps.complete_manifest, path, settings, facts)
    )


class LabelShardChunks(beam.PTransform):
    """Labels `ShardChunk`s (one element per shard) into keras-distill shards and a manifest.

    Each chunk goes through `RunInference` whole and is written as one shard
    (`shard-{chunk.shard:05d}.tfrecord`); the chunks must cover the indices
    0..n-1 without gaps or overlaps (`beam_steps.shard_chunks` slices arrays
    so), else no manifest is written.

    Args:
        handler: A `KerasModelHandler` or `CallableModelHandler`.
        path: Output directory (empty, new, or a failed run's).
        settings: What the manifest records (`label_settings` makes them).
        facts: What the manifest records of the teacher besides.

    Raises:
        TypeError: If `handler` is not one of keras-distill's example handlers.
        TeacherLabelsError: If `path` holds files keras-distill did not write,
            or a complete run.

    Example:
    >>> handler = CallableModelHandler(lambda b: b[:, :3])
    >>> LabelShardChunks(handler, "out", label_settings("id:t", "logits", None, 10)).path
    'out'
    """

    def __init__(self, handler, path, settings, facts=None):
        super().__init__()
        self.handler = _checked_handler(handler, (ChunkHandler,))
        self.path, self.settings = _opened(path, settings)
        self.handler.output = self.settings.output
        self.facts = dict(facts or {})

    def expand(self, chunks):
        """Inference on whole chunks, one shard written per chunk, then the manifest."""
        entries = (
            chunks
            | "Teacher" >> RunInference(self.handler)
            | "WriteShard" >> beam.Map(beam_steps.write_chunk, self.path, self.settings)
        )
        return _written(entries, self.path, self.settings, self.facts)


class LabelWithTeacher(beam.PTransform):
    """Labels a user's `(index, example)` pairs with a teacher into shards and a manifest.

    Examples are grouped once into shards (`index // shard_size`) and then
    carried as `ShardChunk`s (see `LabelShardChunks`); prompts of a
    `GenerateModelHandler` are run in batches of prompts and grouped into
    shards of whole prompts. If the data is already in arrays, `label` (or
    `LabelShardChunks` on `beam_steps.shard_chunks`) skips the grouping.

    Args:
        handler: A `KerasModelHandler`, `CallableModelHandler` or `GenerateModelHandler`.
        path: Output directory (empty, new, or a failed run's).
        settings: What the manifest records (`label_settings` makes them).
        shard_size: Examples per shard (default: `settings.shard_size`).
        facts: What the manifest records of the teacher besides (`label`
            passes a callable teacher's probe).

    Raises:
        TypeError: If `handler` is not one of keras-distill's handlers (wrap a
            callable in `CallableModelHandler`).
        TeacherLabelsError: If `path` holds files keras-distill did not write,
            or a complete run.

    Example:
    >>> handler = CallableModelHandler(lambda b: b[:, :3])
    >>> transform = LabelWithTeacher(handler, "out", label_settings("id:t", "logits", None, 10))
    >>> transform.shard_size
    10
    """

    def __init__(self, handler, path, settings, shard_size: int | None = None, facts=None):
        super().__init__()
        self.handler = _checked_handler(handler, (ChunkHandler, GenerateModelHandler))
        self.path, self.settings = _opened(path, settings)
        if isinstance(handler, ChunkHandler):
            handler.output = self.settings.output
        self.facts = dict(facts or {})
        self.shard_size = shard_size or self.settings.shard_size

    def expand(self, examples):
        """Shards grouped by index, inference, one shard written per group, then the manifest."""
        if isinstance(self.handler, GenerateModelHandler):  # prompts: whole prompts per shard
            entries = self._responses(examples)
        else:
            entries = (
                examples
                | "ByShard" >> beam.Map(beam_steps.by_shard, self.shard_size)
                | "Group" >> beam.GroupByKey()
                | "Chunk" >> beam.Map(beam_steps.chunk_of)
                | "Teacher" >> RunInference(self.handler)
                | "WriteShard" >> beam.Map(beam_steps.write_chunk, self.path, self.settings)
            )
        return _written(entries, self.path, self.settings, self.facts)

    def _responses(self, prompts):
        options = self.handler.options
        return (
            prompts
            | "Key" >> beam.Map(beam_steps.keyed_prompt, options)
            | "Teacher" >> RunInference(self.handler)
            | "ByShard"
            >> beam.Map(beam_steps.by_prompt_shard, self.shard_size // options.num_samples)
            | "Group" >> beam.GroupByKey()
            | "WriteShard" >> beam.Map(beam_steps.write_responses, self.path, options)
        )


def _refuse_complete(directory: str, identity: Identity) -> None:
    """The writers' directory rule and identity check; a Beam run never resumes a complete one."""
    lock.check_output_directory(directory)
    if previous_outputs(directory, identity, 0, overwrite=False) is not None:
        raise TeacherLabelsError(
            f"{directory!r} already holds a complete labelling run of this teacher, data and "
            "settings; load it with load_teacher_labels, use a new directory, or pass "
            "overwrite=True to relabel it (nothing was changed)."
        )


def label_settings(
    teacher: str, output: str, top_k: int | None, shard_size: int, data: str = "beam"
) -> Settings:
    """The `Settings` of a Beam run (`data="beam"`: fingerprinted by its shards once written).

    Example:
    >>> label_settings("id:t", "logits", None, 100).runner
    'beam'
    """
    return Settings(teacher, data, output, top_k, shard_size, num_workers=1, runner="beam")


def label(
    teacher,
    data,
    path: str | os.PathLike,
    *,
    output: str | None = None,
    top_k: int | None = None,
    shard_size: int = 10_000,
    teacher_id: str | None = None,
    pipeline_options=None,
    overwrite: bool = False,
    staging_dir: str | os.PathLike | None = None,
    **sequence_options,
) -> dict:
    """`label_with_teacher` on Beam: arrays, a dataset or TFRecord files, any runner, one call.

    The examples are streamed one shard at a time into a staging folder
    (`keras_distill._src.labelling.beam_inputs.Staging`, through `tf.io.gfile`),
    with the Keras teacher saved beside them; the pipeline carries one small
    range per shard, and each worker reads its shard from there. The staging
    folder is deleted when the run ends, whether it succeeded or failed (a
    killed run's is deleted by the next run into `path`). The output is opened
    as the local path opens it: the same directory rule, a lock held while
    the pipeline runs, and the same identity check against a stored run; the
    same examples give the same manifest and shards whichever form they come in.

    Args:
        teacher: A `keras.Model` (saved to the staging folder for the
            workers; not part of the labels), or a callable.
        data: `x` or `(x, y)` arrays; a `tf.data.Dataset` of batches `x` or
            `(x, y)` (as for `fit`; elements of dicts or scalars are refused);
            or `keras_distill._src.labelling.beam_inputs.TFRecordInputs(pattern, parse_fn)`.
            For `output="sequences"`, the prompts.
        path: Output directory (a local path or a `tf.io.gfile` URL).
        output: As for `label_with_teacher`.
        top_k: As for `label_with_teacher`.
        shard_size: Examples per shard.
        teacher_id: As for `label_with_teacher`.
        pipeline_options: `apache_beam.options.pipeline_options.PipelineOptions`
            (default: the DirectRunner in this process).
        overwrite: Relabel a directory that holds a complete run (of this or
            another teacher, data or settings), deleting its files first.
        staging_dir: Where to make the staging folder (`<staging_dir>/.staging-<uuid>`):
            default `path`; it must be readable by every worker (on a
            cluster, a bucket path such as `gs://bucket/tmp`).
        **sequence_options: For `output="sequences"` (`teacher` is then a
            `generate` callable and `data` the prompts): as for
            `label_with_teacher`.

    Returns:
        The manifest.

    Raises:
        TeacherLabelsError: As `label_with_teacher` (the teacher's own errors
            fail the pipeline, with their message), for data that cannot be
            labelled (named, before the pipeline starts), or when `path` holds
            a complete run (without `overwrite`; another teacher's is named),
            files keras-distill did not write, or another writer's lock.

    Example:
    >>> import numpy as np
    >>> import tensorflow as tf
    >>> x = np.random.rand(30, 4).astype("float32")
    >>> dataset = tf.data.Dataset.from_tensor_slices(x).batch(7)
    >>> label(lambda b: b[:, :3], dataset, "ram://beam-doc/run", shard_size=10)["num_examples"]
    30
    >>> storage.listdir("ram://beam-doc/run")  # no staging folder left
    ['manifest.json', 'shard-00000.tfrecord', 'shard-00001.tfrecord', 'shard-00002.tfrecord']
    """
    output = calls.output_kind(teacher, output)
    calls.check_arguments(teacher, output, top_k, shard_size, 1)
    directory = storage.check_path(path, TeacherLabelsError)
    fingerprint = fingerprint_teacher(teacher, teacher_id)
    if output == "sequences":
        handler, identity = _sequence_run(teacher, data, fingerprint, shard_size, sequence_options)
        with opened_output(directory, identity, 0, overwrite):
            prompts = list(enumerate(data))
            _run(pipeline_options, directory, identity, handler, lambda p: p | beam.Create(prompts))
    else:
        beam_inputs.check_inputs(data, _example_rank(teacher))
        staging_root = (
            directory
            if staging_dir is None
            else storage.check_path(staging_dir, TeacherLabelsError)
        )
        with _locked_staging(directory, staging_root) as staging:
            staged = staging.stage(data, shard_size)
            handler, identity = _example_run(
                teacher, staged, fingerprint, output, top_k, shard_size, teacher_id
            )
            previous_outputs(directory, identity, 0, overwrite)
            handler = _worker_handler(teacher, handler, staging.path)
            _run(pipeline_options, directory, identity, handler, _ranges(staged.ranges))
    return shards.read_manifests(directory, allow_incomplete=False, verify=True)[0].to_json()


@contextlib.contextmanager
def _locked_staging(directory: str, staging_root: str):
    """The output locked (a killed run's staging folders deleted), then a staging folder."""
    with locked_output(directory, MANIFEST):
        beam_inputs.remove_stale_staging(directory)
        with beam_inputs.Staging(staging_root) as staging:
            yield staging


def _run(pipeline_options, directory: str, identity: Identity, handler, elements_of) -> None:
    """Runs the pipeline from `elements_of(pipeline)` through the handler's transform."""
    _refuse_complete(directory, identity)
    facts = {} if identity.probe is None else {"teacher_probe": identity.probe()}
    transform = LabelWithTeacher if isinstance(handler, GenerateModelHandler) else LabelShardChunks
    with beam.Pipeline(options=pipeline_options) as pipeline:
        _ = elements_of(pipeline) | transform(handler, directory, identity.settings, facts=facts)


def _ranges(ranges: list):
    """The staged shards' `ShardChunk`s: ranges through the pipeline, read by the workers."""
    return lambda pipeline: (
        pipeline | "Ranges" >> beam.Create(ranges) | "Read" >> beam.Map(beam_steps.chunk_of_range)
    )


def _sequence_run(generate, prompts, fingerprint: str, shard_size: int, sequence_options: dict):
    """(handler, identity) of a run of generated responses: the local writer's identity."""
    options = responses.SequenceOptions(**sequence_options)
    tokens = responses.prompt_tokens(prompts, options)  # checked before the pipeline starts
    identity = response_writer.responses_identity(
        fingerprint, tokens, options, shard_size, (1, "beam")
    )
    return GenerateModelHandler(generate, options), identity


def _example_run(teacher, staged, fingerprint, output, top_k, shard_size, teacher_id):
    """(handler or None for a Keras teacher, identity) of a run of staged examples."""
    import keras

    settings = label_settings(fingerprint, output, top_k, shard_size, staged.data_id)
    identity = examples_identity(teacher, settings, staged.head, teacher_id)
    return (None if isinstance(teacher, keras.Model) else CallableModelHandler(teacher)), identity


def _example_rank(teacher) -> int | None:
    """The rank of one input example of a Keras teacher with one input, else None."""
    model_inputs = getattr(teacher, "inputs", None)
    if isinstance(model_inputs, list) and len(model_inputs) == 1:
        return len(model_inputs[0].shape) - 1
    return None


def _worker_handler(teacher, handler, staging: str):
    """The callable's handler, or a Keras teacher saved to the staging folder for the workers."""
    if handler is not None:
        return handler
    model_path = storage.join(staging, "teacher.keras")
    teacher.save(model_path)
    return KerasModelHandler(model_path)
