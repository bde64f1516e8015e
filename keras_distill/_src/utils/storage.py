"""File access through `tf.io.gfile`: local paths and registered file systems, atomic writes.

Used by labelling (shards, manifests, locks) and by the micro export. Paths
are strings (`os.fspath` of what the user passed), joined with
`join`, never `pathlib` (which would make `"ram://x"` a local folder named
`ram:`). A URL-style path (`scheme://...`) must name a file system
TensorFlow has registered (`ram://` always; `gs://` where TensorFlow's
GCS support is built in; `s3://`, `hdfs://` with `tensorflow-io`), else
`check_path` refuses it before anything is written. Every atomic write goes
through `atomic_paths`: each file is written to a temporary beside it
(`<name>.tmp`), and only once all are written are they renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re

TEMPORARY_SUFFIX = ".tmp"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def scheme(path: str) -> str | None:
    """The URL scheme of a path (`"ram"` for `"ram://x"`), or None for a local path.

    Example:
    >>> scheme("ram://labels"), scheme("/tmp/labels")
    ('ram', None)
    """
    match = _SCHEME.match(path)
    return match.group(1).lower() if match else None


def check_path(path, error: type[Exception] = ValueError) -> str:
    """The path as a string, after checking that its file system is available.

    Args:
        path: A local path (`str`, `bytes` or `os.PathLike`) or a URL.
        error: The exception type to raise (each concept raises its own).

    Raises:
        error: For a URL whose scheme has no registered file system.

    Example:
    >>> check_path("ram://labels/run1")
    'ram://labels/run1'
    """
    path = os.fspath(path)
    path = path.decode() if isinstance(path, bytes) else str(path)
    found = scheme(path)
    if found in (None, "file"):
        return path
    import tensorflow as tf

    try:
        tf.io.gfile.exists(path)
    except tf.errors.UnimplementedError:
        raise error(
            f"{path!r}: no file system for {found}:// is installed in TensorFlow; nothing was "
            "written. Install the package that provides it (tensorflow-io for s3:// and "
            "hdfs://), or use a local path."
        ) from None
    return path


def is_local(path: str) -> bool:
    """Whether a path is on the local file system (where `os` calls work).

    Example:
    >>> is_local("/tmp/x"), is_local("ram://x")
    (True, False)
    """
    return scheme(path) in (None, "file")


def join(directory: str, name: str) -> str:
    """`directory/name`, for local paths and URLs alike.

    Example:
    >>> join("ram://labels", "manifest.json")
    'ram://labels/manifest.json'
    """
    return directory.rstrip("/") + "/" + name


def exists(path: str) -> bool:
    """Whether a file or directory exists.

    On a URL, the name is also looked up in its parent's listing: TensorFlow's
    `ram://` file system says that `a/b` exists when only `a/b.lock` does.

    Example:
    >>> write_atomically({"ram://storage-doc/b.lock": ""})
    >>> exists("ram://storage-doc/b"), exists("ram://storage-doc/b.lock")
    (False, True)
    """
    import tensorflow as tf

    if is_local(path) or not tf.io.gfile.exists(path):
        return tf.io.gfile.exists(path)
    parent, _, name = path.rstrip("/").rpartition("/")
    if parent.endswith(":/") or not tf.io.gfile.isdir(parent):
        return True
    return name in listdir(parent)


def isdir(path: str) -> bool:
    """Whether a directory exists there.

    Example:
    >>> makedirs("ram://storage-doc/folder")
    >>> isdir("ram://storage-doc/folder")
    True
    """
    import tensorflow as tf

    return tf.io.gfile.isdir(path)


def listdir(directory: str) -> list[str]:
    """The names in a directory, sorted.

    Example:
    >>> write_atomically({"ram://storage-doc/list/b.txt": ""})
    >>> listdir("ram://storage-doc/list")
    ['b.txt']
    """
    import tensorflow as tf

    return sorted(name.rstrip("/") for name in tf.io.gfile.listdir(directory))


def makedirs(directory: str) -> None:
    """Creates a directory and its parents (nothing if it exists).

    Example:
    >>> makedirs("ram://storage-doc/a/b")
    >>> exists("ram://storage-doc/a/b")
    True
    """
    import tensorflow as tf

    tf.io.gfile.makedirs(directory)


def remove(path: str) -> None:
    """Deletes a file if it exists.

    Example:
    >>> write_atomically({"ram://storage-doc/gone.txt": ""})
    >>> remove("ram://storage-doc/gone.txt")
    >>> exists("ram://storage-doc/gone.txt")
    False
    """
    import tensorflow as tf

    if exists(path):
        tf.io.gfile.remove(path)


def rename(source: str, target: str) -> None:
    """Renames a file over another (atomic where the file system offers it).

    Example:
    >>> write_atomically({"ram://storage-doc/old.txt": "x"})
    >>> rename("ram://storage-doc/old.txt", "ram://storage-doc/new.txt")
    >>> read_text("ram://storage-doc/new.txt")
    'x'
    """
    import tensorflow as tf

    tf.io.gfile.rename(source, target, overwrite=True)


def size(path: str) -> int:
    """A file's size in bytes.

    Example:
    >>> write_atomically({"ram://storage-doc/three.txt": "abc"})
    >>> size("ram://storage-doc/three.txt")
    3
    """
    import tensorflow as tf

    return tf.io.gfile.stat(path).length


def read_text(path: str) -> str:
    """A text file's content.

    Example:
    >>> write_atomically({"ram://storage-doc/read.txt": "text"})
    >>> read_text("ram://storage-doc/read.txt")
    'text'
    """
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "rb") as file:
        return file.read().decode("utf-8")


@contextlib.contextmanager
def atomic_paths(paths: list[str]):
    """Yields a temporary path beside each path; renames them into place if the block succeeds.

    The one atomic write: a reader never sees a half-written file, and when
    several files are written, none is replaced until all are written. A
    failed block deletes its temporaries; a killed run's are deleted by the
    next write of the same file.

    Example:
    >>> with atomic_paths(["ram://storage-doc/pair/a", "ram://storage-doc/pair/b"]) as temporaries:
    ...     for temporary in temporaries:
    ...         write_bytes(temporary, b"x")
    >>> listdir("ram://storage-doc/pair")
    ['a', 'b']
    """
    temporaries = [path + TEMPORARY_SUFFIX for path in paths]
    for temporary in temporaries:
        remove(temporary)  # a killed run's; some file systems append to an existing file
    try:
        yield temporaries
    except BaseException:
        for temporary in temporaries:
            remove(temporary)
        raise
    for temporary, path in zip(temporaries, paths, strict=True):
        rename(temporary, path)


def write_atomically(files: dict) -> None:
    """Writes files (path -> `bytes` or `str`) through `atomic_paths`: all of them, or none.

    Example:
    >>> write_atomically({"ram://storage-doc/a.txt": "hello"})
    >>> read_text("ram://storage-doc/a.txt")
    'hello'
    """
    with atomic_paths(list(files)) as temporaries:
        for temporary, content in zip(temporaries, files.values(), strict=True):
            write_bytes(temporary, content.encode("utf-8") if isinstance(content, str) else content)


def file_digest(path: str) -> str:
    """The SHA-256 hex digest of a file's bytes.

    Example:
    >>> write_atomically({"ram://storage-doc/b.txt": ""})
    >>> file_digest("ram://storage-doc/b.txt")[:8]
    'e3b0c442'
    """
    import tensorflow as tf

    digest = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def glob(pattern: str) -> list[str]:
    """The paths matching a file pattern (`*`, `?`, `[...]`), sorted.

    Example:
    >>> write_atomically({"ram://storage-doc/glob/a.txt": ""})
    >>> glob("ram://storage-doc/glob/*.txt")
    ['ram://storage-doc/glob/a.txt']
    """
    import tensorflow as tf

    return sorted(tf.io.gfile.glob(pattern))


def remove_tree(directory: str) -> None:
    """Deletes a directory and everything in it (nothing if it does not exist).

    Example:
    >>> write_atomically({"ram://storage-doc/tree/a.txt": ""})
    >>> remove_tree("ram://storage-doc/tree")
    >>> exists("ram://storage-doc/tree/a.txt")
    False
    """
    import tensorflow as tf

    if not tf.io.gfile.exists(directory):
        return
    try:
        tf.io.gfile.rmtree(directory)
    except tf.errors.NotFoundError:  # `ram://` has folders only where makedirs made them
        for parent, _, files in tf.io.gfile.walk(directory, topdown=False):
            for name in files:
                tf.io.gfile.remove(join(parent, name))
            try:
                tf.io.gfile.remove(parent)  # a folder makedirs made; others vanish with their files
            except tf.errors.NotFoundError:
                pass


def write_bytes(path: str, data: bytes) -> None:
    """Writes a file's bytes (replacing it).

    Example:
    >>> write_bytes("ram://storage-doc/bytes.bin", b"ab")
    >>> read_bytes("ram://storage-doc/bytes.bin")
    b'ab'
    """
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "wb") as file:
        file.write(data)


def read_bytes(path: str) -> bytes:
    """A file's bytes.

    Example:
    >>> write_bytes("ram://storage-doc/read.bin", b"x")
    >>> read_bytes("ram://storage-doc/read.bin")
    b'x'
    """
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "rb") as file:
        return file.read()
