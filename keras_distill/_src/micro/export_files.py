"""The files of an export, and how they reach the output folder.

All or nothing (the package's one atomic write, `storage.write_atomically`:
every file written beside its place, then moved into place), and never over an
earlier export's files unless `overwrite=True`, as `keras.Model.save` does.
Through `tf.io.gfile`, so the folder may be local or a URL (`ram://`, `gs://`).
"""

from __future__ import annotations

import os
import pathlib

from keras_distill._src.micro import codegen
from keras_distill._src.micro.errors import MicroExportError
from keras_distill._src.utils import storage


def file_names(name: str) -> list[str]:
    """The files an export called `name` writes.

    Example:
    >>> file_names("tiny")
    ['tiny.tflite', 'tiny_model_data.cc', 'tiny_model_data.h']
    """
    return [f"{name}.tflite", f"{name}_model_data.cc", f"{name}_model_data.h"]


def sources(name: str, info, model_bytes: bytes, arena: int, recommended: int) -> dict:
    """File name -> content: the flatbuffer, its C++ array and the header."""
    from keras_distill.version import __version__

    model_file, source_file, header_file = file_names(name)
    source = codegen.array_source(name, info, model_bytes, __version__)
    header = codegen.header_source(name, info, arena, recommended, __version__)
    return {model_file: model_bytes, source_file: source.encode(), header_file: header.encode()}


def check_not_overwriting(directory: str | os.PathLike, name: str, overwrite: bool) -> None:
    """Refuses an export whose files already exist in `directory`, unless `overwrite`.

    Raises:
        MicroExportError: Naming the files that exist.
    """
    directory = storage.check_path(directory, MicroExportError)
    existing = [f for f in file_names(name) if storage.exists(storage.join(directory, f))]
    if existing and not overwrite:
        raise MicroExportError(
            f"{directory!r} already holds {', '.join(existing)} (an earlier export "
            f"called {name!r}). Pass overwrite=True to replace them, or choose another `name` "
            "or `output_dir`. Nothing was written."
        )


def write_atomically(directory: str | os.PathLike, files: dict) -> list:
    """Writes all files into `directory` (created if missing), all or none; returns their paths.

    The paths are `pathlib.Path`s in a local folder, strings in a URL's
    (`ram://`, `gs://`), which `pathlib` would turn into local folders.

    Example:
    >>> write_atomically("ram://export-doc", {"a.h": b"x"})
    ['ram://export-doc/a.h']
    """
    directory = storage.check_path(directory, MicroExportError)
    storage.makedirs(directory)
    paths = [storage.join(directory, filename) for filename in files]
    storage.write_atomically(dict(zip(paths, files.values(), strict=True)))
    return [pathlib.Path(path) if storage.is_local(path) else path for path in paths]
