"""Bulk teacher labelling on Apache Beam (optional: `pip install keras-distill[beam]`).

`LabelShardChunks` turns a `PCollection` of `ShardChunk`s (a shard's
contiguous examples as arrays) into the shards and manifest that
`label_with_teacher` writes. The teacher runs in Beam's `RunInference` on
whole chunks, loaded once per worker (`KerasModelHandler`,
`CallableModelHandler`) and called in slices of 256 rows, as
`label_with_teacher` calls it; each chunk becomes one shard. `LabelWithTeacher`
first groups a user's `(index, example)` pairs (or prompts, for a
`GenerateModelHandler`) into shards. Shards depend only on their examples and
the manifest, written last, only on the shards: neither depends on the
runner's parallelism or element order, and a failed pipeline leaves no
manifest that claims completeness. `label` does it in one call for arrays, a
`tf.data.Dataset` or `TFRecordInputs`, staging the data for the workers
(`beam_inputs`). Records, checks, identity and manifest come from the local
writers' code (`shards`, `calls`, `responses`, `identity`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from keras_distill._src.labelling import (
    beam_inputs,
    calls,
    lock,
    response_writer,
    responses,
    shards,
)
from keras_distill._src.labelling.errors import TeacherLabelsError
from keras_distill._src.labelling.identity import (
    Identity,
    examples_identity,
    locked_output,
    opened_output,
    previous_outputs,
    responses_identity,
)
from keras_distill._src.labelling.manifest import MANIFEST, Manifest, Settings
from keras_distill._src.objective.stored_kinds import stored_kind
from keras_distill._src.teachers.black_box import fingerprint_teacher
from keras_distill._src.utils import storage

# -- the teacher, as a RunInference model handler ------------------------------------------


class ChunkHandler(ModelHandler):
    """Runs the teacher on whole `ShardChunk`s through `call_teacher` (the local path's checks)."""

    output = "logits"
    batch_size = 256  # rows per teacher call, as `label_with_teacher`'s default

    def batch_elements_kwargs(self):
        """One chunk per `run_inference` call: the elements are batches already."""
        return {"min_batch_size": 1, "max_batch_size": 1}

    def run_inference(self, batch, model, inference_args=None):
        """Each chunk's checked `(outputs, confidence or None)`: one `PredictionResult` each."""
        return [PredictionResult(chunk, self.chunk_outputs(chunk, model)) for chunk in batch]

    def chunk_outputs(self, chunk, model):
        """The teacher on a chunk in slices of `batch_size` rows (a Keras teacher on that many)."""
        parts = [
            calls.call_teacher(
                model,
                chunk.x[i : i + self.batch_size],
                self.output,
                chunk.first + i,
                self.batch_size,
            )
            for i in range(0, len(chunk.x), self.batch_size)
        ]
        outputs = np.concatenate([p[0] for p in parts])
        if parts[0][1] is None:
            return outputs, None
        return outputs, np.concatenate([p[1] for p in parts])


class KerasModelHandler(ChunkHandler):
    """A Keras teacher loaded once per worker from a `.keras` file.

    Args:
        path: The saved model (`model.save("teacher.keras")`), a local path
            or a URL that every worker can read (`gs://...`).

    Example:
    >>> import keras
    >>> from keras_distill.labelling.beam import KerasModelHandler
    >>> keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]).save("/tmp/teacher.keras")
    >>> KerasModelHandler("/tmp/teacher.keras").load_model().output_shape
    (None, 3)
    """

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)

    def load_model(self):
        """The Keras model, loaded without its training configuration."""
        import keras

        return keras.saving.load_model(self.path, compile=False)


class CallableModelHandler(ChunkHandler):
    """Any Python callable from a NumPy batch to outputs (a black box), as a Beam model handler.

    Args:
        teacher: The callable (pickled to the workers).

    Example:
    >>> import numpy as np
    >>> from keras_distill.labelling.beam import CallableModelHandler, ShardChunk
    >>> handler = CallableModelHandler(lambda batch: 2 * batch)
    >>> chunk = ShardChunk(shard=0, first=0, x=np.ones((2, 3), "float32"))
    >>> [result.inference[0].tolist() for result in
    ...  handler.run_inference([chunk], handler.load_model())]
    [[[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]]]
    """

    def __init__(self, teacher):
        self.teacher = teacher

    def load_model(self):
        """The callable itself."""
        return self.teacher


class GenerateModelHandler(ModelHandler):
    """A generating teacher (`generate(prompts) -> responses`) as a Beam model handler.

    Its examples are `(index, prompt tokens, prompt as given)`; each result is
    the prompt's checked samples (those `label_responses` stores).

    Args:
        generate: The callable (pickled to the workers).
        options: A `kd.labelling.SequenceOptions`.

    Example:
    >>> import numpy as np
    >>> import keras_distill as kd
    >>> from keras_distill.labelling.beam import GenerateModelHandler
    >>> handler = GenerateModelHandler(lambda prompts: [[3]] * len(prompts),
    ...                                kd.labelling.SequenceOptions(8, 4))
    >>> (result,) = handler.run_inference([(0, np.array([1]), [1])], handler.load_model())
    >>> samples, scored = result.inference
    >>> samples[0].response.tolist(), scored
    ([3], False)
    """

    batch_size = 64  # prompts per `generate` call

    def __init__(self, generate, options):
        self.generate, self.options = generate, options

    def batch_elements_kwargs(self):
        """Batches of `batch_size` prompts."""
        return {"min_batch_size": self.batch_size, "max_batch_size": self.batch_size}

    def load_model(self):
        """The callable itself."""
        return self.generate

    def run_inference(self, batch, model, inference_args=None):
        """The checked samples of each prompt, and whether they are scored."""
        samples, scored = responses.sample_batch(
            model, [b[1] for b in batch], [b[2] for b in batch], [b[0] for b in batch], self.options
        )
        return [PredictionResult(b, (s, scored)) for b, s in zip(batch, samples, strict=True)]


# -- the pipeline's steps, mapped over its elements -----------------------------------------


def _write_shard(path: str, shard: int, fields: dict, first: int, facts: dict):
    """Writes a shard's fields as records (on the worker); its manifest entry, and the records."""
    records = [{k: np.asarray(v[i]) for k, v in fields.items()} for i in range(len(fields["x"]))]
    storage.makedirs(path)
    entry = shards.write_shard(storage.join(path, f"shard-{shard:05d}.tfrecord"), records)
    return {
        **entry,
        "index": shard,
        "first": first,
        "last": first + len(records) - 1,
        "features": shards.features_of(records[0]),
        "facts": facts,
    }, records


def write_chunk(result, path: str, settings: Settings) -> dict:
    """Writes one shard from a chunk's inference result; its manifest entry and facts."""
    chunk, (outputs, confidence) = result.example, result.inference
    kind = stored_kind(settings.output, settings.top_k)
    fields = calls.record_fields(chunk.x, chunk.labels, outputs, confidence, kind, settings)
    facts = calls.teacher_facts(outputs, kind, probe=False)
    return _write_shard(path, chunk.shard, fields, chunk.first, facts)[0]


def write_responses(group, path: str, options) -> dict:
    """Writes one shard of responses (whole prompts, by index); its manifest entry."""
    shard, members = beam_inputs.contiguous(group)
    facts = {"scored": any(m[3] for m in members)}
    for member in members:
        responses.check_same_top_k(facts, member[2][0], member[0])
    prompts, samples, first = [m[1] for m in members], [m[2] for m in members], members[0][0]
    fields = responses.response_records(prompts, samples, first, options)
    entry, records = _write_shard(path, shard, fields, first, facts)
    summary = response_writer.shard_summary(records)
    return {**entry, "last": members[-1][0], "units": len(members), "summary": summary}


def _check_entries(entries: list) -> None:
    if not entries:
        raise TeacherLabelsError("The data to label is empty; no manifest was written.")
    units = sum(entry.get("units", entry["examples"]) for entry in entries)  # examples or prompts
    starts = [entry["first"] for entry in entries]
    if (
        starts != [0] + [entry["last"] + 1 for entry in entries[:-1]]
        or entries[-1]["last"] != units - 1
    ):
        raise TeacherLabelsError(
            f"The indices must be 0..n-1 without gaps or repeats; {units} "
            f"elements, last {entries[-1]['last']}."
        )
    if len({str(e["facts"].get("response_top_k")) for e in entries}) > 1:
        raise TeacherLabelsError("Some responses have top-k outputs of another size than others.")


def complete_manifest(entries: list, path: str, settings: Settings, facts: dict) -> dict:
    """The complete manifest from every shard's entry, written last; refuses gaps in the indices.

    `settings.data == "beam"` (data known only once written) becomes a
    digest of the shards' data; `facts` are what the driver knows of the
    teacher (a callable's probe).
    """
    entries = sorted(entries, key=lambda entry: entry["index"])
    _check_entries(entries)
    count = sum(entry["examples"] for entry in entries)
    if settings.data == "beam":
        digest = hashlib.sha256("".join(e["data_sha256"] for e in entries).encode()).hexdigest()
        settings = Settings.from_json({**settings.to_json(), "data": f"beam:{digest[:16]}"})
    keys = ("file", "examples", "sha256", "data_sha256", "summary")
    manifest = Manifest(
        settings,
        shards=[{k: e[k] for k in keys if k in e} for e in entries],
        features=entries[0]["features"],
        facts={**entries[0]["facts"], **facts},
    )
    if settings.output == "sequences":
        manifest.facts["scored"] = any(e["facts"]["scored"] for e in entries)
        manifest.facts.update(
            response_writer.response_totals(manifest.shards, count, settings.num_samples)
        )
    manifest_path = storage.join(path, MANIFEST)
    return shards.write_complete_manifest(path, manifest_path, manifest, count).to_json()


# -- the transforms -------------------------------------------------------------------------


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


def _refuse_complete(directory: str, identity: Identity) -> None:
    """The writers' directory rule and identity check; a Beam run never resumes a complete one."""
    lock.check_output_directory(directory)
    if previous_outputs(directory, identity, 0, overwrite=False) is not None:
        raise TeacherLabelsError(
            f"{directory!r} already holds a complete labelling run of this teacher, data and "
            "settings; load it with load_teacher_labels, use a new directory, or pass "
            "overwrite=True to relabel it (nothing was changed)."
        )


def _labelled_chunks(chunks, handler, path: str, settings: Settings):
    """Inference on whole chunks, one shard written per chunk: the shards' entries."""
    handler.output = settings.output
    return (
        chunks
        | "Teacher" >> RunInference(handler)
        | "WriteShard" >> beam.Map(write_chunk, path, settings)
    )


def _written(entries, path: str, settings: Settings, facts: dict):
    """The manifest, made and written last from every shard's entry."""
    return (
        entries
        | "All" >> beam.combiners.ToList()
        | "Manifest" >> beam.Map(complete_manifest, path, settings, facts)
    )


class LabelShardChunks(beam.PTransform):
    """Labels `ShardChunk`s (one element per shard) into keras-distill shards and a manifest.

    Each chunk goes through `RunInference` whole and is written as one shard
    (`shard-{chunk.shard:05d}.tfrecord`); the chunks must cover the indices
    0..n-1 without gaps or overlaps, else no manifest is written.

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
    >>> import os, tempfile
    >>> import apache_beam as beam
    >>> import numpy as np
    >>> import keras_distill as kd
    >>> from keras_distill.labelling import beam as kbeam
    >>> chunks = [kbeam.ShardChunk(s, 10 * s, np.ones((10, 4), "float32")) for s in range(2)]
    >>> folder = tempfile.mkdtemp()
    >>> with beam.Pipeline() as pipeline:
    ...     _ = (pipeline | beam.Create(chunks) | kbeam.LabelShardChunks(
    ...         kbeam.CallableModelHandler(lambda b: b[:, :3]), folder,
    ...         kbeam.label_settings("id:first-three", "logits", None, 10)))
    >>> kd.labelling.read_manifest(os.path.join(folder, "manifest.json")).num_examples
    20
    """

    def __init__(self, handler, path, settings, facts=None):
        super().__init__()
        self.handler = _checked_handler(handler, (ChunkHandler,))
        self.path, self.settings = _opened(path, settings)
        self.facts = dict(facts or {})

    def expand(self, chunks):
        """Inference on whole chunks, one shard written per chunk, then the manifest."""
        entries = _labelled_chunks(chunks, self.handler, self.path, self.settings)
        return _written(entries, self.path, self.settings, self.facts)


class LabelWithTeacher(beam.PTransform):
    """Labels a user's `(index, example)` pairs with a teacher into shards and a manifest.

    Examples are grouped once into shards (`index // shard_size`) and then
    carried as `ShardChunk`s (see `LabelShardChunks`); prompts of a
    `GenerateModelHandler` are run in batches of prompts and grouped into
    shards of whole prompts. If the data is already in arrays, `label` (or
    `LabelShardChunks`) skips the grouping.

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
    >>> import os, tempfile
    >>> import apache_beam as beam
    >>> import numpy as np
    >>> import keras_distill as kd
    >>> from keras_distill.labelling import beam as kbeam
    >>> examples = [(i, (np.full(4, i, "float32"), i % 3)) for i in range(25)]
    >>> folder = tempfile.mkdtemp()
    >>> with beam.Pipeline() as pipeline:
    ...     _ = (pipeline | beam.Create(examples) | kbeam.LabelWithTeacher(
    ...         kbeam.CallableModelHandler(lambda b: b[:, :3]), folder,
    ...         kbeam.label_settings("id:first-three", "logits", None, 10)))
    >>> manifest = kd.labelling.read_manifest(os.path.join(folder, "manifest.json"))
    >>> manifest.num_examples, len(manifest.shards)
    (25, 3)
    """

    def __init__(self, handler, path, settings, shard_size: int | None = None, facts=None):
        super().__init__()
        self.handler = _checked_handler(handler, (ChunkHandler, GenerateModelHandler))
        self.path, self.settings = _opened(path, settings)
        self.facts = dict(facts or {})
        self.shard_size = shard_size or self.settings.shard_size

    def expand(self, examples):
        """Shards grouped by index, inference, one shard written per group, then the manifest."""
        if isinstance(self.handler, GenerateModelHandler):  # prompts: whole prompts per shard
            entries = self._responses(examples)
        else:
            chunks = (
                examples
                | "ByShard" >> beam.Map(beam_inputs.by_shard, self.shard_size)
                | "Group" >> beam.GroupByKey()
                | "Chunk" >> beam.Map(beam_inputs.chunk_of)
            )
            entries = _labelled_chunks(chunks, self.handler, self.path, self.settings)
        return _written(entries, self.path, self.settings, self.facts)

    def _responses(self, prompts):
        options = self.handler.options
        return (
            prompts
            | "Key" >> beam.Map(beam_inputs.keyed_prompt, options)
            | "Teacher" >> RunInference(self.handler)
            | "ByShard"
            >> beam.Map(beam_inputs.by_prompt_shard, self.shard_size // options.num_samples)
            | "Group" >> beam.GroupByKey()
            | "WriteShard" >> beam.Map(write_responses, self.path, options)
        )


def label_settings(
    teacher: str, output: str, top_k: int | None, shard_size: int, data: str = "beam"
) -> Settings:
    """The `Settings` of a Beam run (`data="beam"`: fingerprinted by its shards once written).

    Args:
        teacher: The teacher's identity (`"id:<teacher_id>"` names a version).
        output: The stored kind, as `label_with_teacher`'s `output`.
        top_k: As `label_with_teacher`'s `top_k`.
        shard_size: Examples per shard.
        data: The data's fingerprint, if known before the pipeline runs.

    Example:
    >>> from keras_distill.labelling.beam import label_settings
    >>> settings = label_settings("id:teacher-v1", "logits", 5, shard_size=1000)
    >>> settings.runner, settings.top_k, settings.num_workers
    ('beam', 5, 1)
    """
    return Settings(teacher, data, output, top_k, shard_size, num_workers=1, runner="beam")


# -- one call ----------------------------------------------------------------------------


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
    (through `tf.io.gfile`),
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
            or `TFRecordInputs(pattern, parse_fn)`.
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
    if output == "sequences":  # the prompt check and identity of `label_responses`
        options = responses.SequenceOptions(**sequence_options)
        tokens = responses.prompt_tokens(data, options)  # checked before the pipeline
        identity = responses_identity(fingerprint, tokens, options, shard_size, (1, "beam"))
        handler = GenerateModelHandler(teacher, options)
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
            settings = label_settings(fingerprint, output, top_k, shard_size, staged.data_id)
            identity = examples_identity(teacher, settings, staged.head, teacher_id)
            previous_outputs(directory, identity, 0, overwrite)
            handler = _worker_handler(teacher, staging.path)
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
        pipeline | "Ranges" >> beam.Create(ranges) | "Read" >> beam.Map(beam_inputs.chunk_of_range)
    )


def _example_rank(teacher) -> int | None:
    """The rank of one input example of a Keras teacher with one input, else None."""
    model_inputs = getattr(teacher, "inputs", None)
    if isinstance(model_inputs, list) and len(model_inputs) == 1:
        return len(model_inputs[0].shape) - 1
    return None


def _worker_handler(teacher, staging: str) -> ChunkHandler:
    """A callable's handler, or a Keras teacher saved to the staging folder for the workers."""
    import keras

    if not isinstance(teacher, keras.Model):
        return CallableModelHandler(teacher)
    model_path = storage.join(staging, "teacher.keras")
    teacher.save(model_path)
    return KerasModelHandler(model_path)
