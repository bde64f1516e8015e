"""Label data with a teacher once, in bulk; train students from the stored outputs.

`label_with_teacher` runs a Keras teacher or any Python callable (a black box,
e.g. a remote model behind an API) over arrays or a `tf.data` dataset and
writes the inputs, any hard labels and the teacher's outputs to TFRecord
shards with a JSON manifest. Runs are resumable: completed shards are never
rewritten, and a rerun continues after the last complete shard.
`load_teacher_labels` reads them back as a `tf.data.Dataset` for
`Distiller(teacher=None, ...).fit`.

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
from typing import Any

import numpy as np

OUTPUT_KINDS = ("logits", "probabilities", "scores", "labels")
FORMAT = "keras_distill.teacher_labels/1"
MANIFEST = "manifest.json"
TARGET_KEYS = frozenset(
    {
        "labels",
        "label_mask",
        "teacher_logits",
        "teacher_topk_values",
        "teacher_topk_indices",
        "teacher_rest_logsumexp",
        "teacher_labels",
        "teacher_scores",
        "teacher_confidence",
    }
)


class TeacherLabelsError(ValueError):
    """Stored teacher outputs are missing, corrupt, inconsistent or invalid.

    Example:
    >>> isinstance(TeacherLabelsError("shard missing"), ValueError)
    True
    """


# -- writing ------------------------------------------------------------------


def _arrays_of(data):
    """(x, y or None) for array data; None for a `tf.data.Dataset`."""
    import tensorflow as tf

    if isinstance(data, tf.data.Dataset):
        return None
    if isinstance(data, tuple):
        x = np.asarray(data[0])
        y = np.asarray(data[1]) if len(data) > 1 and data[1] is not None else None
    else:
        x, y = np.asarray(data), None
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


def _manifest_name(worker_index: int, num_workers: int) -> str:
    if num_workers == 1:
        return MANIFEST
    return f"manifest-part-{worker_index:05d}-of-{num_workers:05d}.json"


def _fingerprint_teacher(teacher, teacher_id: str | None) -> str:
    import keras

    if teacher_id is not None:
        return f"id:{teacher_id}"
    if isinstance(teacher, keras.Model):
        digest = hashlib.sha256()
        for weight in teacher.get_weights():
            digest.update(np.ascontiguousarray(weight).tobytes())
        return f"keras:{teacher.name}:{digest.hexdigest()[:16]}"
    name = getattr(teacher, "__qualname__", type(teacher).__qualname__)
    return f"callable:{getattr(teacher, '__module__', '')}.{name}"


def _fingerprint_arrays(*arrays) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        if array is not None:
            digest.update(str((array.shape, array.dtype)).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def _atomic_write_json(path: pathlib.Path, content: dict) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(content, indent=1, sort_keys=True))
    os.replace(temporary, path)


def _file_digest(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _call_teacher(teacher, x: np.ndarray, kind: str, start: int):
    """Returns (outputs, confidence or None) as NumPy, checked."""
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


def _top_k(outputs: np.ndarray, k: int, kind: str):
    """(values, indices, rest log-sum-exp) of the k largest entries per position."""
    if not 0 < k < outputs.shape[-1]:
        raise TeacherLabelsError(
            f"top_k must be between 1 and {outputs.shape[-1] - 1} (the number of classes "
            f"minus one); received {k}."
        )
    indices = np.argsort(-outputs, axis=-1, kind="stable")[..., :k].astype("int32")
    values = np.take_along_axis(outputs, indices, axis=-1)
    if kind == "probabilities":
        rest = np.log(np.maximum(1.0 - values.sum(-1), 1e-30))
        values = np.log(np.maximum(values, 1e-30))
    else:
        mask = np.ones_like(outputs, dtype=bool)
        np.put_along_axis(mask, indices, False, axis=-1)
        rest_values = np.where(mask, outputs, -np.inf)
        peak = rest_values.max(-1, keepdims=True)
        rest = (peak + np.log(np.exp(rest_values - peak).sum(-1, keepdims=True)))[..., 0]
    return values.astype("float32"), indices, rest.astype("float32")


def _features_of(record: dict) -> dict:
    return {
        name: {"dtype": str(value.dtype), "shape": list(value.shape)}
        for name, value in record.items()
    }


def _write_shard(path: pathlib.Path, records: list[dict]) -> None:
    import tensorflow as tf

    temporary = path.with_name(path.name + ".tmp")
    with tf.io.TFRecordWriter(str(temporary)) as writer:
        for record in records:
            feature = {
                name: tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.tobytes()]))
                for name, value in record.items()
            }
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())
    os.replace(temporary, path)


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
) -> dict:
    """Runs a teacher over data once and stores its outputs as TFRecord shards.

    Args:
        teacher: A `keras.Model`, or any callable mapping a NumPy batch of
            inputs to a batch of outputs (a black box). For `output="scores"`
            it may return `(scores, confidence)`.
        data: Inputs `x`, a tuple `(x, y)` of arrays, or a `tf.data.Dataset`
            of batches `x` or `(x, y)` (as for `fit`; it must be deterministic
            to be resumable).
        path: Directory for the shards and `manifest.json`.
        top_k: Store only the `top_k` largest logits/probabilities per
            position and their class indices, plus the log-sum-exp of the rest
            (see `keras_distill.losses.top_k_logits`).
        batch_size: Examples per teacher call (for array data).
        output: `"logits"`, `"probabilities"`, `"scores"` (regression targets
            or ratings) or `"labels"` (class ids). By default `"logits"`, or
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
    import keras

    from keras_distill.distiller import _probability_outputs

    if output is None:
        output = (
            "probabilities"
            if isinstance(teacher, keras.Model) and _probability_outputs(teacher, "auto", "teacher")
            else "logits"
        )
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

    worker_index, num_workers = _worker_part(worker_index, num_workers)
    arrays = _arrays_of(data)
    if arrays is None:
        data_id = f"dataset:{data.element_spec}"
        total = None
    else:
        data_id = f"arrays:{_fingerprint_arrays(*arrays)}"
        size = len(arrays[0])
        start, stop = size * worker_index // num_workers, size * (worker_index + 1) // num_workers
        arrays = tuple(None if a is None else a[start:stop] for a in arrays)
        total = stop - start
    settings = {
        "teacher": _fingerprint_teacher(teacher, teacher_id),
        "data": data_id,
        "output": output,
        "top_k": top_k,
        "shard_size": shard_size,
        "num_workers": num_workers,
    }
    directory = pathlib.Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    manifest_path = directory / _manifest_name(worker_index, num_workers)
    manifest = {
        "format": FORMAT,
        "settings": settings,
        "worker_index": worker_index,
        "shards": [],
        "complete": False,
    }
    if manifest_path.exists():
        previous = json.loads(manifest_path.read_text())
        if previous.get("settings") != settings:
            changed = sorted(
                key for key in settings if previous.get("settings", {}).get(key) != settings[key]
            )
            raise TeacherLabelsError(
                f"{str(directory)!r} holds teacher outputs made with other {', '.join(changed)} "
                f"({previous.get('settings')} now {settings}); refusing to mix them. Use a new "
                "directory, or delete this one to start over."
            )
        manifest = previous
        if manifest.get("complete"):
            return manifest
    own = "" if num_workers == 1 else f"part-{worker_index:05d}-"
    for stale in directory.glob(f"{own}shard-*.tmp"):
        stale.unlink()
    done = sum(shard["examples"] for shard in manifest["shards"])

    if arrays is None:
        examples = data.unbatch()
        if num_workers > 1:
            examples = examples.shard(num_workers, worker_index)
        batches = examples.skip(done).batch(batch_size).as_numpy_iterator()
    else:
        x_all, y_all = arrays
        batches = (
            (x_all[i : i + batch_size],) + (() if y_all is None else (y_all[i : i + batch_size],))
            for i in range(done, len(x_all), batch_size)
        )
    progress = keras.utils.Progbar(total, unit_name="example", verbose=verbose)
    progress.update(done)
    started, labelled = time.perf_counter(), 0
    pending: list[dict] = []

    def flush():
        index = len(manifest["shards"])
        prefix = "" if num_workers == 1 else f"part-{worker_index:05d}-"
        name = f"{prefix}shard-{index:05d}.tfrecord"
        _write_shard(directory / name, pending)
        manifest["shards"].append(
            {"file": name, "examples": len(pending), "sha256": _file_digest(directory / name)}
        )
        manifest["features"] = _features_of(pending[0])
        _atomic_write_json(manifest_path, manifest)
        pending.clear()

    position = done
    for batch in batches:
        if isinstance(batch, (tuple, list)):
            x = np.asarray(batch[0])
            y = np.asarray(batch[1]) if len(batch) > 1 else None
        else:
            x, y = np.asarray(batch), None
        outputs, confidence = _call_teacher(teacher, x, output, position)
        for i in range(len(x)):
            record = {"x": x[i]}
            if y is not None:
                record["labels"] = (
                    y[i].astype("float32") if output == "scores" else y[i].astype("int32")
                )
            if top_k is not None:
                values, indices, rest = _top_k(outputs[i], top_k, output)
                record.update(topk_values=values, topk_indices=indices, rest_logsumexp=rest)
            else:
                record["teacher"] = outputs[i]
            if confidence is not None:
                record["confidence"] = confidence[i]
            pending.append({k: np.asarray(v) for k, v in record.items()})
            if len(pending) == shard_size:
                flush()
        position += len(x)
        labelled += len(x)
        rate = labelled / max(time.perf_counter() - started, 1e-9)
        progress.update(position, values=[("examples/s", rate)])
    if pending:
        flush()
    stored_bytes = sum((directory / shard["file"]).stat().st_size for shard in manifest["shards"])
    manifest.update(
        complete=True,
        num_examples=position,
        bytes_per_example=round(stored_bytes / max(position, 1), 1),
    )
    _atomic_write_json(manifest_path, manifest)
    return manifest


# -- reading ----------------------------------------------------------------


def _read_json(path: pathlib.Path) -> dict:
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise TeacherLabelsError(f"{str(path)!r} is not valid JSON: {error}") from None
    if manifest.get("format") != FORMAT:
        raise TeacherLabelsError(
            f"{str(path)!r} has format {manifest.get('format')!r}; expected {FORMAT!r}."
        )
    return manifest


def _check_shards(directory: pathlib.Path, manifest: dict) -> None:
    for shard in manifest["shards"]:
        file = directory / shard["file"]
        if not file.exists():
            raise TeacherLabelsError(
                f"Shard {shard['file']!r} listed in the manifest is missing from "
                f"{str(directory)!r}."
            )
        if _file_digest(file) != shard["sha256"]:
            raise TeacherLabelsError(
                f"Shard {shard['file']!r} does not match its checksum in the manifest: the file "
                "is corrupt or was changed. Delete it and the manifest entry, or relabel."
            )


def _read_manifests(directory: pathlib.Path, allow_incomplete: bool, verify: bool) -> list[dict]:
    """The complete manifest(s) to load, in part order, after every check."""
    single = directory / MANIFEST
    parts = sorted(directory.glob("manifest-part-*-of-*.json"))
    if single.exists():
        manifests = [_read_json(single)]
    elif parts:
        manifests = [_read_json(part) for part in parts]
        counts = {m["settings"]["num_workers"] for m in manifests}
        settings = {json.dumps(m["settings"], sort_keys=True) for m in manifests}
        if len(counts) > 1 or len(settings) > 1:
            raise TeacherLabelsError(
                f"{str(directory)!r} holds parts of different labelling runs (num_workers "
                f"{sorted(counts)}): they may overlap. Keep one run's parts per directory."
            )
        count = counts.pop()
        present = {m["worker_index"]: m for m in manifests}
        missing = [i for i in range(count) if i not in present]
        unfinished = [i for i, m in sorted(present.items()) if not m.get("complete")]
        if (missing or unfinished) and not allow_incomplete:
            raise TeacherLabelsError(
                f"The teacher outputs in {str(directory)!r} do not cover the data: of "
                f"{count} parts, missing {missing or 'none'}, unfinished {unfinished or 'none'}. "
                "Run (or rerun) label_with_teacher for those worker indices, or pass "
                "allow_incomplete=True to load the complete parts only."
            )
        manifests = [present[i] for i in sorted(present) if present[i].get("complete")]
        if not manifests:
            raise TeacherLabelsError(f"No part in {str(directory)!r} is complete yet.")
    else:
        raise TeacherLabelsError(
            f"No {MANIFEST} in {str(directory)!r}: not a label_with_teacher output directory."
        )
    for manifest in manifests:
        if not manifest.get("complete"):
            done = sum(shard["examples"] for shard in manifest.get("shards", []))
            raise TeacherLabelsError(
                f"The teacher outputs in {str(directory)!r} are incomplete ({done} examples in "
                f"{len(manifest.get('shards', []))} shards); rerun the same label_with_teacher "
                "call to finish them."
            )
        if verify:
            _check_shards(directory, manifest)
    return manifests


def load_teacher_labels(
    path: str | os.PathLike,
    batch_size: int | None = 32,
    *,
    shuffle: int | None = None,
    seed: int | None = None,
    allow_incomplete: bool = False,
    verify: bool = True,
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
        shuffle: Shuffle buffer size, or `None` to keep the stored order.
        seed: Shuffle seed.
        allow_incomplete: For outputs labelled in parts by several workers,
            load the complete parts even if others are missing or unfinished.
        verify: Check every shard's presence and checksum before loading.

    Returns:
        A `tf.data.Dataset` ready for `Distiller(teacher=None, ...).fit`. Parts
        written by several workers are read in worker order.

    Raises:
        TeacherLabelsError: If the manifest is missing, malformed or marks an
            incomplete run; if a shard is missing or corrupt; if the parts of a
            multi-worker run do not cover the data exactly once (the message
            names the missing parts).

    Example:
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> x, y = np.random.rand(10, 4).astype("float32"), np.arange(10) % 3
    >>> _ = label_with_teacher(lambda b: b[:, :3], (x, y), folder, verbose=0)
    >>> batch_x, targets = next(iter(load_teacher_labels(folder, batch_size=5)))
    >>> sorted(targets), tuple(targets["teacher_logits"].shape)
    (['label_mask', 'labels', 'teacher_logits'], (5, 3))
    """
    import tensorflow as tf

    directory = pathlib.Path(path)
    manifests = _read_manifests(directory, allow_incomplete, verify)
    features = manifests[0]["features"]
    output = manifests[0]["settings"]["output"]
    files = [str(directory / shard["file"]) for m in manifests for shard in m["shards"]]
    num_examples = sum(m["num_examples"] for m in manifests)
    spec = {name: tf.io.FixedLenFeature([], tf.string) for name in features}

    def decode(name, raw):
        info = features[name]
        return tf.reshape(tf.io.decode_raw(raw[name], info["dtype"]), info["shape"])

    def parse(serialized):
        raw = tf.io.parse_single_example(serialized, spec)
        targets = {}
        if "topk_values" in features:
            targets["teacher_topk_values"] = decode("topk_values", raw)
            targets["teacher_topk_indices"] = decode("topk_indices", raw)
            targets["teacher_rest_logsumexp"] = decode("rest_logsumexp", raw)
            label_shape = features["topk_values"]["shape"][:-1]
        elif output == "labels":
            targets["teacher_labels"] = decode("teacher", raw)
            label_shape = features["teacher"]["shape"]
        elif output == "scores":
            targets["teacher_scores"] = decode("teacher", raw)
            label_shape = features["teacher"]["shape"]
        else:
            logits = decode("teacher", raw)
            if output == "probabilities":
                logits = tf.math.log(tf.maximum(logits, 1e-30))
            targets["teacher_logits"] = logits
            label_shape = features["teacher"]["shape"][:-1]
        if "confidence" in features:
            targets["teacher_confidence"] = decode("confidence", raw)
        if "labels" in features:
            targets["labels"] = decode("labels", raw)
            targets["label_mask"] = tf.constant(1.0)
        else:
            dtype = tf.float32 if output == "scores" else tf.int32
            targets["labels"] = tf.zeros(label_shape, dtype)
            targets["label_mask"] = tf.constant(0.0)
        return decode("x", raw), targets

    dataset = (
        tf.data.TFRecordDataset(files)
        .map(parse, num_parallel_calls=tf.data.AUTOTUNE)
        .apply(tf.data.experimental.assert_cardinality(num_examples))
    )
    if shuffle:
        dataset = dataset.shuffle(shuffle, seed=seed)
    if batch_size:
        dataset = dataset.batch(batch_size)
    return dataset.prefetch(tf.data.AUTOTUNE)
