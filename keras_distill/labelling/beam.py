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
code as the local path (`keras_distill.labelling.shards`, `keras_distill.objective.stored_kinds`,
`keras_distill.labelling.writer.call_teacher`).
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import tempfile

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import (
    KeyedModelHandler,
    ModelHandler,
    PredictionResult,
    RunInference,
)

from keras_distill.labelling import responses, shards
from keras_distill.labelling import writer as teacher_labels
from keras_distill.labelling.shards import TeacherLabelsError
from keras_distill.objective import stored_kinds as targets


class _CheckedHandler(ModelHandler):
    """Runs the teacher on a batch through `call_teacher` (the local path's checks)."""

    output = "logits"
    batch_size = 256  # examples per teacher call, as `label_with_teacher`'s default

    def batch_elements_kwargs(self):
        """Batches of `batch_size` examples for the teacher (Beam otherwise starts at 1)."""
        return {"min_batch_size": self.batch_size, "max_batch_size": self.batch_size}

    def run_inference(self, batch, model, inference_args=None):
        """The teacher's checked outputs, one `PredictionResult` per example."""
        outputs, confidence = teacher_labels.call_teacher(model, np.stack(batch), self.output, 0)
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
        handler: A `KerasModelHandler` or `CallableModelHandler`.
        path: Output directory (empty, new, or a previous run's).
        settings: What the manifest records (`label_settings` makes them).
        shard_size: Examples per shard.

    Example:
    >>> handler = CallableModelHandler(lambda b: b[:, :3])
    >>> transform = LabelWithTeacher(handler, "out", label_settings("id:t", "logits", None, 10))
    >>> transform.shard_size
    10
    """

    def __init__(self, handler, path, settings: dict, shard_size: int | None = None):
        super().__init__()
        _check_directory(pathlib.Path(path))
        if not isinstance(handler, GenerateModelHandler):
            handler.output = settings["output"]
        self.handler, self.path, self.settings = handler, str(path), settings
        self.shard_size = shard_size or settings["shard_size"]

    def expand(self, examples):
        """Inference, shards keyed by index, then the manifest from every shard's entry."""
        if isinstance(self.handler, GenerateModelHandler):  # prompts: whole prompts per shard
            options = self.handler.options
            per_shard = self.shard_size // options.num_samples
            grouped = (
                examples
                | "Key" >> beam.Map(_prompt, options)
                | "Teacher" >> RunInference(self.handler)
                | "ByShard" >> beam.Map(_by_prompt_shard, per_shard)
                | "Group" >> beam.GroupByKey()
            )
            entries = grouped | "WriteShard" >> beam.Map(_write_responses, self.path, options)
        else:
            entries = (
                examples
                | "Key" >> beam.Map(_keyed)
                | "Teacher" >> RunInference(KeyedModelHandler(self.handler))
                | "ByShard" >> beam.Map(_by_shard, self.shard_size)
                | "Group" >> beam.GroupByKey()
                | "WriteShard" >> beam.Map(_write, self.path, self.settings)
            )
        return (
            entries
            | "All" >> beam.combiners.ToList()
            | "Manifest" >> beam.Map(_manifest, self.path, self.settings)
        )


def label_settings(teacher: str, output: str, top_k: int | None, shard_size: int) -> dict:
    """The manifest's `"settings"` for a Beam run (the data is fingerprinted by its shards).

    Example:
    >>> label_settings("id:t", "logits", None, 100)["runner"]
    'beam'
    """
    return {
        "teacher": teacher,
        "data": "beam",
        "output": output,
        "top_k": top_k,
        "shard_size": shard_size,
        "num_workers": 1,
        "runner": "beam",
    }


def _keyed(element):
    index, example = element
    x, y = example if isinstance(example, tuple) else (example, None)
    return (int(index), y), np.asarray(x)


def _by_shard(result, shard_size: int):
    (index, y), prediction = result
    outputs, confidence = prediction.inference
    return index // shard_size, (index, prediction.example, y, outputs, confidence)


def _write(group, path: str, settings: dict) -> dict:
    """Writes one shard from its examples, sorted by index; its manifest entry."""
    shard, members = group
    members = sorted(members, key=lambda member: member[0])
    indices = [m[0] for m in members]
    x = np.stack([m[1] for m in members])
    outputs = np.stack([m[3] for m in members])
    confidence = None if members[0][4] is None else np.array([m[4] for m in members], "float32")
    labels = None if members[0][2] is None else np.asarray([m[2] for m in members])
    kind = targets.stored_kind(settings["output"], settings["top_k"])
    fields = teacher_labels.record_fields(x, labels, outputs, confidence, kind, settings)
    entry, records = _write_shard(path, shard, fields)
    facts = teacher_labels.teacher_facts(outputs, kind, probe=False)
    return {
        **entry,
        "index": shard,
        "first": indices[0],
        "last": indices[-1],
        "features": shards.features_of(records[0]),
        "facts": facts,
    }


def _prompt(element, options):
    index, prompt = element
    return int(index), responses.prompt_tokens([prompt], options)[0], prompt


def _by_prompt_shard(result, per_shard: int):
    (index, tokens, _), (samples, scored) = result.example, result.inference
    return index // per_shard, (index, tokens, samples, scored)


def _write_shard(path: str, shard: int, fields: dict) -> tuple[dict, list]:
    """Writes a shard's batch of fields as records (on the worker); its entry and records."""
    records = [{k: np.asarray(v[i]) for k, v in fields.items()} for i in range(len(fields["x"]))]
    pathlib.Path(path).mkdir(parents=True, exist_ok=True)
    return shards.write_shard(pathlib.Path(path) / f"shard-{shard:05d}.tfrecord", records), records


def _write_responses(group, path: str, options) -> dict:
    """Writes one shard of responses (whole prompts, by index); its manifest entry."""
    shard, members = group
    members = sorted(members, key=lambda member: member[0])
    facts = {"scored": any(m[3] for m in members)}
    for member in members:
        responses.check_same_top_k(facts, member[2][0], member[0])
    entry, records = _write_shard(
        path,
        shard,
        responses.response_records(
            [m[1] for m in members], [m[2] for m in members], members[0][0], options
        ),
    )
    return {
        **entry,
        "index": shard,
        "first": members[0][0],
        "last": members[-1][0],
        "units": len(members),
        "summary": responses.shard_summary(records),
        "features": shards.features_of(records[0]),
        "facts": facts,
    }


def _manifest(entries: list, path: str, settings: dict) -> dict:
    """The complete manifest, written last; refuses gaps in the indices."""
    entries = sorted(entries, key=lambda entry: entry["index"])
    if not entries:
        raise TeacherLabelsError("The data to label is empty; no manifest was written.")
    count = sum(entry["examples"] for entry in entries)
    units = sum(entry.get("units", entry["examples"]) for entry in entries)  # examples or prompts
    if entries[-1]["last"] != units - 1 or entries[0]["first"] != 0:
        raise TeacherLabelsError(
            f"The indices must be 0..n-1 without gaps or repeats; {units} "
            f"elements, last {entries[-1]['last']}."
        )
    if len({str(e["facts"].get("response_top_k")) for e in entries}) > 1:
        raise TeacherLabelsError("Some responses have top-k outputs of another size than others.")
    digest = hashlib.sha256("".join(e["data_sha256"] for e in entries).encode()).hexdigest()
    keys = ("file", "examples", "sha256", "data_sha256", "summary")
    manifest = {
        "format": shards.FORMAT,
        "worker_index": 0,
        **entries[0]["facts"],
        "settings": {**settings, "data": f"beam:{digest[:16]}"},
        "features": entries[0]["features"],
        "num_examples": count,
        "shards": [{k: e[k] for k in keys if k in e} for e in entries],
    }
    if settings["output"] == "sequences":
        manifest = responses.with_totals(
            {**manifest, "scored": any(e["facts"]["scored"] for e in entries)}
        )
    return shards.write_complete_manifest(pathlib.Path(path) / shards.MANIFEST, manifest, count)


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
    **sequence_options,
) -> dict:
    """`label_with_teacher` for arrays, on Beam: one call, any runner.

    Args:
        teacher: A `keras.Model` (saved to `path/teacher.keras` for the
            workers; not part of the labels), or a callable.
        data: `x` or `(x, y)` arrays.
        path: Output directory.
        output: As for `label_with_teacher`.
        top_k: As for `label_with_teacher`.
        shard_size: Examples per shard.
        teacher_id: As for `label_with_teacher`.
        pipeline_options: `apache_beam.options.pipeline_options.PipelineOptions`
            (default: the DirectRunner in this process).
        **sequence_options: For `output="sequences"` (`teacher` is then a
            `generate` callable and `data` the prompts): as for
            `label_with_teacher`.

    Returns:
        The manifest.

    Raises:
        TeacherLabelsError: As `label_with_teacher` (the teacher's own errors
            fail the pipeline, with their message), or when `path` holds a
            complete run or files keras-distill did not write.

    Example:
    >>> import tempfile
    >>> x = np.random.rand(30, 4).astype("float32")
    >>> label(lambda b: b[:, :3], x, tempfile.mkdtemp(), shard_size=10)["num_examples"]
    30
    """
    import keras

    output = teacher_labels.output_kind(teacher, output)
    teacher_labels.check_arguments(teacher, output, top_k, shard_size, 1)
    fingerprint = teacher_labels.fingerprint_teacher(teacher, teacher_id)
    if output == "sequences":
        options = responses.SequenceOptions(**sequence_options)
        return _run(
            list(enumerate(data)),
            GenerateModelHandler(teacher, options),
            path,
            responses.sequence_settings(fingerprint, "beam", options, shard_size),
            pipeline_options,
        )
    x, y = data if isinstance(data, tuple) else (data, None)
    settings = label_settings(fingerprint, output, top_k, shard_size)
    handler = CallableModelHandler(teacher)
    if isinstance(teacher, keras.Model):  # local workers read it; on a cluster, use a shared path
        model_path = pathlib.Path(tempfile.mkdtemp()) / "teacher.keras"
        teacher.save(model_path)
        handler = KerasModelHandler(model_path)
    examples = [(i, (x[i], y[i]) if y is not None else x[i]) for i in range(len(x))]
    return _run(examples, handler, path, settings, pipeline_options)


def _run(examples: list, handler, path, settings: dict, pipeline_options) -> dict:
    with beam.Pipeline(options=pipeline_options) as pipeline:
        _ = (
            pipeline
            | "Examples" >> beam.Create(examples)
            | LabelWithTeacher(handler, path, settings)
        )
    return shards.read_manifests(pathlib.Path(path), allow_incomplete=False, verify=True)[0]


def _check_directory(directory: pathlib.Path) -> None:
    """Refuses a finished run or foreign files; a failed run's shards are rewritten."""
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / shards.MANIFEST).exists():
        raise TeacherLabelsError(
            f"{str(directory)!r} already holds a complete labelling run; "
            "use a new directory (nothing was changed)."
        )
    foreign = [p.name for p in directory.iterdir() if not p.name.startswith("shard-")]
    if foreign:
        raise TeacherLabelsError(
            f"{str(directory)!r} holds files keras-distill did not write "
            f"({foreign[:5]}); use an empty or new directory."
        )
