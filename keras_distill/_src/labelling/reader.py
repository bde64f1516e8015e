"""Stored teacher outputs read back for training: `load_teacher_labels`.

The directories `label_with_teacher` (or `kd.labelling.beam`) writes are
checked against their manifests (`keras_distill._src.labelling.shards`), parsed a batch of
records at a time with the stored kind's entry in `keras_distill._src.objective.stored_kinds`,
kept in memory as tensors when they fit (an epoch then costs a shuffle and a
batch, no parsing), and, for generated responses, selected (best of n) and
weighted by their scores (`SCORE_WEIGHTINGS`).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from keras_distill._src.labelling import arguments, shards
from keras_distill._src.labelling.errors import TeacherLabelsError
from keras_distill._src.objective.stored_kinds import StoredKind, stored_kind
from keras_distill._src.utils import storage

CACHE_BYTES = 1 << 30  # load_teacher_labels(cache="auto") keeps up to this much in memory
PARSE_BATCH_SIZE = 1024  # records parsed at once
SCORE_WEIGHTINGS = ("linear", "softmax", "threshold")
PER_PROMPT_KEYS = ("teacher_group_scores", "teacher_rank")


def load_teacher_labels(
    path: str | os.PathLike,
    batch_size: int | None = 32,
    *,
    shuffle: bool | int | None = None,
    seed: int | None = None,
    allow_incomplete: bool = False,
    verify: bool = True,
    cache: bool | str = "auto",
    score_weighting=None,
    best_of_n: bool = False,
):
    """Reads stored teacher outputs as a `tf.data.Dataset` of `(x, targets)`.

    Every shard is checked against the manifest (presence and SHA-256) first,
    unless `verify=False` (which saves reading the data twice).
    Probabilities are turned into log-probabilities, which serve as logits.
    Unlabeled examples get a placeholder label and `label_mask` 0, so labeled
    and unlabeled sets can be concatenated (load both with `batch_size=None`,
    `concatenate`, shuffle, then batch).

    Args:
        path: A directory written by `label_with_teacher`.
        batch_size: Batch size, or `None` for single examples.
        shuffle: True to shuffle (as `fit(shuffle=True)`: a buffer of
            `SHUFFLE_BUFFER` = 10,000 records, or all of them if fewer), an
            integer >= 1 for a buffer of that many records, or None or False
            to keep the stored order.
        seed: Shuffle seed (an integer), or None.
        allow_incomplete: For outputs labelled in parts by several workers,
            load the complete parts even if others are missing or unfinished.
        verify: Check every shard's presence and checksum before loading.
        cache: Keep the parsed batches of records in memory after the first
            epoch (`Dataset.cache()`; later epochs cost no parsing): `"auto"`
            when the shards total at most `CACHE_BYTES` (1 GiB), True, or
            False (read and parse every epoch).
        score_weighting: For generated responses (`output="sequences"`): None
            (every response weighs 1), `"linear"`, `"softmax"`, `"threshold"`
            or a callable `fn(score, group_scores) -> weight`; see
            `score_weights`. The weight is the target `"teacher_weight"`.
        best_of_n: For generated responses: keep only the best-scored response
            of each prompt (rejection sampling).

    Records are parsed a batch at a time. Keras' `fit(shuffle=True)` does not
    shuffle datasets: pass `shuffle=` here (the records are reshuffled every
    epoch, seeded by `seed`).

    Returns:
        A `tf.data.Dataset` ready for `Distiller(teacher=None, ...).fit`. Parts
        written by several workers are read in worker order.

    Raises:
        ValueError: For an argument of the wrong type or range (named, with
            the value received), checked before any reading.
        TeacherLabelsError: If the manifest is missing, malformed or marks an
            incomplete run; if a shard is missing or corrupt; if the parts of a
            multi-worker run do not cover the data exactly once (the message
            names the missing parts).

    Example:
    >>> import tempfile
    >>> import numpy as np
    >>> from keras_distill import label_with_teacher
    >>> folder = tempfile.mkdtemp()
    >>> x, y = np.random.rand(10, 4).astype("float32"), np.arange(10) % 3
    >>> _ = label_with_teacher(lambda b: b[:, :3], (x, y), folder, verbose=0)
    >>> batch_x, targets = next(iter(load_teacher_labels(folder, batch_size=5)))
    >>> sorted(targets), tuple(targets["teacher_logits"].shape)
    (['label_mask', 'labels', 'teacher_logits'], (5, 3))
    """
    import tensorflow as tf

    _check_arguments(batch_size, seed, allow_incomplete, verify, cache, best_of_n)
    directory = storage.check_path(path, TeacherLabelsError)
    manifests = shards.read_manifests(directory, allow_incomplete, verify)
    first = combined_facts(manifests)  # the JSON form, which the selection functions read
    output = manifests[0].settings.output
    files = [storage.join(directory, shard["file"]) for m in manifests for shard in m.shards]
    num_examples = sum(m.num_examples for m in manifests)
    shuffle = arguments.shuffle_buffer(shuffle, num_examples)
    kind = stored_kind(output, manifests[0].settings.top_k)
    records = tf.data.TFRecordDataset(files).apply(
        tf.data.experimental.assert_cardinality(num_examples)
    )
    weights = check_selection(first, score_weighting, best_of_n)
    if best_of_n:
        records = best_of_each_prompt(records, first)
    run_facts = {**first.get("settings", {}), **first}  # a constant may be a run setting
    constants = {
        name: run_facts[name] for name in kind.constants if run_facts.get(name) is not None
    }
    parse = record_parser(manifests[0].features, kind, constants=constants)
    if _fits_in_memory(cache, directory, manifests):
        # Parsed once, in batches kept as tensors: an epoch costs a shuffle and a batch.
        dataset = _shuffled(_examples(records, parse, cache=True), shuffle, seed)
        dataset = dataset.batch(batch_size) if batch_size else dataset
    else:  # parsed every epoch, a batch at a time
        records = _shuffled(records, shuffle, seed)
        dataset = (
            records.batch(batch_size).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
            if batch_size
            else _examples(records, parse, cache=False)
        )
    if output == "sequences":
        dataset = dataset.map(with_weights(weights))
    return dataset.prefetch(tf.data.AUTOTUNE)


def _check_arguments(batch_size, seed, allow_incomplete, verify, cache, best_of_n) -> None:
    """Refuses an argument of `load_teacher_labels` of the wrong type or range (`shuffle` apart)."""
    arguments.positive_int("batch_size", batch_size, allow_none=True)
    arguments.optional_int("seed", seed)
    for name, value in (("allow_incomplete", allow_incomplete), ("verify", verify)):
        arguments.flag(name, value)
    arguments.flag("best_of_n", best_of_n)
    if (
        not (isinstance(cache, str) and cache == "auto")
        and cache is not True
        and cache is not False
    ):
        raise ValueError(f"`cache` must be 'auto', True or False; received {cache!r}.")


def combined_facts(manifests: list) -> dict:
    """The first part's manifest (JSON form), with the response totals of all parts.

    The selection of responses (`best_of_n`, `score_weighting`) reads the
    run's example count, score range and mean: of every part, not the first.
    """
    first = manifests[0].to_json()
    if len(manifests) == 1 or "score_range" not in first:
        return first
    counts = [m.num_examples for m in manifests]
    ranges = [m.facts["score_range"] for m in manifests]
    means = [m.facts["score_mean"] for m in manifests]
    return {
        **first,
        "num_examples": sum(counts),
        "scored": any(m.facts.get("scored") for m in manifests),
        "score_range": [min(r[0] for r in ranges), max(r[1] for r in ranges)],
        "score_mean": sum(c * m for c, m in zip(counts, means, strict=True)) / max(sum(counts), 1),
    }


def _examples(records, parse, cache: bool):
    """Single examples, parsed a batch of records at a time (the parsed batches kept if `cache`)."""
    import tensorflow as tf

    count = int(records.cardinality())  # known unless best-of-n selection left it open
    batches = records.batch(PARSE_BATCH_SIZE).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    examples = (batches.cache() if cache else batches).unbatch()  # few large tensors in memory
    # unbatch forgets the count; Keras' progress bar wants it
    return (
        examples.apply(tf.data.experimental.assert_cardinality(count)) if count >= 0 else examples
    )


def _shuffled(dataset, shuffle, seed):
    if not shuffle:
        return dataset
    return dataset.shuffle(shuffle, seed=seed, reshuffle_each_iteration=True)


def _fits_in_memory(cache, directory: str, manifests: list) -> bool:
    if cache != "auto":
        return cache
    size = sum(
        storage.size(storage.join(directory, s["file"])) for m in manifests for s in m.shards
    )
    return size <= CACHE_BYTES


def record_parser(features: dict, kind: StoredKind, constants: dict | None = None):
    """A function from a batch of serialized records to `(x, targets)` batches.

    Records are parsed a vector at a time (`tf.io.parse_example`, after
    `Dataset.batch`: one op per batch instead of per record), per the kind's
    table entry.

    Args:
        features: The manifest's `"features"` (name -> dtype and shape).
        kind: The stored kind (`keras_distill._src.objective.stored_kinds`).
        constants: The manifest's entries for the kind's `constants` (e.g.
            `{"teacher_classes": 10}`), repeated into every example's targets.

    Returns:
        `parse(serialized) -> (x, targets)`, for `tf.data.Dataset.map`.
    """
    import tensorflow as tf

    needed = {"x", "labels", *kind.fields, *kind.optional}
    spec = {name: tf.io.FixedLenFeature([], tf.string) for name in features if name in needed}
    first = features[next(iter(kind.fields))]
    label_shape = first["shape"][:-1] if kind.classes_last else first["shape"]
    fields = {**kind.fields, **{k: v for k, v in kind.optional.items() if k in features}}

    def decode(raw, name):
        info = features[name]
        return tf.reshape(tf.io.decode_raw(raw[name], info["dtype"]), [-1, *info["shape"]])

    def parse(serialized):
        raw, lead = tf.io.parse_example(serialized, spec), [tf.shape(serialized)[0]]
        stored = kind.decode({key: decode(raw, field) for field, key in fields.items()})
        if "labels" in features:
            labels, mask = decode(raw, "labels"), tf.ones(lead)
        else:
            labels, mask = tf.zeros(lead + list(label_shape), kind.label_dtype), tf.zeros(lead)
        repeated = {
            key: tf.fill(lead, tf.constant(constants[name], "int32"))
            for name, key in kind.constants.items()
            if name in (constants or {})
        }
        return decode(raw, "x"), {**stored, **repeated, "labels": labels, "label_mask": mask}

    return parse


def score_weights(weighting, manifest: dict) -> Callable:
    """`weights(score, group_scores)` (tensors) for `load_teacher_labels(score_weighting=...)`.

    - `"linear"`: the score mapped linearly from the run's range to [0, 1];
    - `"softmax"`: `n * softmax(group scores)` of the response's own prompt
      (a prompt's weights sum to its `n` responses, shifted to the better ones);
    - `"threshold"`: 1 for scores at least the run's mean, else 0;
    - a callable `fn(score, group_scores) -> weight`, on tensors.

    Raises:
        ValueError: For an unknown weighting, or a weighting of unscored responses.
    """
    from keras import ops

    if callable(weighting):
        return weighting
    if weighting not in SCORE_WEIGHTINGS:
        raise ValueError(
            f"`score_weighting` must be one of {SCORE_WEIGHTINGS} or a callable; "
            f"received {weighting!r}."
        )
    if not manifest.get("scored"):
        raise ValueError(
            f"score_weighting={weighting!r}, but these responses have no scores: "
            "have `generate` return (responses, scores), or pass score=."
        )
    low, high = manifest["score_range"]
    if weighting == "linear":
        return lambda s, g: (ops.cast(s, "float32") - low) / (high - low) if high > low else 1.0
    if weighting == "threshold":
        return lambda s, g: ops.cast(ops.cast(s, "float32") >= manifest["score_mean"], "float32")
    return lambda s, g: (
        ops.cast(ops.shape(g)[-1], "float32")
        * ops.exp(ops.cast(s, "float32") - ops.logsumexp(ops.cast(g, "float32"), axis=-1))
    )


def check_selection(manifest: dict, score_weighting, best_of_n: bool) -> Callable | None:
    """The weights function for `load_teacher_labels`, or None; refuses misuse.

    Raises:
        ValueError: For score weighting or best-of-n of outputs that are not
            generated responses, or of unscored responses.
    """
    output = manifest["settings"]["output"]
    if output != "sequences" and (score_weighting is not None or best_of_n):
        raise ValueError(
            f"score_weighting and best_of_n apply to generated responses "
            f"(output='sequences'); these outputs are {output!r}."
        )
    if best_of_n and not manifest.get("scored"):
        raise ValueError(
            "best_of_n needs scored responses: have `generate` return "
            "(responses, scores), or pass score= when labelling."
        )
    return None if score_weighting is None else score_weights(score_weighting, manifest)


def best_of_each_prompt(records, manifest: dict):
    """The serialized records of each prompt's best-scored response (rank 0)."""
    import tensorflow as tf

    spec = {"rank": tf.io.FixedLenFeature([], tf.string)}

    @tf.autograph.experimental.do_not_convert  # plain TF ops; nothing to convert
    def best(serialized):
        rank = tf.io.decode_raw(tf.io.parse_single_example(serialized, spec)["rank"], tf.int32)
        return tf.equal(rank[0], 0)

    return records.filter(best).apply(
        tf.data.experimental.assert_cardinality(
            manifest["num_examples"] // manifest["settings"]["num_samples"]
        )
    )


def with_weights(weights: Callable | None) -> Callable:
    """A `Dataset.map` function giving every response its `"teacher_weight"` (1 without weights).

    The per-prompt fields (`"teacher_group_scores"`, `"teacher_rank"`) are
    dropped once used, so that datasets of responses with the same
    `max_length` concatenate, whatever their `num_samples` (e.g. labelled
    answers and a teacher's samples).
    """
    import tensorflow as tf
    from keras import ops

    @tf.autograph.experimental.do_not_convert  # the weighting is plain ops (and may be a lambda)
    def add(x, stored):
        score = ops.cast(stored["teacher_score"], "float32")
        weight = (
            ops.ones_like(score)
            if weights is None
            else weights(score, stored["teacher_group_scores"])
        )
        kept = {k: v for k, v in stored.items() if k not in PER_PROMPT_KEYS}
        return x, {**kept, "teacher_weight": ops.cast(weight, "float32")}

    return add
