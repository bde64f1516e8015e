"""The stored format of teacher outputs: TFRecord shards beside a manifest per worker.

`ShardWriter` writes one worker's shards atomically and keeps its `Manifest`
(`keras_distill._src.labelling.manifest`); `read_manifests` checks what a directory
holds before anything is read (`keras_distill._src.labelling.reader` then parses the
records). All file access goes through `keras_distill._src.utils.storage`.
"""

from __future__ import annotations

import hashlib

import numpy as np

from keras_distill._src.labelling.errors import TeacherLabelsError
from keras_distill._src.labelling.manifest import (
    MANIFEST,
    Manifest,
    manifest_name,
    read_manifest,
    shard_prefix,
    write_manifest,
)
from keras_distill._src.utils import storage

# -- writing ------------------------------------------------------------------


def features_of(record: dict) -> dict:
    """The manifest's `"features"`: each record field's dtype and shape."""
    return {
        name: {"dtype": str(value.dtype), "shape": list(value.shape)}
        for name, value in record.items()
    }


def data_digest(examples) -> str:
    """A hash of the inputs and labels of examples (dicts with `"x"` and maybe `"labels"`).

    The same whether computed from the records as they are written or from the
    data again when a run resumes, so a resume over other data is noticed.
    """
    digest = hashlib.sha256()
    for example in examples:
        for name in ("x", "labels"):
            if example.get(name) is not None:
                value = np.ascontiguousarray(example[name])
                digest.update(f"{name}{value.dtype}{value.shape}".encode())
                digest.update(value.tobytes())
    return digest.hexdigest()[:16]


def write_shard(path: str, records: list[dict]) -> dict:
    """Writes records to a TFRecord shard atomically; returns its manifest entry.

    The bytes depend only on the records (deterministic serialization), so
    any process that writes the same records writes the same file.
    """
    _write_records(path, records)
    return {
        "file": path.rstrip("/").rsplit("/", 1)[-1],
        "examples": len(records),
        "sha256": storage.file_digest(path),
        "data_sha256": data_digest(records),
    }


def _write_records(path: str, records: list[dict]) -> None:
    import tensorflow as tf

    with storage.atomic_paths([path]) as (temporary,), tf.io.TFRecordWriter(temporary) as writer:
        for record in records:
            feature = {
                name: tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.tobytes()]))
                for name, value in record.items()
            }
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            # deterministic: the same records give the same bytes in every process
            writer.write(example.SerializeToString(deterministic=True))


class ShardWriter:
    """Owns one worker's shards and manifest: append, flush, finish.

    Args:
        directory: The output directory (checked and locked by the caller:
            `keras_distill._src.labelling.identity.opened_output`).
        manifest: The part's `Manifest`: a fresh one, or a resumed run's.
        summarize: Optional `summarize(records) -> dict`, kept in each shard's
            manifest entry as `"summary"` (e.g. token counts of responses).
    """

    def __init__(self, directory: str, manifest: Manifest, summarize=None):
        self.summarize = summarize  # optional: records -> facts kept in the shard's entry
        num_workers = manifest.settings.num_workers
        self.directory, self.manifest = directory, manifest
        self.path = storage.join(directory, manifest_name(manifest.worker_index, num_workers))
        self.prefix = shard_prefix(manifest.worker_index, num_workers)
        self.shard_size = manifest.settings.shard_size
        storage.makedirs(directory)
        # the temporary file of the next shard, left by a killed run: ours to delete
        storage.remove(self._shard_path(len(manifest.shards)) + storage.TEMPORARY_SUFFIX)
        self.done = manifest.done
        self.pending: list[dict] = []

    def add(self, batch: dict) -> None:
        """Adds a batch of records (field -> array with one row per example)."""
        for i in range(len(batch["x"])):
            self.pending.append({name: np.asarray(value[i]) for name, value in batch.items()})
            if len(self.pending) == self.shard_size:
                self._flush()

    def _shard_path(self, index: int) -> str:
        return storage.join(self.directory, f"{self.prefix}shard-{index:05d}.tfrecord")

    def _flush(self) -> None:
        path = self._shard_path(len(self.manifest.shards))
        self.manifest.shards.append(write_shard(path, self.pending))
        if self.summarize is not None:
            self.manifest.shards[-1]["summary"] = self.summarize(self.pending)
        self.manifest.features = features_of(self.pending[0])
        self.save()
        self.pending.clear()

    def save(self) -> None:
        """Writes the manifest as it is now (atomically)."""
        write_manifest(self.path, self.manifest)

    def finish(self, num_examples: int) -> Manifest:
        """Writes the last shard and marks the manifest complete; returns it."""
        if self.pending:
            self._flush()
        return write_complete_manifest(self.directory, self.path, self.manifest, num_examples)


def write_complete_manifest(directory: str, path: str, manifest: Manifest, count: int) -> Manifest:
    """Marks a manifest whose shards are all written complete, and writes it to `path`."""
    stored = sum(storage.size(storage.join(directory, s["file"])) for s in manifest.shards)
    manifest.complete, manifest.num_examples = True, count
    manifest.bytes_per_example = round(stored / max(count, 1), 1)
    write_manifest(path, manifest)
    return manifest


# -- reading ------------------------------------------------------------------


def _check_shards(directory: str, manifest: Manifest) -> None:
    for shard in manifest.shards:
        file = storage.join(directory, shard["file"])
        if not storage.exists(file):
            raise TeacherLabelsError(
                f"Shard {shard['file']!r} listed in the manifest is missing from {directory!r}."
            )
        if storage.file_digest(file) != shard["sha256"]:
            raise TeacherLabelsError(
                f"Shard {shard['file']!r} does not match its checksum in the manifest: the file "
                "is corrupt or was changed. Delete it and the manifest entry, or relabel."
            )
    if manifest.shards:
        _check_record(storage.join(directory, manifest.shards[0]["file"]), manifest.features)


def _check_record(file: str, features: dict) -> None:
    """The first record's fields must have the sizes the manifest's features give them."""
    import tensorflow as tf

    raw = next(iter(tf.data.TFRecordDataset(file).take(1))).numpy()
    record = tf.train.Example.FromString(raw).features.feature
    for name, info in features.items():
        expected = int(np.prod(info["shape"])) * np.dtype(info["dtype"]).itemsize
        values = record[name].bytes_list.value if name in record else []
        found = len(values[0]) if len(values) == 1 else None
        if found != expected:
            raise TeacherLabelsError(
                f"The records of {file.rsplit('/', 1)[-1]!r} do not match the manifest's "
                f"features[{name!r}] ({info}): {expected} bytes expected, {found} found. The "
                "manifest was edited or belongs to other shards; relabel."
            )


def _parts(directory: str, names: list, allow_incomplete: bool) -> list[Manifest]:
    """The complete part manifests of a multi-worker run, in worker order; refuses gaps."""
    manifests = [read_manifest(storage.join(directory, name)) for name in names]
    for name, manifest in zip(names[1:], manifests[1:], strict=True):
        changed = manifests[0].settings.differences(manifest.settings)
        if changed:
            first, other = manifests[0].settings.to_json(), manifest.settings.to_json()
            raise TeacherLabelsError(
                f"{directory!r} holds parts of different labelling runs: {names[0]} and {name} "
                f"differ in {', '.join(changed)} ({ {k: first.get(k) for k in changed} } and "
                f"{ {k: other.get(k) for k in changed} }). Keep one run's parts per directory."
            )
    count = manifests[0].settings.num_workers
    present = {m.worker_index: m for m in manifests}
    missing = [i for i in range(count) if i not in present]
    unfinished = [i for i, m in sorted(present.items()) if not m.complete]
    if (missing or unfinished) and not allow_incomplete:
        raise TeacherLabelsError(
            f"The teacher outputs in {directory!r} do not cover the data: of "
            f"{count} parts, missing {missing or 'none'}, unfinished {unfinished or 'none'}. "
            "Run (or rerun) label_with_teacher for those worker indices, or pass "
            "allow_incomplete=True to load the complete parts only."
        )
    complete = [present[i] for i in sorted(present) if present[i].complete]
    if not complete:
        raise TeacherLabelsError(f"No part in {directory!r} is complete yet.")
    return complete


def read_manifests(directory: str, allow_incomplete: bool, verify: bool) -> list[Manifest]:
    """The complete manifest(s) to load, in part order, after every check.

    Args:
        directory: A directory written by `label_with_teacher`.
        allow_incomplete: Load the complete parts of a multi-worker run only.
        verify: Check every shard's presence and checksum.

    Returns:
        The `Manifest`s, in worker order.

    Raises:
        TeacherLabelsError: If a manifest is missing, malformed or incomplete, or a
            shard is missing or corrupt.
    """
    names = storage.listdir(directory) if storage.isdir(directory) else []
    parts = [n for n in names if n.startswith("manifest-part-") and n.endswith(".json")]
    if MANIFEST in names:
        manifests = [read_manifest(storage.join(directory, MANIFEST))]
    elif parts:
        manifests = _parts(directory, parts, allow_incomplete)
    else:
        raise TeacherLabelsError(
            f"No {MANIFEST} in {directory!r}: not a label_with_teacher output directory."
        )
    for manifest in manifests:
        if not manifest.complete:
            raise TeacherLabelsError(
                f"The teacher outputs in {directory!r} are incomplete ({manifest.done} examples "
                f"in {len(manifest.shards)} shards); rerun the same label_with_teacher call to "
                "finish them."
            )
        if verify:
            _check_shards(directory, manifest)
    return manifests
