"""The manifest of stored teacher outputs, as typed records: `Settings` and `Manifest`.

A manifest is the JSON file beside the shards (`manifest.json`, or one
`manifest-part-I-of-N.json` per worker). `Settings` is what the outputs were
made with (teacher, data, output kind, sizes); `Manifest` adds the shards
written, whether the run is complete, the record features and the facts the
writers record (the teacher's probe digest and class count, response totals).
Both convert to and from their JSON form here, and `validate_manifest` checks
that form field by field before anything is read.
"""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np

from keras_distill._src.labelling.errors import TeacherLabelsError
from keras_distill._src.objective.stored_kinds import KINDS, stored_kind
from keras_distill._src.utils import storage

FORMAT = "keras_distill.teacher_labels/1"  # the on-disk format id of 0.1; never renamed
MANIFEST = "manifest.json"
SEQUENCE_KEYS = ("num_samples", "max_length", "vocabulary_size", "pad_id")


def manifest_name(worker_index: int, num_workers: int) -> str:
    """The manifest file of a worker's part: `manifest.json` for a single part."""
    if num_workers == 1:
        return MANIFEST
    return f"manifest-part-{worker_index:05d}-of-{num_workers:05d}.json"


def is_manifest_name(name: str) -> bool:
    """Whether a file name is a manifest's: `manifest.json` or a part's."""
    return name == MANIFEST or re.fullmatch(r"manifest-part-\d{5}-of-\d{5}\.json", name) is not None


def shard_prefix(worker_index: int, num_workers: int) -> str:
    """What the shard files of a worker's part begin with (`part-00001-`; nothing for one part)."""
    return "" if num_workers == 1 else f"part-{worker_index:05d}-"


@dataclasses.dataclass(frozen=True)
class Settings:
    """What stored outputs were made with; a resume or rerun must match them.

    Attributes:
        teacher: The teacher's fingerprint (its id, weights digest or name).
        data: The data's fingerprint (`"arrays:..."`, `"dataset:..."`, `"prompts:..."`).
        output: The stored kind (`"logits"`, `"probabilities"`, ...).
        top_k: Classes kept per position, or None for all.
        shard_size: Examples per shard.
        num_workers: Parts the data is labelled in.
        runner: `"beam"` for the Beam writer, else None.
        num_samples: Responses per prompt (generated responses only).
        max_length: Record length in tokens (generated responses only).
        vocabulary_size: Token ids are below it (generated responses only).
        pad_id: The padding token (generated responses only).
    """

    teacher: str
    data: str
    output: str
    top_k: int | None
    shard_size: int
    num_workers: int
    runner: str | None = None
    num_samples: int | None = None
    max_length: int | None = None
    vocabulary_size: int | None = None
    pad_id: int | None = None

    def to_json(self) -> dict:
        """The JSON object: every field, the optional ones only when set."""
        fields = dataclasses.asdict(self)
        optional = ("runner", *SEQUENCE_KEYS)
        return {k: v for k, v in fields.items() if v is not None or k not in optional}

    @classmethod
    def from_json(cls, value, where: str = "the manifest") -> Settings:
        """The record from its JSON object, checked (`TeacherLabelsError` names each problem)."""
        problems = settings_problems(value)
        if problems:
            raise TeacherLabelsError(f"{where} is malformed: " + "; ".join(problems) + ".")
        fields = dataclasses.fields(cls)
        missing = [
            field.name
            for field in fields
            if field.name not in value
            and field.default is dataclasses.MISSING
            and field.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise TeacherLabelsError(f"{where} is malformed: settings lack {missing}.")
        names = {field.name for field in fields}
        return cls(**{k: v for k, v in value.items() if k in names})

    def differences(self, other: Settings) -> list[str]:
        """The names of the fields that differ from `other`'s."""
        mine, theirs = self.to_json(), other.to_json()
        return sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))


@dataclasses.dataclass
class Manifest:
    """One worker's manifest: settings, shards written, completeness, features, facts.

    Attributes:
        settings: The `Settings`.
        worker_index: This part's index.
        shards: One entry per shard written (`file`, `examples`, `sha256`,
            `data_sha256`, optional `summary`), in order.
        complete: Whether every shard of the part is written.
        features: Each record field's dtype and shape (once a shard is written).
        num_examples: The examples stored (complete manifests).
        bytes_per_example: Shard bytes per example (complete manifests).
        facts: What the writers record besides (`teacher_probe`,
            `teacher_classes`, `scored`, `response_top_k`, response totals).

    Example:
    >>> import os, tempfile
    >>> import numpy as np
    >>> import keras_distill as kd
    >>> folder = tempfile.mkdtemp()
    >>> _ = kd.label_with_teacher(lambda b: b[:, :3], np.ones((50, 4), "float32"), folder,
    ...                           shard_size=20, verbose=0)
    >>> manifest = kd.labelling.read_manifest(os.path.join(folder, "manifest.json"))
    >>> manifest.complete, manifest.num_examples, len(manifest.shards)
    (True, 50, 3)
    """

    settings: Settings
    worker_index: int = 0
    shards: list = dataclasses.field(default_factory=list)
    complete: bool = False
    features: dict | None = None
    num_examples: int | None = None
    bytes_per_example: float | None = None
    facts: dict = dataclasses.field(default_factory=dict)

    @property
    def done(self) -> int:
        """Examples in the shards written so far."""
        return sum(shard["examples"] for shard in self.shards)

    def to_json(self) -> dict:
        """The JSON object written to the manifest file (the facts at the top level)."""
        content = {
            "format": FORMAT,
            "settings": self.settings.to_json(),
            "worker_index": self.worker_index,
            "shards": self.shards,
            "complete": self.complete,
            **self.facts,
        }
        for name in ("features", "num_examples", "bytes_per_example"):
            if getattr(self, name) is not None:
                content[name] = getattr(self, name)
        return content

    @classmethod
    def from_json(cls, content, where: str = "the manifest") -> Manifest:
        """The record from its JSON object, after `validate_manifest`."""
        validate_manifest(content, where)
        known = {"format", "settings", "worker_index", "shards", "complete"}
        known |= {"features", "num_examples", "bytes_per_example"}
        return cls(
            settings=Settings.from_json(content["settings"], where),
            worker_index=content["worker_index"],
            shards=content["shards"],
            complete=content["complete"],
            features=content.get("features"),
            num_examples=content.get("num_examples"),
            bytes_per_example=content.get("bytes_per_example"),
            facts={k: v for k, v in content.items() if k not in known},
        )


def read_manifest(path: str) -> Manifest:
    """The manifest in a file, parsed and checked.

    Raises:
        TeacherLabelsError: If the file is not JSON or the manifest is malformed.

    Example:
    >>> import os, tempfile
    >>> import numpy as np
    >>> import keras_distill as kd
    >>> folder = tempfile.mkdtemp()
    >>> _ = kd.label_with_teacher(lambda b: b[:, :3], np.ones((50, 4), "float32"), folder,
    ...                           teacher_id="first-three", verbose=0)
    >>> manifest = kd.labelling.read_manifest(os.path.join(folder, "manifest.json"))
    >>> manifest.settings.teacher, manifest.settings.output, manifest.facts["teacher_classes"]
    ('id:first-three', 'logits', 3)
    """
    try:
        content = json.loads(storage.read_text(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TeacherLabelsError(f"{path!r} is not valid JSON: {error}") from None
    return Manifest.from_json(content, repr(path))


def write_manifest(path: str, manifest: Manifest) -> None:
    """Writes a manifest atomically (a temporary file renamed over it)."""
    storage.write_atomically({path: json.dumps(manifest.to_json(), indent=1, sort_keys=True)})


# -- validation ---------------------------------------------------------------


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _positive(value) -> bool:
    return _count(value) and value > 0


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


def _shard_problem(i: int, shard, seen: set) -> list:
    if not isinstance(shard, dict):
        return [f"shards[{i}] must be an object; found {shard!r}"]
    problems, name = [], shard.get("file")
    if not isinstance(name, str) or "/" in name or "\\" in name or name in ("", ".", ".."):
        problems.append(f"shards[{i}]['file'] must be a file name; found {name!r}")
    elif name in seen:
        problems.append(f"shard {name!r} is listed twice")
    else:
        seen.add(name)
    if not _positive(shard.get("examples")):
        problems.append(
            f"shards[{i}]['examples'] must be a positive integer; found {shard.get('examples')!r}"
        )
    if not (isinstance(shard.get("sha256"), str) and len(shard["sha256"]) == 64):
        problems.append(
            f"shards[{i}]['sha256'] must be a SHA-256 hex digest; found {shard.get('sha256')!r}"
        )
    return problems


def _shard_problems(shards) -> list:
    if not isinstance(shards, list):
        return [f"'shards' must be a list; found {shards!r}"]
    seen: set = set()
    return [problem for i, s in enumerate(shards) for problem in _shard_problem(i, s, seen)]


def settings_problems(settings) -> list:
    """What is wrong with a manifest's `"settings"` object, one sentence per field."""
    if not isinstance(settings, dict):
        return [f"'settings' must be an object; found {settings!r}"]
    problems = []
    outputs = sorted(set(KINDS) - {"top_k"})
    if settings.get("output") not in outputs:
        problems.append(
            f"settings['output'] must be one of {outputs}; found {settings.get('output')!r}"
        )
    for key in ("num_workers", "shard_size"):
        if not _positive(settings.get(key)):
            problems.append(
                f"settings[{key!r}] must be a positive integer; found {settings.get(key)!r}"
            )
    top_k = settings.get("top_k")
    if top_k is not None and not _positive(top_k):
        problems.append(f"settings['top_k'] must be null or a positive integer; found {top_k!r}")
    for key in ("teacher", "data"):
        if not isinstance(settings.get(key), str):
            problems.append(f"settings[{key!r}] must be a string; found {settings.get(key)!r}")
    return problems


def _header_problems(manifest: dict) -> list:
    problems = settings_problems(manifest.get("settings")) + _shard_problems(manifest.get("shards"))
    settings = manifest.get("settings")
    workers = settings.get("num_workers") if isinstance(settings, dict) else None
    index = manifest.get("worker_index")
    if not _count(index) or (_count(workers) and index >= workers):
        problems.append(f"'worker_index' must be an integer in [0, num_workers); found {index!r}")
    if not isinstance(manifest.get("complete"), bool):
        problems.append(f"'complete' must be true or false; found {manifest.get('complete')!r}")
    classes = manifest.get("teacher_classes")
    if classes is not None and not _positive(classes):
        problems.append(f"'teacher_classes' must be a positive integer; found {classes!r}")
    return problems


def validate_manifest(manifest, where: str = "the manifest") -> None:
    """Checks a manifest's JSON form against the format, field by field, before anything is read.

    Args:
        manifest: The parsed JSON.
        where: The file, for the message.

    Raises:
        TeacherLabelsError: Naming every field that is missing or wrong, with its value.
    """
    if not isinstance(manifest, dict):
        kind = type(manifest).__name__
        raise TeacherLabelsError(f"{where} must hold a JSON object; found {kind}.")
    if manifest.get("format") != FORMAT:
        raise TeacherLabelsError(
            f"{where} has format {manifest.get('format')!r}; expected {FORMAT!r}."
        )
    problems = _header_problems(manifest)
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
    kind = stored_kind(manifest["settings"]["output"], manifest["settings"].get("top_k"))
    missing = sorted(set(kind.fields) - set(features))
    if missing:
        problems.append(f"'features' lacks {missing}, which {kind.name!r} outputs store")
    return problems
