"""One mechanism for every writer's entry: the directory rule, the lock, the identity check.

Every writer (`label_with_teacher` for arrays, datasets and generated
responses, and `kd.labelling.beam`) opens its output with
`opened_output`: the directory must be one a writer may use
(`lock.check_output_directory`), the output is locked for this process
(`lock.OutputLock`), and a manifest already there must record the same
identity (`Identity`: the settings with the teacher's and the data's
fingerprints, and a callable teacher's outputs on the first examples) whether
that run is fresh, unfinished or complete. A mismatch is refused naming both
identities, or the old outputs are deleted first with `overwrite=True`. The
identity is built in one place for every writer: `examples_identity` for
examples, `responses_identity` for generated responses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import Callable

import numpy as np

from keras_distill._src.labelling import calls, lock
from keras_distill._src.labelling.errors import TeacherLabelsError
from keras_distill._src.labelling.manifest import (
    Manifest,
    Settings,
    is_manifest_name,
    manifest_name,
    read_manifest,
    shard_prefix,
)
from keras_distill._src.labelling.responses import SequenceOptions
from keras_distill._src.teachers.black_box import PROBE_EXAMPLES
from keras_distill._src.utils import storage


@dataclasses.dataclass(frozen=True)
class Identity:
    """What identifies stored outputs: their settings and, for a callable teacher, a probe.

    Attributes:
        settings: The `Settings` (teacher and data fingerprints among them).
        probe: For a callable teacher, a function returning the digest of its
            outputs on the first `PROBE_EXAMPLES` examples (called only when a
            stored run has one to compare with); None for a Keras model, which
            its weights identify.
        teacher_id: The `teacher_id` the user passed, if any (for the message).
        check_data: For data known only by streaming it (a `tf.data.Dataset`),
            `check_data(stored, directory)` refuses a stored run whose shards hold other
            examples (by their digests); run before the probe.
    """

    settings: Settings
    probe: Callable[[], str] | None = None
    teacher_id: str | None = None
    check_data: Callable[[Manifest, str], None] | None = None


def examples_identity(teacher, settings: Settings, head, teacher_id=None, check_data=None):
    """The identity of a run over examples, for both writers (`label_with_teacher` and Beam's).

    A Keras teacher is identified by its weights (in `settings.teacher`); a
    callable teacher also by its outputs on `head`, the first
    `PROBE_EXAMPLES` inputs (computed only if a stored run has a probe to
    compare with).
    """
    import keras

    if isinstance(teacher, keras.Model):
        return Identity(settings, None, teacher_id, check_data)
    probe = lambda: calls.probe_of(teacher, head, settings.output)  # noqa: E731
    return Identity(settings, probe, teacher_id, check_data)


def _prompts_fingerprint(prompts: list) -> str:
    """A hash of the normalised prompts: the data's fingerprint."""
    digest = hashlib.sha256()
    for prompt in prompts:
        digest.update(np.asarray(prompt, "int64").tobytes() + b"|")
    return digest.hexdigest()[:16]


def responses_identity(
    teacher: str, prompts: list, options: SequenceOptions, shard_size: int, parts=(1, None)
) -> Identity:
    """The identity of stored responses (whole prompts per shard), for both writers.

    Args:
        teacher: The teacher's fingerprint (`fingerprint_teacher`).
        prompts: Every prompt of the run, normalised (`responses.prompt_tokens`):
            the data's fingerprint, the same for every worker's part.
        options: The `SequenceOptions`.
        shard_size: Examples per shard, rounded up to whole prompts.
        parts: `(num_workers, runner)`: `runner="beam"` for the Beam writer.
    """
    n, (num_workers, runner) = options.num_samples, parts
    settings = Settings(
        teacher=teacher,
        data=f"prompts:{_prompts_fingerprint(prompts)}",
        output="sequences",
        top_k=None,
        shard_size=-(-shard_size // n) * n,
        num_workers=num_workers,
        runner=runner,
        num_samples=n,
        max_length=options.max_length,
        vocabulary_size=options.vocabulary_size,
        pad_id=options.pad_id,
    )
    return Identity(settings)


def _changed(stored: Settings, identity: Identity) -> tuple[list, dict, dict]:
    """The settings that differ, and their stored and current values."""
    changed = stored.differences(identity.settings)
    if identity.settings.data == "beam":  # a Beam pipeline's data is known once written
        changed = [name for name in changed if name != "data"]
    before, now = stored.to_json(), identity.settings.to_json()
    return changed, {k: before.get(k) for k in changed}, {k: now.get(k) for k in changed}


def _settings_mismatch(directory: str, stored: Settings, identity: Identity) -> str | None:
    changed, before, now = _changed(stored, identity)
    if not changed:
        return None
    return (
        f"{directory!r} holds teacher outputs made with other {', '.join(changed)} (stored: "
        f"{before}; now: {now})"
    )


def _part(worker_index: int, num_workers: int) -> str:
    return "a run in one part" if num_workers == 1 else f"part {worker_index} of {num_workers}"


def _other_run(directory: str, name: str, other: Manifest, identity: Identity, index: int):
    """Why this part may not be written beside another manifest's, and whether overwrite may."""
    settings = identity.settings
    own = shard_prefix(index, settings.num_workers) + "shard-"
    listed = [shard["file"] for shard in other.shards if shard["file"].startswith(own)]
    there = f"{directory!r} holds {name} ({_part(other.worker_index, other.settings.num_workers)})"
    here = f"this is {_part(index, settings.num_workers)}"
    if listed or other.settings.num_workers != settings.num_workers:
        replaced = f", whose files would replace {', '.join(listed[:3])}" if listed else ""
        return (
            f"{there}, another run's; {here}{replaced}: the two runs' parts would overlap. "
            "Refusing even with overwrite=True: the files another run lists are never replaced. "
            "Use a new directory, or delete that run's manifest and shards first."
        ), False
    changed, before, now = _changed(other.settings, identity)
    if changed:
        return (
            f"{there}, made with other {', '.join(changed)} (that part: {before}; {here}: "
            f"{now}): the parts would not load together. Use a new directory, or pass "
            "overwrite=True to relabel every part."
        ), True
    return None, True


def check_other_runs(directory: str, identity: Identity, worker_index: int, overwrite: bool):
    """Refuses to write a part beside manifests of another run (every other part is checked).

    Another run's files (those its manifest lists, or the shards of a run
    split into another number of parts) are never replaced, even with
    `overwrite=True`; parts of the same split made with other settings are
    refused unless `overwrite` (each part's own writer then relabels it).

    Raises:
        TeacherLabelsError: Naming the other manifest, both parts and what differs.
    """
    own = manifest_name(worker_index, identity.settings.num_workers)
    names = storage.listdir(directory) if storage.isdir(directory) else []
    for name in [n for n in names if is_manifest_name(n) and n != own]:
        other = read_manifest(storage.join(directory, name))
        refusal, overridable = _other_run(directory, name, other, identity, worker_index)
        if refusal and not (overwrite and overridable):
            raise TeacherLabelsError(f"{refusal} Nothing was changed.")


def _probe_mismatch(directory: str, stored: Manifest, identity: Identity) -> str | None:
    if identity.probe is None or "teacher_probe" not in stored.facts:
        return None
    probe = identity.probe()
    if probe == stored.facts["teacher_probe"]:
        return None
    named = f" (teacher_id={identity.teacher_id!r} is the same)" if identity.teacher_id else ""
    return (
        f"This teacher ({identity.settings.teacher}, outputs digest {probe}) answers "
        f"differently on the first {PROBE_EXAMPLES} examples than the one whose outputs are "
        f"stored in {directory!r} ({stored.settings.teacher}, outputs digest "
        f"{stored.facts['teacher_probe']}){named}"
    )


def identity_mismatch(directory: str, stored: Manifest, identity: Identity) -> str | None:
    """How a stored run's identity differs from this one (both named), or None."""
    mismatch = _settings_mismatch(directory, stored.settings, identity)
    if mismatch is None and identity.check_data is not None:
        identity.check_data(stored, directory)
    return mismatch or _probe_mismatch(directory, stored, identity)


def previous_outputs(directory: str, identity: Identity, worker_index: int, overwrite: bool):
    """The stored manifest of this output to resume or return, or None to start afresh.

    Raises:
        TeacherLabelsError: If the stored run has another identity (and not
            `overwrite`), `identity.check_data` refuses its data, or another
            run's manifests are in the directory (`check_other_runs`).
    """
    check_other_runs(directory, identity, worker_index, overwrite)
    name = manifest_name(worker_index, identity.settings.num_workers)
    path = storage.join(directory, name)
    if not storage.exists(path):
        return None
    stored = read_manifest(path)
    if overwrite:  # the manifest last: a failure in between leaves a resumable run
        lock.remove_outputs(directory, [shard["file"] for shard in stored.shards] + [name])
        return None
    mismatch = identity_mismatch(directory, stored, identity)
    if mismatch:
        verb = "replace" if stored.complete else "mix"
        raise TeacherLabelsError(
            f"{mismatch}; refusing to {verb} them. Use a new directory (or a new teacher_id for "
            "a new teacher version), or pass overwrite=True to relabel it. Nothing was changed."
        )
    return stored


@contextlib.contextmanager
def opened_output(directory: str, identity: Identity, worker_index: int, overwrite: bool):
    """Checks, creates and locks an output directory; yields the stored manifest or None.

    The lock is held until the `with` block ends (also on an exception).
    """
    name = manifest_name(worker_index, identity.settings.num_workers)
    with locked_output(directory, name):
        yield previous_outputs(directory, identity, worker_index, overwrite)


@contextlib.contextmanager
def locked_output(directory: str, name: str):
    """Checks, creates and locks an output directory for the manifest `name`, until the block ends.

    For a writer that learns its identity only after it holds the lock (a
    Beam run fingerprinting the data it stages); it then calls
    `previous_outputs` itself.
    """
    lock.check_output_directory(directory)
    storage.makedirs(directory)
    with lock.OutputLock(storage.join(directory, name)):
        yield
