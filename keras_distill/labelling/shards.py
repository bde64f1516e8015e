"""The stored format of teacher outputs: TFRecord shards and a JSON manifest per worker.

`ShardWriter` writes one worker's shards atomically and keeps its manifest
(settings, shard checksums, record features); `read_manifests` checks what a
directory holds before anything is read (`keras_distill.labelling.reader` then parses
the records).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib

import numpy as np

from keras_distill.objective import stored_kinds as targets

FORMAT = "keras_distill.labelling.writer/1"
MANIFEST = "manifest.json"


class TeacherLabelsError(ValueError):
    """Stored teacher outputs are missing, corrupt, inconsistent or invalid.

    Example:
    >>> isinstance(TeacherLabelsError("shard missing"), ValueError)
    True
    """


# -- writing ------------------------------------------------------------------


def _manifest_name(worker_index: int, num_workers: int) -> str:
    if num_workers == 1:
        return MANIFEST
    return f"manifest-part-{worker_index:05d}-of-{num_workers:05d}.json"


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


def features_of(record: dict) -> dict:
    """The manifest's `"features"`: each record field's dtype and shape.

    Example:
    >>> features_of({"x": np.zeros(3, "float32")})
    {'x': {'dtype': 'float32', 'shape': [3]}}
    """
    return {
        name: {"dtype": str(value.dtype), "shape": list(value.shape)}
        for name, value in record.items()
    }


def data_digest(examples) -> str:
    """A hash of the inputs and labels of examples (dicts with `"x"` and maybe `"labels"`).

    The same whether computed from the records as they are written or from the
    data again when a run resumes, so a resume over other data is noticed.

    Example:
    >>> data_digest([{"x": np.zeros(2)}]) == data_digest([{"x": np.zeros(2)}])
    True
    """
    digest = hashlib.sha256()
    for example in examples:
        for name in ("x", "labels"):
            if example.get(name) is not None:
                value = np.ascontiguousarray(example[name])
                digest.update(f"{name}{value.dtype}{value.shape}".encode())
                digest.update(value.tobytes())
    return digest.hexdigest()[:16]


def write_shard(path: pathlib.Path, records: list[dict]) -> dict:
    """Writes records to a TFRecord shard atomically; returns its manifest entry.

    The bytes depend only on the records (deterministic serialization), so
    any process that writes the same records writes the same file.

    Example:
    >>> import tempfile
    >>> entry = write_shard(pathlib.Path(tempfile.mkdtemp()) / "shard-00000.tfrecord",
    ...                     [{"x": np.zeros(2, "float32")}])
    >>> entry["file"], entry["examples"]
    ('shard-00000.tfrecord', 1)
    """
    _write_records(path, records)
    return {
        "file": path.name,
        "examples": len(records),
        "sha256": _file_digest(path),
        "data_sha256": data_digest(records),
    }


def _write_records(path: pathlib.Path, records: list[dict]) -> None:
    import tensorflow as tf

    temporary = path.with_name(path.name + ".tmp")
    with tf.io.TFRecordWriter(str(temporary)) as writer:
        for record in records:
            feature = {
                name: tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.tobytes()]))
                for name, value in record.items()
            }
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            # deterministic: the same records give the same bytes in every process
            writer.write(example.SerializeToString(deterministic=True))
    os.replace(temporary, path)


def _check_directory(directory: pathlib.Path) -> None:
    """Refuses a non-empty directory that keras-distill did not write (nothing is touched)."""
    if not directory.exists():
        return
    if not directory.is_dir():
        raise TeacherLabelsError(f"{str(directory)!r} is a file, not a directory.")
    entries = sorted(p.name for p in directory.iterdir())
    ours = [name for name in entries if name == MANIFEST or name.startswith("manifest-part-")]
    if entries and not ours:
        more = f" and {len(entries) - 5} more" if len(entries) > 5 else ""
        shown = ", ".join(entries[:5]) + more
        raise TeacherLabelsError(
            f"{str(directory)!r} is not empty ({shown}) and holds no keras-distill manifest; "
            "refusing to write teacher outputs among files keras-distill did not write. Use an "
            "empty or new directory."
        )


class ShardWriter:
    """Owns one worker's shards and manifest: resume, append, flush, finish.

    Args:
        directory: The output directory.
        settings: What the outputs were made with; a resume must match them.
        worker_index: This worker's part.
        summarize: Optional `summarize(records) -> dict`, kept in each shard's
            manifest entry as `"summary"` (e.g. token counts of responses).

    Raises:
        TeacherLabelsError: If the directory holds outputs made with other settings.

    Example:
    >>> import tempfile
    >>> settings = {"num_workers": 1, "shard_size": 2}
    >>> writer = ShardWriter(pathlib.Path(tempfile.mkdtemp()), settings, 0)
    >>> writer.add({"x": np.zeros((3, 4), "float32")})
    >>> writer.finish(3)["num_examples"], len(writer.manifest["shards"])
    (3, 2)
    """

    def __init__(self, directory: pathlib.Path, settings: dict, worker_index: int, summarize=None):
        self.summarize = summarize  # optional: records -> facts kept in the shard's entry
        num_workers = settings["num_workers"]
        _check_directory(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.path = directory / _manifest_name(worker_index, num_workers)
        self.prefix = "" if num_workers == 1 else f"part-{worker_index:05d}-"
        self.shard_size = settings["shard_size"]
        self.manifest = self._resumed(settings) or {
            "format": FORMAT,
            "settings": settings,
            "worker_index": worker_index,
            "shards": [],
            "complete": False,
        }
        # the temporary file of the next shard, left by a killed run: ours to delete
        self._shard_path(len(self.manifest["shards"])).with_suffix(".tfrecord.tmp").unlink(
            missing_ok=True
        )
        self.done = sum(s["examples"] for s in self.manifest["shards"])
        self.pending: list[dict] = []

    def _resumed(self, settings: dict) -> dict | None:
        if not self.path.exists():
            return None
        previous = _read_json(self.path)
        if previous.get("settings") != settings:
            before = previous.get("settings", {})
            changed = sorted(key for key in settings if before.get(key) != settings[key])
            raise TeacherLabelsError(
                f"{str(self.directory)!r} holds teacher outputs made with other "
                f"{', '.join(changed)} ({previous.get('settings')} now {settings}); refusing to "
                "mix them. Use a new directory, or delete this one to start over."
            )
        return previous

    def add(self, batch: dict) -> None:
        """Adds a batch of records (field -> array with one row per example)."""
        for i in range(len(batch["x"])):
            self.pending.append({name: np.asarray(value[i]) for name, value in batch.items()})
            if len(self.pending) == self.shard_size:
                self._flush()

    def _shard_path(self, index: int) -> pathlib.Path:
        return self.directory / f"{self.prefix}shard-{index:05d}.tfrecord"

    def _flush(self) -> None:
        path = self._shard_path(len(self.manifest["shards"]))
        self.manifest["shards"].append(write_shard(path, self.pending))
        if self.summarize is not None:
            self.manifest["shards"][-1]["summary"] = self.summarize(self.pending)
        self.manifest["features"] = features_of(self.pending[0])
        _atomic_write_json(self.path, self.manifest)
        self.pending.clear()

    def save(self) -> None:
        """Writes the manifest as it is now (atomically)."""
        _atomic_write_json(self.path, self.manifest)

    def finish(self, num_examples: int) -> dict:
        """Writes the last shard and marks the manifest complete; returns it."""
        if self.pending:
            self._flush()
        return write_complete_manifest(self.path, self.manifest, num_examples)


def write_complete_manifest(path: pathlib.Path, manifest: dict, num_examples: int) -> dict:
    """Marks a manifest whose shards are all written complete, and writes it atomically.

    Example:
    >>> import tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> entry = write_shard(folder / "shard-00000.tfrecord", [{"x": np.zeros(2, "float32")}])
    >>> write_complete_manifest(folder / MANIFEST, {"shards": [entry]}, 1)["complete"]
    True
    """
    stored_bytes = sum((path.parent / shard["file"]).stat().st_size for shard in manifest["shards"])
    manifest.update(
        complete=True,
        num_examples=num_examples,
        bytes_per_example=round(stored_bytes / max(num_examples, 1), 1),
    )
    _atomic_write_json(path, manifest)
    return manifest


def _read_json(path: pathlib.Path) -> dict:
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TeacherLabelsError(f"{str(path)!r} is not valid JSON: {error}") from None
    validate_manifest(manifest, str(path))
    return manifest


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _feature_problem(name, info) -> str | None:
    if not isinstance(info, dict) or not isinstance(info.get("shape"), list):
        return f"features[{name!r}] must be {{'dtype': ..., 'shape': [...]}}; found {info!r}"
    if not all(_count(d) for d in info["shape"]):
        return f"features[{name!r}]['shape'] must be non-negative integers; found {info['shape']!r}"
    dtype = info.get("dtype")
    try:
        valid = isinstance(dtype, str) and np.dtype(dtype).kind in "biuf"
    except (TypeError, ValueError):
        valid = False
    if not valid:
        return f"features[{name!r}]['dtype'] is not a numeric dtype name: {dtype!r}"
    return None


def _shard_problems(shards: list) -> list:
    problems, seen = [], set()
    for i, shard in enumerate(shards):
        if not isinstance(shard, dict):
            problems.append(f"shards[{i}] must be an object; found {shard!r}")
            continue
        name = shard.get("file")
        if not isinstance(name, str) or "/" in name or "\\" in name or name in ("", ".", ".."):
            problems.append(f"shards[{i}]['file'] must be a file name; found {name!r}")
        elif name in seen:
            problems.append(f"shard {name!r} is listed twice")
        else:
            seen.add(name)
        if not _count(shard.get("examples")) or shard.get("examples") == 0:
            problems.append(
                f"shards[{i}]['examples'] must be a positive integer; "
                f"found {shard.get('examples')!r}"
            )
        if not (isinstance(shard.get("sha256"), str) and len(shard["sha256"]) == 64):
            problems.append(
                f"shards[{i}]['sha256'] must be a SHA-256 hex digest; found {shard.get('sha256')!r}"
            )
    return problems


def _settings_problems(settings) -> list:
    if not isinstance(settings, dict):
        return [f"'settings' must be an object; found {settings!r}"]
    problems = []
    outputs = sorted(set(targets.KINDS) - {"top_k"})
    if settings.get("output") not in outputs:
        problems.append(
            f"settings['output'] must be one of {outputs}; found {settings.get('output')!r}"
        )
    for key in ("num_workers", "shard_size"):
        if not _count(settings.get(key)) or settings.get(key) == 0:
            problems.append(
                f"settings[{key!r}] must be a positive integer; found {settings.get(key)!r}"
            )
    top_k = settings.get("top_k")
    if top_k is not None and (not _count(top_k) or top_k == 0):
        problems.append(f"settings['top_k'] must be null or a positive integer; found {top_k!r}")
    return problems


def validate_manifest(manifest, where: str = "the manifest") -> None:
    """Checks a manifest against the format, field by field, before anything is read.

    Args:
        manifest: The parsed JSON.
        where: The file, for the message.

    Raises:
        TeacherLabelsError: Naming every field that is missing or wrong, with its value.

    Example:
    >>> validate_manifest({"format": FORMAT, "settings": {}, "shards": "none"})
    Traceback (most recent call last):
    ...
    keras_distill.labelling.shards.TeacherLabelsError: the manifest is malformed: ...
    """
    if not isinstance(manifest, dict):
        kind = type(manifest).__name__
        raise TeacherLabelsError(f"{where} must hold a JSON object; found {kind}.")
    if manifest.get("format") != FORMAT:
        raise TeacherLabelsError(
            f"{where} has format {manifest.get('format')!r}; expected {FORMAT!r}."
        )
    problems = _settings_problems(manifest.get("settings"))
    shards = manifest.get("shards")
    problems += (
        _shard_problems(shards)
        if isinstance(shards, list)
        else [f"'shards' must be a list; found {shards!r}"]
    )
    settings = manifest.get("settings")
    workers = settings.get("num_workers") if isinstance(settings, dict) else None
    index = manifest.get("worker_index")
    if not _count(index) or (_count(workers) and index >= workers):
        problems.append(f"'worker_index' must be an integer in [0, num_workers); found {index!r}")
    if not isinstance(manifest.get("complete"), bool):
        problems.append(f"'complete' must be true or false; found {manifest.get('complete')!r}")
    classes = manifest.get("teacher_classes")
    if classes is not None and (not _count(classes) or classes == 0):
        problems.append(f"'teacher_classes' must be a positive integer; found {classes!r}")
    if not problems and manifest["complete"]:
        problems += _complete_problems(manifest)
    if problems:
        raise TeacherLabelsError(f"{where} is malformed: " + "; ".join(problems) + ".")


def _complete_problems(manifest: dict) -> list:
    features, problems = manifest.get("features"), []
    if not isinstance(features, dict) or "x" not in features:
        return [f"'features' must name the record fields, 'x' among them; found {features!r}"]
    problems += [p for p in (_feature_problem(n, i) for n, i in features.items()) if p]
    total = sum(shard["examples"] for shard in manifest["shards"])
    if manifest.get("num_examples") != total or not _count(manifest.get("num_examples")):
        problems.append(
            f"'num_examples' must be the shards' total {total}; "
            f"found {manifest.get('num_examples')!r}"
        )
    kind = targets.stored_kind(manifest["settings"]["output"], manifest["settings"].get("top_k"))
    missing = sorted(set(kind.fields) - set(features))
    if missing:
        problems.append(f"'features' lacks {missing}, which {kind.name!r} outputs store")
    return problems


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
    if manifest["shards"]:
        _check_record(directory / manifest["shards"][0]["file"], manifest["features"])


def _check_record(file: pathlib.Path, features: dict) -> None:
    """The first record's fields must have the sizes the manifest's features give them."""
    import tensorflow as tf

    raw = next(iter(tf.data.TFRecordDataset(str(file)).take(1))).numpy()
    record = tf.train.Example.FromString(raw).features.feature
    for name, info in features.items():
        expected = int(np.prod(info["shape"])) * np.dtype(info["dtype"]).itemsize
        values = record[name].bytes_list.value if name in record else []
        found = len(values[0]) if len(values) == 1 else None
        if found != expected:
            raise TeacherLabelsError(
                f"The records of {file.name!r} do not match the manifest's features[{name!r}] "
                f"({info}): {expected} bytes expected, {found} found. The manifest was edited "
                "or belongs to other shards; relabel."
            )


def read_manifests(directory: pathlib.Path, allow_incomplete: bool, verify: bool) -> list[dict]:
    """The complete manifest(s) to load, in part order, after every check.

    Args:
        directory: A directory written by `label_with_teacher`.
        allow_incomplete: Load the complete parts of a multi-worker run only.
        verify: Check every shard's presence and checksum.

    Returns:
        The manifests, in worker order.

    Raises:
        TeacherLabelsError: If a manifest is missing, malformed or incomplete, or a
            shard is missing or corrupt.

    Example:
    >>> import tempfile
    >>> read_manifests(pathlib.Path(tempfile.mkdtemp()), False, True)
    Traceback (most recent call last):
    ...
    keras_distill.labelling.shards.TeacherLabelsError: No manifest.json in ...
    """
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
