"""Storing a generating teacher's responses: `label_responses`.

The prompts are normalised and checked (`keras_distill._src.labelling.responses`),
a worker takes its contiguous part of them (`keras_distill._src.labelling.worker_parts`,
as for arrays), the output is opened like every writer's
(`keras_distill._src.labelling.identity`: directory rule, lock, identity), and
the responses are written prompt by prompt into shards with token counts and
score ranges in the manifest.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np

from keras_distill._src.labelling import arguments, responses, worker_parts
from keras_distill._src.labelling.errors import TeacherLabelsError
from keras_distill._src.labelling.identity import opened_output, responses_identity
from keras_distill._src.labelling.manifest import Manifest
from keras_distill._src.labelling.responses import SequenceOptions
from keras_distill._src.labelling.shards import ShardWriter
from keras_distill._src.teachers.black_box import fingerprint_teacher
from keras_distill._src.utils import storage


def shard_summary(records: list[dict]) -> dict:
    """What the manifest keeps of a shard's responses: token counts and score range."""
    response = [int(r["response_mask"].sum()) for r in records]
    prompt = [int(np.count_nonzero(r["x"])) - k for r, k in zip(records, response, strict=True)]
    scores = [float(r["score"]) for r in records]
    return {
        "prompt_tokens": sum(prompt),
        "response_tokens": sum(response),
        "longest": max(p + k for p, k in zip(prompt, response, strict=True)),
        "score_min": min(scores),
        "score_max": max(scores),
        "score_sum": sum(scores),
    }


def response_totals(shards: list, count: int, num_samples: int) -> dict:
    """A complete run's prompts, token counts and score range, from its shards' summaries."""
    summaries = [shard["summary"] for shard in shards]
    return {
        "prompts": count // num_samples,
        "prompt_tokens": sum(s["prompt_tokens"] for s in summaries),
        "response_tokens": sum(s["response_tokens"] for s in summaries),
        "longest": max(s["longest"] for s in summaries),
        "score_range": [
            min(s["score_min"] for s in summaries),
            max(s["score_max"] for s in summaries),
        ],
        "score_mean": sum(s["score_sum"] for s in summaries) / max(count, 1),
    }


def label_responses(
    generate: Callable,
    prompts,
    path: str | os.PathLike,
    *,
    options: SequenceOptions,
    batch_size: int = 64,
    shard_size: int = 10_000,
    teacher_id: str | None = None,
    worker_index: int | None = None,
    num_workers: int | None = None,
    verbose: int = 1,
    overwrite: bool = False,
) -> dict:
    """Stores a generating teacher's responses to prompts, for sequence-level distillation.

    Every response (`options.num_samples` per prompt) becomes one record: the
    prompt and response tokens padded to `options.max_length`, the next
    tokens, a mask of the positions that predict the response, its score and
    its rank among its prompt's samples. `load_teacher_labels` reads them
    back for `Distiller(teacher=None, student=causal_lm)`. Runs resume after
    a kill (whole prompts per shard), and a directory of another teacher,
    other prompts or other options is refused, as for `label_with_teacher`.

    Args:
        generate: A callable from a list of prompts (as given) to one response
            per prompt (token lists, a padded array or a `tf.RaggedTensor`),
            to `(responses, scores)`, or to a dict with `"responses"`,
            `"scores"` and `"top_k"` (per response, the teacher's top-k
            log-probabilities and token ids at each response position).
        prompts: A padded int array, token lists, or strings (with
            `options.tokenizer`).
        path: Output directory: a local path or a `tf.io.gfile` URL.
        options: A `SequenceOptions` (`vocabulary_size`, `max_length`,
            `num_samples`, `score`, `pad_id`, `tokenizer`).
        batch_size: Prompts per `generate` call.
        shard_size: Responses per shard (rounded up to whole prompts).
        teacher_id: A string naming the teacher's version (a resume with
            another is refused).
        worker_index: This worker's part, for labelling on several machines
            into one directory: each labels a contiguous part of the prompts
            into its own shards and `manifest-part-I-of-N.json`; the parts
            load together as one set.
        num_workers: Number of parts. Both default to the `TF_CONFIG` cluster
            (chief first, then workers), else to one part.
        verbose: 1 shows a progress bar with prompts/s and tokens/s.
        overwrite: Relabel this part even if `path` holds another teacher's,
            prompts' or options' responses (their files are deleted first).

    Returns:
        The manifest (JSON form) of this worker's part.

    Raises:
        TeacherLabelsError: Naming the prompt, for a response that fails a
            check (count, vocabulary, length, empty, score not finite); for an
            empty prompt or an empty part; if `path` holds another run.
        ValueError: For an argument of the wrong type or range.

    Example:
    >>> import tempfile
    >>> import keras_distill as kd
    >>> reverse = lambda batch: [list(prompt)[::-1] for prompt in batch]
    >>> folder = tempfile.mkdtemp()
    >>> options = kd.labelling.SequenceOptions(vocabulary_size=8, max_length=8)
    >>> manifest = kd.labelling.label_responses(reverse, [[1, 2, 3], [4, 5]], folder,
    ...                                         teacher_id="reverse", options=options, verbose=0)
    >>> manifest["num_examples"], manifest["response_tokens"]
    (2, 5)
    >>> x, targets = next(iter(kd.load_teacher_labels(folder, batch_size=2)))
    >>> x.numpy()[0].tolist(), targets["teacher_response_mask"].numpy()[0].tolist()
    ([1, 2, 3, 3, 2, 1, 0, 0], [0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    """
    _check_arguments(generate, options, batch_size, shard_size, overwrite)
    directory = storage.check_path(path, TeacherLabelsError)
    worker_index, num_workers = worker_parts.worker_part(worker_index, num_workers)
    tokens = responses.prompt_tokens(prompts, options)
    fingerprint = fingerprint_teacher(generate, teacher_id)
    identity = responses_identity(fingerprint, tokens, options, shard_size, (num_workers, None))
    part = worker_parts.part_range(len(tokens), worker_index, num_workers)
    if part.start == part.stop:
        raise TeacherLabelsError(
            f"Worker {worker_index} of {num_workers} has no prompt to label ({len(tokens)} "
            "prompts); use fewer workers. Nothing was written."
        )
    with opened_output(directory, identity, worker_index, overwrite) as stored:
        manifest = stored or Manifest(identity.settings, worker_index)
        writer = ShardWriter(directory, manifest, summarize=shard_summary)
        if writer.manifest.complete:
            return writer.manifest.to_json()
        labelling = (generate, tokens, list(prompts), part)
        _generate_into(writer, labelling, batch_size, options, verbose)
        manifest = writer.finish(len(part) * options.num_samples)
        manifest.facts.update(
            response_totals(manifest.shards, manifest.num_examples, options.num_samples)
        )
        writer.save()
        return manifest.to_json()


def _check_arguments(generate, options, batch_size, shard_size, overwrite) -> None:
    if not callable(generate):
        raise TypeError(
            f"`generate` must be a callable from prompts to responses; received {generate!r}."
        )
    if not isinstance(options, SequenceOptions):
        raise TypeError(
            "`options` must be a kd.labelling.SequenceOptions(vocabulary_size=..., "
            f"max_length=...); received {options!r}."
        )
    arguments.positive_int("batch_size", batch_size)
    arguments.positive_int("shard_size", shard_size)
    arguments.flag("overwrite", overwrite)


def _generate_into(writer, labelling: tuple, batch_size: int, options, verbose: int) -> None:
    """Samples and writes the responses to this part's prompts from the first not yet stored.

    `labelling` is `(generate, every prompt's tokens, the prompts as given,
    this part's range)`; prompt indices are the run's, not the part's.
    """
    import keras

    generate, tokens, raw, part = labelling
    progress = keras.utils.Progbar(len(part), unit_name="prompt", verbose=verbose)
    done = writer.done // options.num_samples
    progress.update(done)
    started, generated_tokens = time.perf_counter(), 0
    for start in range(part.start + done, part.stop, batch_size):
        stop = min(start + batch_size, part.stop)
        batch, indices = tokens[start:stop], list(range(start, stop))
        samples, scored = responses.sample_batch(generate, batch, raw[start:stop], indices, options)
        writer.manifest.facts["scored"] = scored
        responses.check_same_top_k(writer.manifest.facts, samples[0][0], start)
        writer.add(responses.response_records(batch, samples, start, options))
        generated_tokens += sum(len(sample.response) for per in samples for sample in per)
        elapsed = max(time.perf_counter() - started, 1e-9)
        rates = [("prompts/s", (stop - part.start - done) / elapsed)]
        progress.update(
            stop - part.start, values=rates + [("tokens/s", generated_tokens / elapsed)]
        )
