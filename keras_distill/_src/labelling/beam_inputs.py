"""What `kd.labelling.beam.label` labels, and how its workers read it.

`label` accepts NumPy arrays (`x` or `(x, y)`), a `tf.data.Dataset` of
batches `x` or `(x, y)` (as `fit` and `label_with_teacher` take it), and
TFRecord files (`TFRecordInputs`: a file pattern and a function parsing one
serialized record into `x` or `(x, y)`). `shard_batches` streams any of them
as shard-sized `(x, y or None)` arrays, one shard in memory at a time (per
batch, never per example, Python work); `Staging` writes each shard to a
staging folder through `tf.io.gfile` (by default a hidden `.staging-<uuid>`
folder inside the output directory, else a folder of the user's, e.g. on a
bucket) as `.npy` files, and deletes the folder when the run ends, whether it
succeeded or failed. A killed run's staging folder is deleted by the next run
that holds the output's lock (`remove_stale_staging`). Streamed data is
fingerprinted from its staged shards with the digest of `fingerprint_arrays`,
so the same examples as arrays, a dataset or TFRecords give the same manifest
and the same shards.

The pipeline carries one `ShardRange` per shard (a few bytes, not the arrays,
which Beam would pickle into the pipeline itself), and each worker reads its
`ShardChunk` (a shard's contiguous examples as arrays) from the staged files
(`chunk_of_range`). Nothing here imports Apache Beam.
"""

from __future__ import annotations

import dataclasses
import io
import uuid
from collections.abc import Callable, Iterator

import numpy as np

from keras_distill._src.labelling import responses, worker_parts
from keras_distill._src.labelling.errors import TeacherLabelsError
from keras_distill._src.teachers.black_box import (
    PROBE_EXAMPLES,
    fingerprint_arrays,
    fingerprint_chunks,
)
from keras_distill._src.utils import inputs, storage

STAGING_PREFIX = ".staging-"  # + 32 hex digits: the name `lock.OURS` accepts


@dataclasses.dataclass(frozen=True)
class TFRecordInputs:
    """TFRecord files of examples for `kd.labelling.beam.label` to label.

    Attributes:
        pattern: A file pattern readable through `tf.io.gfile` (`"gs://b/train-*.tfrecord"`);
            the files are read in sorted order, so the examples' indices are stable.
        parse_fn: A function mapping one serialized record (a scalar string
            tensor) to one example `x` or `(x, y)` of tensors (traced by `tf.data.Dataset.map`).

    Raises:
        TeacherLabelsError: If `pattern` is not a string or `parse_fn` not callable.

    Example:
    >>> import tensorflow as tf
    >>> with tf.io.TFRecordWriter("ram://tfrecord-doc/a.tfrecord") as writer:
    ...     writer.write(tf.io.serialize_tensor(tf.ones(3)).numpy())
    >>> parse = lambda record: tf.io.parse_tensor(record, tf.float32)
    >>> TFRecordInputs("ram://tfrecord-doc/*.tfrecord", parse).files()
    ['ram://tfrecord-doc/a.tfrecord']
    """

    pattern: str
    parse_fn: Callable

    def __post_init__(self):
        if not isinstance(self.pattern, str):
            raise TeacherLabelsError(
                "TFRecordInputs: `pattern` must be a file pattern string; received "
                f"{self.pattern!r}."
            )
        if not callable(self.parse_fn):
            raise TeacherLabelsError(
                "TFRecordInputs: `parse_fn` must map a serialized record to `x` or `(x, y)`; "
                f"received {self.parse_fn!r}."
            )

    def files(self) -> list[str]:
        """The matching files, sorted; refuses a pattern that matches none."""
        files = storage.glob(storage.check_path(self.pattern, TeacherLabelsError))
        if not files:
            raise TeacherLabelsError(
                f"TFRecordInputs: no file matches {self.pattern!r}; nothing was written."
            )
        return files

    def batches(self, batch_size: int):
        """A `tf.data.Dataset` of batches of the parsed examples, in file order."""
        import tensorflow as tf

        examples = tf.data.TFRecordDataset(self.files()).map(self.parse_fn)
        _check_spec(examples.element_spec, "TFRecordInputs.parse_fn", batched=False)
        return examples.batch(batch_size)


def _check_spec(spec, what: str, batched: bool) -> None:
    """Refuses elements that are not `x`, `(x,)`, `(x, y)` or `(x, y, weights)` tensors."""
    import tensorflow as tf

    parts = spec if isinstance(spec, tuple) else (spec,)
    if not 1 <= len(parts) <= 3 or not all(isinstance(p, tf.TensorSpec) for p in parts):
        raise TeacherLabelsError(
            f"{what} must give `x` or `(x, y)` tensors; received elements {spec!r}. Map them "
            "to a tuple first, e.g. `.map(lambda d: (d['image'], d['label']))`."
        )
    if batched and any(p.shape.rank == 0 for p in parts[:2]):
        raise TeacherLabelsError(
            f"{what} must give batches `x` or `(x, y)` (as for `fit`); received scalar elements "
            f"{spec!r}. Batch it first, e.g. `dataset.batch(256)`."
        )


def _is_arrays(data) -> bool:
    return isinstance(data, (np.ndarray, tuple, list))


def check_inputs(data, example_rank: int | None = None) -> None:
    """Refuses data `label` cannot stage, before anything is written (reads no example).

    Args:
        data: What `label` was given.
        example_rank: The rank of one input example, if the teacher says it
            (a Keras teacher's input rank without the batch axis): dataset
            elements of that rank are single examples, not batches.

    Raises:
        TeacherLabelsError: For a dict, dataset elements that are not `x` or
            `(x, y)` tensors or not batches, empty arrays, or a TFRecord pattern
            matching no file.
    """
    import tensorflow as tf

    _source_batches(data, 1)
    spec = data.element_spec if isinstance(data, tf.data.Dataset) else None
    x_spec = spec[0] if isinstance(spec, tuple) else spec
    if x_spec is not None and example_rank is not None and x_spec.shape.rank == example_rank:
        raise TeacherLabelsError(
            f"The dataset's inputs have shape {x_spec.shape}, the shape of one example of this "
            "teacher, not of a batch; `label` takes a dataset of batches (as `fit` does). "
            "Batch it first, e.g. `dataset.batch(256)`."
        )
    if _is_arrays(data) and len(worker_parts.labelled_arrays(data)[0]) == 0:
        raise TeacherLabelsError("The data to label is empty; nothing was written.")


def _source_batches(data, shard_size: int) -> Iterator:
    """The data's batches as NumPy `x` or `(x, y)`, checked before any is read."""
    import tensorflow as tf

    if isinstance(data, TFRecordInputs):
        return data.batches(shard_size).as_numpy_iterator()
    if isinstance(data, tf.data.Dataset):
        _check_spec(data.element_spec, "The dataset", batched=True)
        return data.as_numpy_iterator()
    if isinstance(data, dict):
        raise TeacherLabelsError(
            f"The data to label must be arrays `x` or `(x, y)`, a tf.data.Dataset or "
            f"TFRecordInputs; received a dict with keys {sorted(data)!r}."
        )
    return iter([worker_parts.labelled_arrays(data)])


def _checked_batch(element, number: int, labelled: bool | None):
    x, y = inputs.unpack(element)
    if x.ndim == 0 or (y is not None and (y.ndim == 0 or len(y) != len(x))):
        raise TeacherLabelsError(
            f"Batch {number} of the data has inputs of shape {x.shape} and labels of shape "
            f"{None if y is None else y.shape}; each batch needs one label per input. "
            "Nothing was written."
        )
    if labelled is not None and labelled != (y is not None):
        raise TeacherLabelsError(
            f"Batch {number} of the data {'lacks' if labelled else 'has'} labels, unlike the "
            "batches before it; give all batches as `x` or all as `(x, y)`. Nothing was written."
        )
    return x, y


def shard_batches(data, shard_size: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """`(x, y or None)` arrays of `shard_size` examples (the last may be shorter), streamed.

    Args:
        data: Arrays `x` or `(x, y)`, a `tf.data.Dataset` of batches `x` or
            `(x, y)`, or `TFRecordInputs`.
        shard_size: Examples per shard.

    Raises:
        TeacherLabelsError: For elements that are not `x` or `(x, y)` tensors,
            unbatched dataset elements, or a batch without one label per input.
    """
    held, count, labelled = [], 0, None
    for number, element in enumerate(_source_batches(data, shard_size)):
        x, y = _checked_batch(element, number, labelled)
        labelled = y is not None
        held.append((x, y))
        count += len(x)
        while count >= shard_size:
            shard, held = _split(held, shard_size)
            count -= shard_size
            yield shard
    if count:
        yield _split(held, count)[0]


def _split(held: list, size: int) -> tuple[tuple, list]:
    """The first `size` examples of the held batches, and the rest (one concatenation)."""
    x = _joined([b[0] for b in held])
    y = None if held[0][1] is None else _joined([b[1] for b in held])
    rest = [(x[size:], None if y is None else y[size:])] if len(x) > size else []
    return (x[:size], None if y is None else y[:size]), rest


def _joined(arrays: list) -> np.ndarray:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


@dataclasses.dataclass(frozen=True)
class ShardChunk:
    """A shard's contiguous examples, the element the Beam pipeline carries: one pickle per shard.

    `LabelShardChunks` labels a `PCollection` of them, one shard written per
    chunk; the chunks must cover the indices 0..n-1 without gaps or overlaps.

    Attributes:
        shard: The shard's number (its file `shard-{shard:05d}.tfrecord`).
        first: The index of its first example.
        x: Its inputs, in index order.
        labels: Their labels, if known.

    Example:
    >>> import numpy as np
    >>> from keras_distill.labelling.beam import ShardChunk
    >>> chunk = ShardChunk(shard=2, first=20, x=np.zeros((10, 4), "float32"))
    >>> chunk.last
    29
    """

    shard: int
    first: int
    x: np.ndarray
    labels: np.ndarray | None = None

    @property
    def last(self) -> int:
        """The index of its last example."""
        return self.first + len(self.x) - 1


def shard_chunks(
    x: np.ndarray, labels: np.ndarray | None = None, shard_size: int = 10_000
) -> list[ShardChunk]:
    """Cuts in-memory arrays into the `ShardChunk`s that `LabelShardChunks` labels.

    Chunk `s` holds examples `s * shard_size` to `(s + 1) * shard_size - 1` (the
    last may be shorter), so the chunks cover the indices 0..n-1 as
    `LabelShardChunks` needs. The chunks are views of the arrays: nothing is
    copied until Beam pickles them. `beam.Create` pickles them into the
    pipeline itself, which suits small arrays; large inputs are better read on
    the workers, one chunk per shard (or labelled by `label`, which stages them).

    Args:
        x: The inputs, one example per row.
        labels: Their labels (one per input), or None.
        shard_size: Examples per chunk, hence per written shard.

    Returns:
        The chunks, in shard order.

    Raises:
        ValueError: If `shard_size` is below 1.
        TeacherLabelsError: If `labels` do not hold one label per input.

    Example:
    >>> import os, tempfile
    >>> import apache_beam as beam
    >>> import numpy as np
    >>> import keras_distill as kd
    >>> from keras_distill.labelling import beam as kbeam
    >>> x = np.random.default_rng(0).normal(size=(25, 4)).astype("float32")
    >>> chunks = kbeam.shard_chunks(x, np.arange(25) % 3, shard_size=10)
    >>> [(chunk.shard, chunk.first, chunk.last) for chunk in chunks]
    [(0, 0, 9), (1, 10, 19), (2, 20, 24)]
    >>> folder = tempfile.mkdtemp()
    >>> with beam.Pipeline() as pipeline:
    ...     _ = (pipeline | beam.Create(chunks) | kbeam.LabelShardChunks(
    ...         kbeam.CallableModelHandler(lambda b: b[:, :3]), folder,
    ...         kbeam.label_settings("id:first-three", "logits", None, 10)))
    >>> manifest = kd.labelling.read_manifest(os.path.join(folder, "manifest.json"))
    >>> manifest.num_examples, len(manifest.shards)
    (25, 3)
    """
    if int(shard_size) < 1:
        raise ValueError(f"`shard_size` must be >= 1; received {shard_size!r}.")
    if labels is not None and len(labels) != len(x):
        raise TeacherLabelsError(
            f"The inputs hold {len(x)} examples and the labels {len(labels)}; "
            "give one label per input, or labels=None."
        )
    chunks = []
    for shard, first in enumerate(range(0, len(x), shard_size)):
        part = slice(first, first + shard_size)
        chunks.append(ShardChunk(shard, first, x[part], None if labels is None else labels[part]))
    return chunks


def by_shard(element, shard_size: int):
    """`(shard, (index, x, label or None))` from a user's `(index, x or (x, y))` element."""
    index, example = element
    x, y = example if isinstance(example, tuple) else (example, None)
    return int(index) // shard_size, (int(index), np.asarray(x), y)


def contiguous(group) -> tuple[int, list]:
    """A shard's grouped members sorted by index; refuses indices with gaps or repeats."""
    shard, members = group
    members = sorted(members, key=lambda member: member[0])
    first, last = members[0][0], members[-1][0]
    if last - first + 1 != len(members):
        raise TeacherLabelsError(
            f"The indices must be 0..n-1 without gaps or repeats; shard {shard} holds "
            f"{len(members)} elements with indices {first}..{last}."
        )
    return shard, members


def chunk_of(group) -> ShardChunk:
    """The `ShardChunk` of a shard's grouped examples, sorted by index."""
    shard, members = contiguous(group)
    labels = None if members[0][2] is None else np.asarray([m[2] for m in members])
    return ShardChunk(shard, members[0][0], np.stack([m[1] for m in members]), labels)


def keyed_prompt(element, options):
    """`(index, normalised prompt tokens, prompt as given)`: the local path's normalisation."""
    index, prompt = element
    return int(index), responses.normalized_prompt(prompt, int(index), options), prompt


def by_prompt_shard(result, per_shard: int):
    """`(shard, (index, tokens, samples, scored))` from a prompt's inference result."""
    (index, tokens, _), (samples, scored) = result.example, result.inference
    return index // per_shard, (index, tokens, samples, scored)


@dataclasses.dataclass(frozen=True)
class ShardRange:
    """A shard's index range `[first, stop)`, staged as `x-{shard:05d}.npy` (and `y-...`) files."""

    shard: int
    first: int
    stop: int
    folder: str
    labelled: bool

    def file(self, name: str) -> str:
        """The path of the staged `x` or `y` array of this shard."""
        return storage.join(self.folder, f"{name}-{self.shard:05d}.npy")


def read_staged(path: str) -> np.ndarray:
    """A staged `.npy` array, read through `tf.io.gfile`."""
    return np.load(io.BytesIO(storage.read_bytes(path)), allow_pickle=False)


def _write_staged(path: str, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    storage.write_bytes(path, buffer.getvalue())


def chunk_of_range(shard_range: ShardRange) -> ShardChunk:
    """The `ShardChunk` of a range, read from its staged files (on the worker)."""
    labels = read_staged(shard_range.file("y")) if shard_range.labelled else None
    x = read_staged(shard_range.file("x"))
    return ShardChunk(shard_range.shard, shard_range.first, x, labels)


@dataclasses.dataclass(frozen=True)
class Staged:
    """What `Staging.stage` wrote: the shard ranges, the data fingerprint, the probe inputs."""

    ranges: list  # of `ShardRange`, in shard order
    data_id: str  # "arrays:<fingerprint_arrays of all x, y>"
    head: np.ndarray  # the first `PROBE_EXAMPLES` inputs (a callable teacher's probe)


class Staging:
    """A run's staging folder, made on entry and deleted with its files on exit (also on failure).

    Args:
        root: Where to make it: the output directory (default of `beam.label`)
            or a folder every worker can read (`gs://bucket/tmp`).
    """

    def __init__(self, root: str):
        self.path = storage.join(root, f"{STAGING_PREFIX}{uuid.uuid4().hex}")

    def __enter__(self) -> Staging:
        storage.makedirs(self.path)
        return self

    def __exit__(self, *exc_info) -> None:
        storage.remove_tree(self.path)

    def stage(self, data, shard_size: int) -> Staged:
        """Streams the data into one staged file per shard (and `y` file if labelled)."""
        ranges, first, head = [], 0, []
        for x, y in shard_batches(data, shard_size):
            shard_range = ShardRange(len(ranges), first, first + len(x), self.path, y is not None)
            _write_staged(shard_range.file("x"), x)
            if y is not None:
                _write_staged(shard_range.file("y"), y)
            ranges.append(shard_range)
            first += len(x)
            if first - len(x) < PROBE_EXAMPLES:
                head.append(x[:PROBE_EXAMPLES])
        if not ranges:
            raise TeacherLabelsError("The data to label is empty; nothing was written.")
        if _is_arrays(data):
            data_id = fingerprint_arrays(*worker_parts.labelled_arrays(data))
        else:
            data_id = staged_fingerprint(ranges)
        return Staged(ranges, f"arrays:{data_id}", np.concatenate(head)[:PROBE_EXAMPLES])


def staged_fingerprint(ranges: list) -> str:
    """`fingerprint_arrays(x, y)` of the staged shards' arrays, read one shard at a time."""

    def described(name: str) -> tuple:  # (shape, dtype, chunks) of the staged x or y
        first = read_staged(ranges[0].file(name))
        chunks = map(read_staged, [shard.file(name) for shard in ranges])
        return (ranges[-1].stop, *first.shape[1:]), first.dtype, chunks

    return fingerprint_chunks(*map(described, ("x", "y") if ranges[0].labelled else ("x",)))


def remove_stale_staging(directory: str) -> None:
    """Deletes the staging folders of killed runs in an output directory (its lock held)."""
    if not storage.isdir(directory):
        return
    for name in storage.listdir(directory):
        if name.startswith(STAGING_PREFIX):
            storage.remove_tree(storage.join(directory, name))
