"""Which directories a writer may use, and one writer at a time per output (a lock file).

`check_output_directory` is the one rule of every writer: a new or empty
directory, or one that holds a keras-distill manifest or only files
keras-distill writes (shards, temporaries, locks and a Beam run's staging
folder, of a failed run). `OutputLock` is an advisory lock file beside the
manifest (`manifest.json.lock`), created atomically, holding the owner's host
and pid; a second writer is refused at once naming the owner, and a lock left
by a dead process on this host is taken over with a warning.
"""

from __future__ import annotations

import json
import os
import re
import socket
import warnings

from keras_distill._src.labelling.errors import TeacherLabelsError
from keras_distill._src.utils import storage

# names keras-distill writes: manifests, shards (of a part), their temporaries, locks, and a
# Beam run's staging folder (`beam_inputs`: removed at its end, or by the
# next run that holds the lock if the process was killed)
OURS = re.compile(
    r"^(manifest(-part-\d{5}-of-\d{5})?\.json|(part-\d{5}-)?shard-\d{5}\.tfrecord)(\.tmp|\.lock)?$"
    r"|^\.staging-[0-9a-f]{32}$"
)


def _shown(names: list) -> str:
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return ", ".join(names[:5]) + more


def check_output_directory(directory: str) -> None:
    """Refuses a file, or a non-empty directory of files keras-distill did not write.

    A directory with a manifest is a previous run's (its identity is checked
    next); one with only shards, temporaries or locks is a failed run's.
    Nothing is touched.

    Raises:
        TeacherLabelsError: Naming the directory and the files found.
    """
    if not storage.exists(directory):
        return
    if not storage.isdir(directory):
        raise TeacherLabelsError(f"{directory!r} is a file, not a directory.")
    entries = storage.listdir(directory)
    has_manifest = any(name.endswith(".json") and OURS.match(name) for name in entries)
    foreign = [name for name in entries if not OURS.match(name)]
    if foreign and not has_manifest:
        raise TeacherLabelsError(
            f"{directory!r} is not empty ({_shown(entries)}) and holds no keras-distill "
            "manifest; refusing to write teacher outputs among files keras-distill did not "
            "write. Use an empty or new directory."
        )


def remove_outputs(directory: str, files: list[str]) -> None:
    """Deletes the named files of a previous run (for `overwrite=True`), the manifest last."""
    for name in files:
        storage.remove(storage.join(directory, name))


def _owner() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


class OutputLock:
    """An advisory lock on one output (a manifest), held while a writer writes it.

    Use it as a context manager: the lock file is created on entry (atomically,
    `O_CREAT | O_EXCL`, on local paths) and deleted on exit, also when the
    writer fails.

    Args:
        manifest_path: The manifest the writer writes; the lock is
            `manifest_path + ".lock"`.

    Raises:
        TeacherLabelsError: On entry, if a live process holds the lock (its
            host and pid named).
    """

    def __init__(self, manifest_path: str):
        self.path = manifest_path + ".lock"
        self.owner = _owner()

    def __enter__(self) -> OutputLock:
        if not self._create():
            self._take_over_if_stale()
        return self

    def __exit__(self, *exc_info) -> None:
        if self._holder() == self.owner:
            storage.remove(self.path)

    def _create(self) -> bool:
        content = json.dumps(self.owner).encode()
        if not storage.is_local(self.path):  # no atomic create on object stores: best effort
            if storage.exists(self.path):
                return False
            storage.write_atomically({self.path: content})
            return True
        try:
            descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(descriptor, "wb") as file:
            file.write(content)
        return True

    def _holder(self) -> dict | None:
        try:
            holder = json.loads(storage.read_text(self.path))
        except Exception:  # missing, or being written this instant
            return None
        return holder if isinstance(holder, dict) else None

    def _take_over_if_stale(self) -> None:
        holder = self._holder() or {}
        host, pid = holder.get("host"), holder.get("pid")
        stale = host == self.owner["host"] and isinstance(pid, int) and not _alive(pid)
        if not stale:
            raise TeacherLabelsError(
                f"{os.path.dirname(self.path)!r} is being written by another process "
                f"(pid {pid} on host {host!r}, lock file {self.path!r}); refusing to write "
                "into it at the same time, and nothing was changed. Wait for that run to "
                "finish, use another directory, or delete the lock file if that process is gone."
            )
        warnings.warn(
            f"Taking over the lock {self.path!r} of process {pid} on this host, which is no "
            "longer running (a killed run); resuming its outputs.",
            stacklevel=3,
        )
        storage.remove(self.path)
        if not self._create():
            self._take_over_if_stale()
