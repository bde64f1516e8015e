"""The runs file of a `sweep`: one JSON line per finished run, with what determined it.

A run is identified by its teacher, student and seed names and by a
`RunIdentity`: the settings (epochs and the recipe), a fingerprint of the data
and the weights fingerprints of the teacher and of the freshly built student.
A rerun reuses a stored run only when all of these match; a stored run with
the same names but another identity is refused, naming what differs. A run
killed while writing leaves a torn last line: it is dropped with a warning,
so the rerun trains that run again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import warnings

import numpy as np

from keras_distill._src.studies.datasets import Split


@dataclasses.dataclass(frozen=True)
class RunIdentity:
    """Everything that determines a sweep run besides its names and seed.

    Attributes:
        settings: Epochs and the recipe's keyword arguments, as JSON values.
        data: Fingerprint of the four arrays of the split (`data_digest`).
        teacher: Weights fingerprint of the teacher.
        student: Weights fingerprint of the student as built, before training.

    Example:
    >>> a = RunIdentity({"epochs": 8}, "d", "t", "s")
    >>> a.differences(RunIdentity({"epochs": 1}, "d", "t", "s"))
    ['settings {"epochs": 8} in the file, {"epochs": 1} now']
    """

    settings: dict
    data: str
    teacher: str
    student: str

    def differences(self, other: RunIdentity) -> list[str]:
        """What differs between this (stored) identity and `other` (now), as phrases."""
        found = []
        if self.settings != other.settings:
            found.append(
                f"settings {json.dumps(self.settings, sort_keys=True)} in the file, "
                f"{json.dumps(other.settings, sort_keys=True)} now"
            )
        seeded = "; does the builder seed them, e.g. with keras.utils.set_random_seed(seed)?"
        for field, what, hint in (
            ("data", "the data", ""),
            ("teacher", "the teacher's weights", ""),
            ("student", "the student's initial weights", seeded),
        ):
            if getattr(self, field) != getattr(other, field):
                found.append(
                    f"{what} (fingerprint {getattr(self, field)} in the file, "
                    f"{getattr(other, field)} now{hint})"
                )
        return found


def _describe(value):
    """A JSON value standing for a recipe argument (a loss object by its class and config)."""
    if hasattr(value, "get_config"):
        return {"class": type(value).__name__, "config": value.get_config()}
    return repr(value)


def settings_record(epochs: int, recipe: dict) -> dict:
    """The settings of a sweep's runs as JSON values (`RunIdentity.settings`).

    Example:
    >>> settings_record(3, {"temperature": 2.0})
    {'epochs': 3, 'recipe': {'temperature': 2.0}}
    """
    text = json.dumps({"epochs": epochs, "recipe": recipe}, sort_keys=True, default=_describe)
    return json.loads(text)


def data_digest(data: Split) -> str:
    """A short SHA-256 of the four arrays of a split (shapes, types and values).

    Example:
    >>> x, y = np.zeros((2, 3)), np.array([0, 1])
    >>> data_digest(Split(x, y, x, y)) == data_digest(Split(x, y, x, y + 1))
    False
    """
    digest = hashlib.sha256()
    for array in data:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def run_key(record: dict) -> tuple:
    """The names of a run: `(teacher, student, seed)`.

    Example:
    >>> run_key({"teacher": "t", "student": "s", "seed": 0, "scratch": 0.9})
    ('t', 's', 0)
    """
    return record["teacher"], record["student"], record["seed"]


def read_runs(path: pathlib.Path) -> list[dict]:
    r"""The runs stored in `path` (none if it does not exist).

    A torn last line (a run killed while writing) is removed from the file
    with a warning: that run is trained again. A line that cannot be read
    anywhere else is refused.

    Raises:
        ValueError: For an unreadable line that is not the last, with the file
            and the line number.

    Example:
    >>> import tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "runs.jsonl"
    >>> _ = path.write_text('{"seed": 0}\n{"seed": ')
    >>> import warnings
    >>> with warnings.catch_warnings(record=True):
    ...     read_runs(path)
    [{'seed': 0}]
    >>> path.read_text()
    '{"seed": 0}\n'
    """
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            if any(rest.strip() for rest in lines[number:]):
                raise ValueError(
                    f"{str(path)!r}, line {number}: not a JSON record ({line[:60]!r}); the runs "
                    "file is damaged inside. Repair or remove that line, or sweep into a new path."
                ) from None
            _drop_torn_line(path, line, number)
    return records


def _drop_torn_line(path: pathlib.Path, line: bytes, number: int) -> None:
    content = path.read_bytes()
    kept = content[: content.rstrip(b"\n").rfind(b"\n") + 1]
    with open(path, "r+b") as file:
        file.truncate(len(kept))
    warnings.warn(
        f"{str(path)!r}, line {number}: the last line is torn ({line[:60]!r}), as a run killed "
        "while writing leaves it; it was removed and that run is trained again.",
        stacklevel=3,
    )


def append_run(path: pathlib.Path, record: dict) -> None:
    r"""Appends one run as a JSON line and syncs it to disk.

    Example:
    >>> import tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "runs.jsonl"
    >>> append_run(path, {"seed": 0})
    >>> path.read_text()
    '{"seed": 0}\n'
    """
    with open(path, "a") as file:
        file.write(json.dumps(record) + "\n")
        file.flush()
        os.fsync(file.fileno())


def check_stored(records: list[dict], identities: dict, path: pathlib.Path) -> None:
    """Refuses stored runs whose names match a planned run but whose identity differs.

    Args:
        records: What `read_runs` returned.
        identities: `(teacher, student, seed) -> RunIdentity` of this sweep's runs.
        path: The runs file, for the message.

    Raises:
        ValueError: Naming each such run and what differs.

    Example:
    >>> now = {("t", "s", 0): RunIdentity({"epochs": 1}, "d", "t1", "s1")}
    >>> stored = [{"teacher": "t", "student": "s", "seed": 0,
    ...            "identity": dataclasses.asdict(RunIdentity({"epochs": 1}, "d", "t2", "s1"))}]
    >>> check_stored(stored, now, pathlib.Path("runs.jsonl"))
    Traceback (most recent call last):
    ...
    ValueError: 'runs.jsonl' holds runs made differently from this sweep: ...
    """
    problems = []
    for record in records:
        now = identities.get(run_key(record))
        if now is None:
            continue
        if "identity" not in record:
            problems.append(f"{run_key(record)}: stored without its settings and fingerprints")
            continue
        differences = RunIdentity(**record["identity"]).differences(now)
        if differences:
            problems.append(f"{run_key(record)}: " + "; ".join(differences))
    if problems:
        raise ValueError(
            f"{str(path)!r} holds runs made differently from this sweep: "
            + " | ".join(problems)
            + ". Reusing them would mix results; sweep into a new path, or delete the file "
            "to train again."
        )
