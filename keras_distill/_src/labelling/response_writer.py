"""Storing a generating teacher's responses: `label_with_teacher(..., output="sequences")`.

The prompts are normalised and checked (`keras_distill._src.labelling.responses`),
the output opened like every writer's (`keras_distill._src.labelling.identity`:
directory rule, lock, identity), and the responses written prompt by prompt
into shards with token counts and score ranges in the manifest.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np

from keras_distill._src.labelling import responses
from keras_distill._src.labelling.identity import Identity, opened_output
from keras_distill._src.labelling.manifest import Manifest, Settings
from keras_distill._src.labelling.responses import SequenceOptions
from keras_distill._src.labelling.shards import ShardWriter


def shard_summary(records: list[dict]) -> dict:
    """What the manifest keeps of a shard's responses: token counts and score range.

    Example:
    >>> record = {"x": np.array([3, 4, 5, 0]), "response_mask": np.array([0, 1, 1, 0.0]),
    ...           "score": np.float32(-0.5)}
    >>> shard_summary([record])["response_tokens"]
    2
    """
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
    """A complete run's prompts, token counts and score range, from its shards' summaries.

    Example:
    >>> summary = {"prompt_tokens": 4, "response_tokens": 2, "longest": 5, "score_min": 0.0,
    ...            "score_max": 1.0, "score_sum": 1.0}
    >>> response_totals([{"summary": summary}], 2, 1)["score_mean"]
    0.5
    """
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


def prompts_fingerprint(prompts: list) -> str:
    """A hash of the normalised prompts: the data's fingerprint.

    Example:
    >>> prompts_fingerprint([np.array([1, 2])]) == prompts_fingerprint([[1, 2]])
    True
    """
    digest = hashlib.sha256()
    for prompt in prompts:
        digest.update(np.asarray(prompt, "int64").tobytes() + b"|")
    return digest.hexdigest()[:16]


def sequence_settings(
    teacher_id: str, data_id: str, options: SequenceOptions, shard_size: int, runner=None
) -> Settings:
    """The `Settings` of stored responses (whole prompts per shard).

    Example:
    >>> sequence_settings("id:t", "prompts:ab", SequenceOptions(8, 4, num_samples=3), 10
    ...                   ).shard_size
    12
    """
    n = options.num_samples
    return Settings(
        teacher=teacher_id,
        data=data_id,
        output="sequences",
        top_k=None,
        shard_size=-(-shard_size // n) * n,
        num_workers=1,
        runner=runner,
        num_samples=n,
        max_length=options.max_length,
        vocabulary_size=options.vocabulary_size,
        pad_id=options.pad_id,
    )


def label_sequences(
    generate,
    prompts,
    path: str,
    *,
    options: SequenceOptions,
    teacher_id: str,
    batch_size: int,
    shard_size: int,
    verbose: int,
    overwrite: bool = False,
) -> dict:
    """Collects and stores `generate`'s responses (see `keras_distill.label_with_teacher`).

    Returns:
        The manifest's JSON form.

    Example:
    >>> import tempfile
    >>> echo = lambda batch: [p[::-1] for p in batch]
    >>> manifest = label_sequences(echo, [[1, 2, 3], [4, 5]], tempfile.mkdtemp(),
    ...     options=SequenceOptions(vocabulary_size=8, max_length=8), teacher_id="echo",
    ...     batch_size=2, shard_size=10, verbose=0)
    >>> manifest["num_examples"], manifest["response_tokens"]
    (2, 5)
    """
    tokens = responses.prompt_tokens(prompts, options)
    data_id = f"prompts:{prompts_fingerprint(tokens)}"
    settings = sequence_settings(teacher_id, data_id, options, shard_size)
    with opened_output(path, Identity(settings), 0, overwrite) as stored:
        writer = ShardWriter(path, stored or Manifest(settings), summarize=shard_summary)
        if writer.manifest.complete:
            return writer.manifest.to_json()
        _generate_into(writer, generate, tokens, list(prompts), batch_size, options, verbose)
        manifest = writer.finish(len(tokens) * options.num_samples)
        manifest.facts.update(
            response_totals(manifest.shards, manifest.num_examples, options.num_samples)
        )
        writer.save()
        return manifest.to_json()


def _generate_into(writer, generate, tokens, raw, batch_size, options, verbose) -> None:
    """Samples and writes the responses to the prompts from the first not yet stored."""
    import keras

    progress = keras.utils.Progbar(len(tokens), unit_name="prompt", verbose=verbose)
    done = writer.done // options.num_samples
    progress.update(done)
    started, generated_tokens = time.perf_counter(), 0
    for start in range(done, len(tokens), batch_size):
        batch = tokens[start : start + batch_size]
        indices = list(range(start, start + len(batch)))
        samples, scored = responses.sample_batch(
            generate, batch, raw[start : start + batch_size], indices, options
        )
        writer.manifest.facts["scored"] = scored
        responses.check_same_top_k(writer.manifest.facts, samples[0][0], start)
        writer.add(responses.response_records(batch, samples, start, options))
        generated_tokens += sum(len(sample.response) for per in samples for sample in per)
        elapsed = max(time.perf_counter() - started, 1e-9)
        rates = [("prompts/s", (indices[-1] + 1 - done) / elapsed)]
        progress.update(indices[-1] + 1, values=rates + [("tokens/s", generated_tokens / elapsed)])
