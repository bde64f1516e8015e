"""Bulk teacher labelling on Apache Beam (optional: `pip install keras-distill[beam]`).

`LabelWithTeacher` is a `PTransform` from a `PCollection` of `(index, example)`
pairs (an example is `x` or `(x, y)`, NumPy arrays, or a prompt for a
generating teacher) to the same shards and
manifest that `keras_distill.label_with_teacher` writes, so that
`load_teacher_labels` reads them as usual. The teacher runs in Beam's
`RunInference`, batched, loaded once per worker: a Keras model from a
`.keras` path (`KerasModelHandler`) or any Python callable
(`CallableModelHandler`). Shards are keyed by example index (`index //
shard_size`) and sorted inside, so their contents and the manifest do not
depend on the runner's parallelism or element order; the manifest is written
last, so a failed pipeline leaves none that claims completeness, and a rerun
rewrites the same files. `label` runs it for arrays in one call.

It runs on any Beam runner (DirectRunner here; Dataflow, Flink, Spark with
their pipeline options). Records, checks and manifest come from the same
code as the local path (`keras_distill.labelling.shards`, `keras_distill.labelling.calls`,
`keras_distill.labelling.responses.normalized_prompt`, the input check
`keras_distill.labelling.examples.labelled_arrays`), and `label` opens its
output as `label_with_teacher` does (`keras_distill.labelling.output`: the
directory rule, a lock held while the pipeline runs, the identity check).
Paths go through `tf.io.gfile` (`keras_distill.labelling.storage`), so a
bucket path works where TensorFlow has its file system.
"""

from __future__ import annotations

import os
import tempfile

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import (
    KeyedModelHandler,
    ModelHandler,
    PredictionResult,
    RunInference,
)

from keras_distill.labelling import (
    beam_steps,
    calls,
    examples,
    folder,
    responses,
    sequences,
    shards,
    storage,
)
from keras_distill.labelling.errors import TeacherLabelsError
from keras_distill.labelling.manifest import Settings
from keras_distill.labelling.output import Identity, opened_output, previous_outputs
from keras_distill.teachers.black_box import fingerprint_arrays, fingerprint_teacher


class _CheckedHandler(ModelHandler):
    """Runs the teacher on a batch through `call_teacher` (the local path's checks)."""

    output = "logits"
    batch_size = 256  # examples per teacher call, as `label_with_teacher`'s default

    def batch_elements_kwargs(self):
        """Batches of `batch_size` examples for the teacher (Beam otherwise starts at 1)."""
        return {"min_batch_size": self.batch_size, "max_batch_size": self.batch_size}

    def run_inference(self, batch, model, inference_args=None):
        """The teacher's checked outputs, one `PredictionResult` per example."""
        outputs, confidence = calls.call_teacher(
            model, np.stack(batch), self.output, 0, rows=self.batch_size
        )
        confidence = [None] * len(batch) if confidence is None else confidence
        return [
            PredictionResult(x, (o, c)) for x, o, c in zip(batch, outputs, confidence, strict=True)
        ]


class KerasModelHandler(_CheckedHandler):
    """A Keras teacher loaded once per worker from a `.keras` file.

    Args:
        path: The saved model (`model.save("teacher.keras")`).

    Example:
    >>> KerasModelHandler("teacher.keras").path
    'teacher.keras'
    """

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)

    def load_model(self):
        """The Keras model, loaded without its training configuration."""
        import keras

        return keras.saving.load_model(self.path, compile=False)


class CallableModelHandler(_CheckedHandler):
    """Any Python callable from a NumPy batch to outputs (a black box), as a Beam model handler.

    Args:
        teacher: The callable (pickled to the workers).

    Example:
    >>> CallableModelHandler(len).load_model() is len
    True
    """

    def __init__(self, teacher):
        self.teacher = teacher

    def load_model(self):
        """The callable itself."""
        return self.teacher


class GenerateModelHandler(ModelHandler):
    """A generating teacher (`generate(prompts) -> responses`) as a Beam model handler.

    Its examples are `(index, prompt tokens, prompt as given)`; each result is
    the prompt's checked samples (`keras_distill.labelling.responses.sample_batch`).

    Args:
        generate: The callable (pickled to the workers).
        options: A `keras_distill.labelling.responses.SequenceOptions`.

    Example:
    >>> handler = GenerateModelHandler(lambda b: [[3]] * len(b), responses.SequenceOptions(8, 4))
    >>> handler.options.max_length
    4
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


class LabelWithTeacher(beam.PTransform):
    """Labels `(index, example)` pairs with a teacher into keras-distill shards and a manifest.

    Args:
        handler: A `KerasModelHandler`, `CallableModelHandler` or `GenerateModelHandler`.
        path: Output directory (empty, new, or a failed run's).
        settings: What the manifest records (`label_settings` makes them).
        shard_size: Examples per shard.
        facts: What the manifest records of the teacher besides (`label`
            passes a callable teacher's probe).

    Raises:
        TypeError: If `handler` is not a Beam `ModelHandler` (wrap a callable
            in `CallableModelHandler`).
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
        if not isinstance(handler, ModelHandler):
            raise TypeError(
                "`handler` must be a Beam ModelHandler: wrap a callable teacher as "
                "CallableModelHandler(teacher), a saved Keras model as KerasModelHandler(path), "
                "a generate callable as GenerateModelHandler(generate, options); received "
                f"{handler!r}."
            )
        settings = settings if isinstance(settings, Settings) else Settings.from_json(settings)
        self.path = storage.check_path(path)
        _refuse_complete(self.path, Identity(settings))
        if not isinstance(handler, GenerateModelHandler):
            handler.output = settings.output
        self.handler, self.settings, self.facts = handler, settings, dict(facts or {})
        self.shard_size = shard_size or settings.shard_size

    def expand(self, examples):
        """Inference, shards keyed by index, then the manifest from every shard's entry."""
        if isinstance(self.handler, GenerateModelHandler):  # prompts: whole prompts per shard
            options = self.handler.options
            grouped = (
                examples
                | "Key" >> beam.Map(beam_steps.keyed_prompt, options)
                | "Teacher" >> RunInference(self.handler)
                | "ByShard"
                >> beam.Map(beam_steps.by_prompt_shard, self.shard_size // options.num_samples)
                | "Group" >> beam.GroupByKey()
            )
            entries = grouped | "WriteShard" >> beam.Map(
                beam_steps.write_responses, self.path, options
            )
        else:
            entries = (
                examples
                | "Key" >> beam.Map(beam_steps.keyed)
                | "Teacher" >> RunInference(KeyedModelHandler(self.handler))
                | "ByShard" >> beam.Map(beam_steps.by_shard, self.shard_size)
                | "Group" >> beam.GroupByKey()
                | "WriteShard" >> beam.Map(beam_steps.write_examples, self.path, self.settings)
            )
        return (
            entries
            | "All" >> beam.combiners.ToList()
            | "Manifest"
            >> beam.Map(beam_steps.complete_manifest, self.path, self.settings, self.facts)
        )


def _refuse_complete(directory: str, identity: Identity) -> None:
    """The writers' directory rule and identity check; a Beam run never resumes a complete one."""
    folder.check_output_directory(directory)
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
    **sequence_options,
) -> dict:
    """`label_with_teacher` for arrays, on Beam: one call, any runner.

    The inputs are checked by the local path's function (one label per
    input), prompts normalised by it (trailing pads stripped, empty prompts
    refused), and the output opened as the local path opens it: the same
    directory rule, a lock held while the pipeline runs, and the same
    identity check against a stored run.

    Args:
        teacher: A `keras.Model` (saved to a temporary `teacher.keras` for
            the workers; not part of the labels), or a callable.
        data: `x` or `(x, y)` arrays.
        path: Output directory (a local path or a `tf.io.gfile` URL).
        output: As for `label_with_teacher`.
        top_k: As for `label_with_teacher`.
        shard_size: Examples per shard.
        teacher_id: As for `label_with_teacher`.
        pipeline_options: `apache_beam.options.pipeline_options.PipelineOptions`
            (default: the DirectRunner in this process).
        overwrite: Relabel a directory that holds a complete run (of this or
            another teacher, data or settings), deleting its files first.
        **sequence_options: For `output="sequences"` (`teacher` is then a
            `generate` callable and `data` the prompts): as for
            `label_with_teacher`.

    Returns:
        The manifest.

    Raises:
        TeacherLabelsError: As `label_with_teacher` (the teacher's own errors
            fail the pipeline, with their message), or when `path` holds a
            complete run (without `overwrite`; another teacher's is named),
            files keras-distill did not write, or another writer's lock.

    Example:
    >>> import tempfile
    >>> x = np.random.rand(30, 4).astype("float32")
    >>> label(lambda b: b[:, :3], x, tempfile.mkdtemp(), shard_size=10)["num_examples"]
    30
    """
    output = calls.output_kind(teacher, output)
    calls.check_arguments(teacher, output, top_k, shard_size, 1)
    directory = storage.check_path(path)
    fingerprint = fingerprint_teacher(teacher, teacher_id)
    if output == "sequences":
        run = _sequence_run(teacher, data, fingerprint, shard_size, sequence_options)
    else:
        run = _example_run(teacher, data, fingerprint, output, top_k, shard_size, teacher_id)
    elements, handler, identity = run
    with opened_output(directory, identity, 0, overwrite):
        _refuse_complete(directory, identity)
        facts = {} if identity.probe is None else {"teacher_probe": identity.probe()}
        with beam.Pipeline(options=pipeline_options) as pipeline:
            _ = (
                pipeline
                | "Examples" >> beam.Create(elements)
                | LabelWithTeacher(handler, directory, identity.settings, facts=facts)
            )
    return shards.read_manifests(directory, allow_incomplete=False, verify=True)[0].to_json()


def _sequence_run(generate, prompts, fingerprint: str, shard_size: int, sequence_options: dict):
    """(elements, handler, identity) of a run of generated responses."""
    options = responses.SequenceOptions(**sequence_options)
    tokens = responses.prompt_tokens(prompts, options)  # checked before the pipeline starts
    data_id = f"prompts:{sequences.prompts_fingerprint(tokens)}"
    settings = sequences.sequence_settings(fingerprint, data_id, options, shard_size, "beam")
    return list(enumerate(prompts)), GenerateModelHandler(generate, options), Identity(settings)


def _example_run(teacher, data, fingerprint, output, top_k, shard_size, teacher_id):
    """(elements, handler, identity) of a run of examples; a Keras teacher saved for the workers."""
    import keras

    x, y = examples.labelled_arrays(data)
    if len(x) == 0:
        raise TeacherLabelsError("The data to label is empty; nothing was written.")
    data_id = f"arrays:{fingerprint_arrays(x, y)}"
    settings = label_settings(fingerprint, output, top_k, shard_size, data_id)
    elements = [(i, (x[i], y[i]) if y is not None else x[i]) for i in range(len(x))]
    if isinstance(teacher, keras.Model):  # local workers read it; on a cluster, use a shared path
        model_path = os.path.join(tempfile.mkdtemp(), "teacher.keras")
        teacher.save(model_path)
        return elements, KerasModelHandler(model_path), Identity(settings, None, teacher_id)
    probe = lambda: calls.probe_of(teacher, x, output)  # noqa: E731
    return elements, CallableModelHandler(teacher), Identity(settings, probe, teacher_id)
