"""The examples a writer labels: checked arrays, a worker's part, batches, resumed data.

`labelled_arrays` is the one input check of both writers (`label_with_teacher`
and `kd.labelling.beam.label`); `plan` and `batches` give a worker
its part of arrays or of a `tf.data.Dataset`; `check_resumed_data` refuses to
resume over another dataset.
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

import numpy as np

from keras_distill._src.labelling import arguments, shards
from keras_distill._src.labelling.errors import TeacherLabelsError
from keras_distill._src.teachers.black_box import fingerprint_arrays
from keras_distill._src.utils import inputs


def labelled_arrays(data) -> tuple[np.ndarray, np.ndarray | None]:
    """`(x, y or None)` from `x` or `(x, y)` arrays, with as many labels as inputs.

    Raises:
        TeacherLabelsError: If the labels are not one per input.
    """
    x, y = inputs.unpack(data)
    if x.ndim == 0:
        raise TeacherLabelsError(f"The inputs must be an array of examples; received {x!r}.")
    if y is not None and (y.ndim == 0 or len(y) != len(x)):
        count = "a scalar" if y.ndim == 0 else len(y)
        raise TeacherLabelsError(
            f"The inputs have {len(x)} examples but the labels have {count}; pass one label "
            "per input. Nothing was written."
        )
    return x, y


def worker_part(worker_index: int | None, num_workers: int | None) -> tuple[int, int]:
    """(index, count) from the arguments, else from TF_CONFIG, else (0, 1)."""
    worker_index = arguments.optional_index("worker_index", worker_index)
    num_workers = arguments.positive_int("num_workers", num_workers, allow_none=True)
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


class Plan(NamedTuple):
    """A worker's part of the data."""

    arrays: tuple | None  # this worker's (x, y) for array data, None for a dataset
    data_id: str
    total: int | None
    worker_index: int
    num_workers: int


def plan(data, worker_index: int, num_workers: int) -> Plan:
    """This worker's part of the data and the data's fingerprint."""
    import tensorflow as tf

    if isinstance(data, tf.data.Dataset):
        return Plan(None, f"dataset:{data.element_spec}", None, worker_index, num_workers)
    arrays = labelled_arrays(data)
    part = part_range(len(arrays[0]), worker_index, num_workers)
    data_id = f"arrays:{fingerprint_arrays(*arrays)}"
    mine = tuple(None if a is None else a[part.start : part.stop] for a in arrays)
    return Plan(mine, data_id, len(part), worker_index, num_workers)


def part_range(size: int, worker_index: int, num_workers: int) -> range:
    """The indices of a worker's contiguous part of `size` examples or prompts."""
    return range(size * worker_index // num_workers, size * (worker_index + 1) // num_workers)


def _dataset_examples(data, part: Plan):
    examples = data.unbatch()
    if part.num_workers > 1:
        examples = examples.shard(part.num_workers, part.worker_index)
    return examples


def batches(data, part: Plan, done: int, batch_size: int):
    """Batches of this worker's examples, from example `done` on."""
    if part.arrays is None:
        return _dataset_examples(data, part).skip(done).batch(batch_size).as_numpy_iterator()
    x_all, y_all = part.arrays
    return (
        (x_all[i : i + batch_size],) + (() if y_all is None else (y_all[i : i + batch_size],))
        for i in range(done, len(x_all), batch_size)
    )


def check_resumed_data(data, part: Plan, manifest, label_dtype: str, directory: str) -> None:
    """Refuses to resume over a dataset whose first examples are not the ones labelled."""
    stream = _dataset_examples(data, part).take(manifest.done).as_numpy_iterator()
    for index, shard in enumerate(manifest.shards):
        records = []
        for _ in range(shard["examples"]):
            x, y = inputs.unpack(next(stream, (np.zeros(0),)))
            records.append({"x": x, "labels": None if y is None else y.astype(label_dtype)})
        if shard.get("data_sha256") not in (None, shards.data_digest(records)):
            raise TeacherLabelsError(
                f"The dataset differs from the one whose first {manifest.done} examples are "
                f"labelled in {directory!r} (shard {index} holds other examples); "
                "refusing to mix them. Use a new directory, or pass the same dataset in the "
                "same order. Nothing was changed."
            )
