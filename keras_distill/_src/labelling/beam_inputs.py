"""What `keras_distill._src.labelling.beam.label` labels, and the staging its workers read it from.

`label` accepts NumPy arrays (`x` or `(x, y)`), a `tf.data.Dataset` of
batches `x` or `(x, y)` (as `fit` and `label_with_teacher` take it), and
TFRecord files (`TFRecordInputs`: a file pattern and a function parsing one
serialized record into `x` or `(x, y)`). `shard_batches` streams any of them
as shard-sized `(x, y or None)` arrays, one shard in memory at a time (per
batch, never per example, Python work); `Staging` writes each shard to a
staging folder through `tf.io.gfile` (by default a hidden `.staging-<uuid>`
folder inside the output directory, else a folder of the user's, e.g. on a
bucket), where every worker of a cluster reads it, and deletes the folder
when the run ends, whether it succeeded or failed. A killed run's staging
folder is deleted by the next run that holds the output's lock
(`remove_stale_staging`). Streamed data is fingerprinted from its staged
shards with the digest of `fingerprint_arrays`, so the same examples as
arrays, a dataset or TFRecords give the same manifest and the same shards.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator

import numpy as np

from keras_distill._src.labelling import beam_steps, worker_parts
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
    """TFRecord files of examples to label: `beam.label(teacher, TFRecordInputs(...), path)`.

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

    Example:
    >>> check_inputs({"image": np.zeros((2, 3))})
    Traceback (most recent call last):
    ...
    keras_distill._src.labelling.errors.TeacherLabelsError: The data to label must be arrays ...
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

    Example:
    >>> import tensorflow as tf
    >>> dataset = tf.data.Dataset.from_tensor_slices(np.zeros((25, 2))).batch(4)
    >>> [len(x) for x, _ in shard_batches(dataset, 10)]
    [10, 10, 5]
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
class Staged:
    """What `Staging.stage` wrote: the shards' ranges, the data's fingerprint, the probe's inputs.

    Example:
    >>> Staged([], "arrays:0", np.zeros((0, 2))).data_id
    'arrays:0'
    """

    ranges: list  # of `beam_steps.ShardRange`, in shard order
    data_id: str  # "arrays:<fingerprint_arrays of all x, y>"
    head: np.ndarray  # the first `PROBE_EXAMPLES` inputs (a callable teacher's probe)


class Staging:
    """A run's staging folder, made on entry and deleted with its files on exit (also on failure).

    Args:
        root: Where to make it: the output directory (default of `beam.label`)
            or a folder every worker can read (`gs://bucket/tmp`).

    Example:
    >>> with Staging("ram://staging-doc") as staging:
    ...     staged = staging.stage(np.zeros((25, 2), "float32"), 10)
    ...     [r.first for r in staged.ranges], storage.exists(staging.path)
    ([0, 10, 20], True)
    >>> storage.exists(staging.path)
    False
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
            ranges.append(beam_steps.stage_chunk(self.path, len(ranges), first, x, y))
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
    """`fingerprint_arrays(x, y)` of the staged shards' arrays, read one shard at a time.

    Example:
    >>> with Staging("ram://staging-doc") as staging:
    ...     staged = staging.stage((np.ones((5, 2)), np.arange(5)), 2)
    ...     staged_fingerprint(staged.ranges) == fingerprint_arrays(np.ones((5, 2)), np.arange(5))
    True
    """

    def described(name: str) -> tuple:  # (shape, dtype, chunks) of the staged x or y
        first = beam_steps.read_staged(ranges[0].file(name))
        chunks = map(beam_steps.read_staged, [shard.file(name) for shard in ranges])
        return (ranges[-1].stop, *first.shape[1:]), first.dtype, chunks

    return fingerprint_chunks(*map(described, ("x", "y") if ranges[0].labelled else ("x",)))


def remove_stale_staging(directory: str) -> None:
    """Deletes the staging folders of killed runs in an output directory (its lock held).

    Example:
    >>> storage.makedirs("ram://stale-doc/.staging-" + "0" * 32)
    >>> remove_stale_staging("ram://stale-doc")
    >>> storage.listdir("ram://stale-doc")
    []
    """
    if not storage.isdir(directory):
        return
    for name in storage.listdir(directory):
        if name.startswith(STAGING_PREFIX):
            storage.remove_tree(storage.join(directory, name))
