"""The steps of the Beam pipeline (`keras_distill._src.labelling.beam`), as plain functions.

Examples travel as `ShardChunk`s (a shard's contiguous examples as arrays,
read in bulk from a shard's staged `.npy` files through `tf.io.gfile`
(`stage_chunk`, `chunk_of_range`), or grouped once from a user's
`(index, example)` pairs by `index // shard_size`); prompts are keyed by index and grouped into
shards of whole prompts. Shards are written by the same functions as the local writer
(`keras_distill._src.labelling.shards`, `keras_distill._src.labelling.calls`,
`keras_distill._src.labelling.responses`), and the manifest is made last from
every shard's entry. Nothing here imports Apache Beam: the pipeline maps
these functions over its elements.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io

import numpy as np

from keras_distill._src.labelling import calls, response_writer, responses, shards
from keras_distill._src.labelling.errors import TeacherLabelsError
from keras_distill._src.labelling.manifest import MANIFEST, Manifest, Settings
from keras_distill._src.objective.stored_kinds import stored_kind
from keras_distill._src.utils import storage


@dataclasses.dataclass(frozen=True)
class ShardChunk:
    """A shard's contiguous examples, the element the Beam pipeline carries: one pickle per shard.

    Example:
    >>> ShardChunk(2, 20, np.zeros((10, 4), "float32")).last
    29
    """

    shard: int  # the shard's number (its file `shard-{shard:05d}.tfrecord`)
    first: int  # the index of its first example
    x: np.ndarray  # its inputs, in index order
    labels: np.ndarray | None = None  # their labels, if known

    @property
    def last(self) -> int:
        """The index of its last example."""
        return self.first + len(self.x) - 1


def shard_chunks(x: np.ndarray, labels: np.ndarray | None, shard_size: int):
    """The `ShardChunk`s of arrays, sliced in bulk (views, no copy until pickled).

    Example:
    >>> [(c.shard, c.first, c.last) for c in shard_chunks(np.zeros((25, 2)), None, 10)]
    [(0, 0, 9), (1, 10, 19), (2, 20, 24)]
    """
    for shard, first in enumerate(range(0, len(x), shard_size)):
        part = slice(first, first + shard_size)
        yield ShardChunk(shard, first, x[part], None if labels is None else labels[part])


@dataclasses.dataclass(frozen=True)
class ShardRange:
    """A shard's index range, staged as `.npy` files: a few bytes per pipeline element.

    The pipeline carries ranges (not the arrays, which Beam would pickle and
    compress into the pipeline itself), and each worker reads its chunk from
    the staged files (`chunk_of_range`) through `tf.io.gfile`, so a staging
    folder on a bucket serves workers on other machines.

    Example:
    >>> ShardRange(1, 10, 20, "ram://staging", labelled=False).stop
    20
    """

    shard: int
    first: int
    stop: int  # one past the index of its last example
    folder: str  # where `x-{shard:05d}.npy` (and `y-...` if `labelled`) are
    labelled: bool

    def file(self, name: str) -> str:
        """The path of the staged `x` or `y` array of this shard.

        Example:
        >>> ShardRange(3, 30, 40, "ram://staging", labelled=False).file("x")
        'ram://staging/x-00003.npy'
        """
        return storage.join(self.folder, f"{name}-{self.shard:05d}.npy")


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def read_staged(path: str) -> np.ndarray:
    """A staged `.npy` array, read through `tf.io.gfile`.

    Example:
    >>> storage.write_bytes("ram://steps-doc/a.npy", _npy_bytes(np.arange(3)))
    >>> read_staged("ram://steps-doc/a.npy").tolist()
    [0, 1, 2]
    """
    return np.load(io.BytesIO(storage.read_bytes(path)), allow_pickle=False)


def stage_chunk(folder: str, shard: int, first: int, x: np.ndarray, labels) -> ShardRange:
    """Writes a shard's arrays to the staging `folder` (through `tf.io.gfile`); its range.

    Example:
    >>> stage_chunk("ram://steps-doc", 1, 10, np.zeros((5, 2)), None).stop
    15
    """
    shard_range = ShardRange(shard, first, first + len(x), folder, labels is not None)
    storage.write_bytes(shard_range.file("x"), _npy_bytes(x))
    if labels is not None:
        storage.write_bytes(shard_range.file("y"), _npy_bytes(labels))
    return shard_range


def chunk_of_range(shard_range: ShardRange) -> ShardChunk:
    """The `ShardChunk` of a range, read from its staged files (on the worker).

    Example:
    >>> chunk_of_range(stage_chunk("ram://steps-doc", 0, 0, np.ones((2, 2)), None)).x.tolist()
    [[1.0, 1.0], [1.0, 1.0]]
    """
    labels = read_staged(shard_range.file("y")) if shard_range.labelled else None
    x = read_staged(shard_range.file("x"))
    return ShardChunk(shard_range.shard, shard_range.first, x, labels)


def by_shard(element, shard_size: int):
    """`(shard, (index, x, label or None))` from a user's `(index, x or (x, y))` element.

    Example:
    >>> by_shard((12, (np.zeros(2), 1)), 10)[0]
    1
    """
    index, example = element
    x, y = example if isinstance(example, tuple) else (example, None)
    return int(index) // shard_size, (int(index), np.asarray(x), y)


def chunk_of(group) -> ShardChunk:
    """The `ShardChunk` of a shard's grouped examples, sorted by index.

    Raises:
        TeacherLabelsError: If the shard's indices are not contiguous.

    Example:
    >>> chunk_of((0, [(1, np.ones(2), None), (0, np.zeros(2), None)])).x.tolist()
    [[0.0, 0.0], [1.0, 1.0]]
    """
    shard, members = group
    members = sorted(members, key=lambda member: member[0])
    first, last = members[0][0], members[-1][0]
    if last - first + 1 != len(members):
        raise TeacherLabelsError(
            f"The indices must be 0..n-1 without gaps or repeats; shard {shard} holds "
            f"{len(members)} examples with indices {first}..{last}."
        )
    labels = None if members[0][2] is None else np.asarray([m[2] for m in members])
    return ShardChunk(shard, first, np.stack([m[1] for m in members]), labels)


def write_shard_fields(path: str, shard: int, fields: dict) -> tuple[dict, list]:
    """Writes a shard's batch of fields as records (on the worker); its entry and records.

    Example:
    >>> import tempfile
    >>> entry, _ = write_shard_fields(tempfile.mkdtemp(), 0, {"x": np.zeros((2, 3), "float32")})
    >>> entry["file"], entry["examples"]
    ('shard-00000.tfrecord', 2)
    """
    records = [{k: np.asarray(v[i]) for k, v in fields.items()} for i in range(len(fields["x"]))]
    storage.makedirs(path)
    entry = shards.write_shard(storage.join(path, f"shard-{shard:05d}.tfrecord"), records)
    return entry, records


def write_chunk(result, path: str, settings: Settings) -> dict:
    """Writes one shard from a chunk's inference result; its manifest entry and facts.

    Example:
    >>> import tempfile
    >>> from types import SimpleNamespace
    >>> settings = Settings("id:t", "beam", "logits", None, 10, 1, runner="beam")
    >>> chunk = ShardChunk(0, 0, np.zeros((2, 4), "float32"))
    >>> result = SimpleNamespace(example=chunk, inference=(np.zeros((2, 3), "float32"), None))
    >>> write_chunk(result, tempfile.mkdtemp(), settings)["facts"]
    {'teacher_classes': 3}
    """
    chunk, (outputs, confidence) = result.example, result.inference
    kind = stored_kind(settings.output, settings.top_k)
    fields = calls.record_fields(chunk.x, chunk.labels, outputs, confidence, kind, settings)
    entry, records = write_shard_fields(path, chunk.shard, fields)
    return {
        **entry,
        "index": chunk.shard,
        "first": chunk.first,
        "last": chunk.last,
        "features": shards.features_of(records[0]),
        "facts": calls.teacher_facts(outputs, kind, probe=False),
    }


def keyed_prompt(element, options):
    """`(index, normalised prompt tokens, prompt as given)`: the local path's normalisation.

    Example:
    >>> keyed_prompt((0, np.array([1, 2, 0])), responses.SequenceOptions(8, 6))[1].tolist()
    [1, 2]
    """
    index, prompt = element
    return int(index), responses.normalized_prompt(prompt, int(index), options), prompt


def by_prompt_shard(result, per_shard: int):
    """`(shard, (index, tokens, samples, scored))` from a prompt's inference result.

    Example:
    >>> from types import SimpleNamespace
    >>> by_prompt_shard(SimpleNamespace(example=(7, [1], [1]), inference=([], False)), 5)[0]
    1
    """
    (index, tokens, _), (samples, scored) = result.example, result.inference
    return index // per_shard, (index, tokens, samples, scored)


def write_responses(group, path: str, options) -> dict:
    """Writes one shard of responses (whole prompts, by index); its manifest entry.

    Example:
    >>> import tempfile
    >>> sample = responses.Sample(np.array([3]), 0.0, None)
    >>> entry = write_responses((0, [(0, np.array([1]), [sample], False)]), tempfile.mkdtemp(),
    ...                         responses.SequenceOptions(8, 4))
    >>> entry["units"], entry["facts"]
    (1, {'scored': False, 'response_top_k': None})
    """
    shard, members = group
    members = sorted(members, key=lambda member: member[0])
    facts = {"scored": any(m[3] for m in members)}
    for member in members:
        responses.check_same_top_k(facts, member[2][0], member[0])
    fields = responses.response_records(
        [m[1] for m in members], [m[2] for m in members], members[0][0], options
    )
    entry, records = write_shard_fields(path, shard, fields)
    return {
        **entry,
        "index": shard,
        "first": members[0][0],
        "last": members[-1][0],
        "units": len(members),
        "summary": response_writer.shard_summary(records),
        "features": shards.features_of(records[0]),
        "facts": facts,
    }


def _check_entries(entries: list) -> None:
    if not entries:
        raise TeacherLabelsError("The data to label is empty; no manifest was written.")
    units = sum(entry.get("units", entry["examples"]) for entry in entries)  # examples or prompts
    starts = [entry["first"] for entry in entries]
    if (
        starts != [0] + [entry["last"] + 1 for entry in entries[:-1]]
        or entries[-1]["last"] != units - 1
    ):
        raise TeacherLabelsError(
            f"The indices must be 0..n-1 without gaps or repeats; {units} "
            f"elements, last {entries[-1]['last']}."
        )
    if len({str(e["facts"].get("response_top_k")) for e in entries}) > 1:
        raise TeacherLabelsError("Some responses have top-k outputs of another size than others.")


def complete_manifest(entries: list, path: str, settings: Settings, facts: dict) -> dict:
    """The complete manifest from every shard's entry, written last; refuses gaps in the indices.

    Args:
        entries: The shards' entries (`write_examples` or `write_responses`).
        path: The output directory.
        settings: The run's `Settings`; `data="beam"` (unknown data) becomes
            a digest of the shards' data.
        facts: What the driver knows of the teacher (its probe).

    Example:
    >>> complete_manifest([], "out", Settings("id:t", "beam", "logits", None, 10, 1), {})
    Traceback (most recent call last):
    ...
    keras_distill._src.labelling.errors.TeacherLabelsError: The data to label is empty; ...
    """
    entries = sorted(entries, key=lambda entry: entry["index"])
    _check_entries(entries)
    count = sum(entry["examples"] for entry in entries)
    if settings.data == "beam":
        digest = hashlib.sha256("".join(e["data_sha256"] for e in entries).encode()).hexdigest()
        settings = Settings.from_json({**settings.to_json(), "data": f"beam:{digest[:16]}"})
    keys = ("file", "examples", "sha256", "data_sha256", "summary")
    manifest = Manifest(
        settings,
        shards=[{k: e[k] for k in keys if k in e} for e in entries],
        features=entries[0]["features"],
        facts={**entries[0]["facts"], **facts},
    )
    if settings.output == "sequences":
        manifest.facts["scored"] = any(e["facts"]["scored"] for e in entries)
        manifest.facts.update(
            response_writer.response_totals(manifest.shards, count, settings.num_samples)
        )
    written = shards.write_complete_manifest(path, storage.join(path, MANIFEST), manifest, count)
    return written.to_json()
