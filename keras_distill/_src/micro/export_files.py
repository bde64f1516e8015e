"""The files of an export, and how they reach the output folder.

All or nothing (staged, then moved into place), and never over an earlier
export's files unless `overwrite=True`, as `keras.Model.save` does.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

from keras_distill._src.micro import codegen
from keras_distill._src.micro.errors import MicroExportError


def file_names(name: str) -> list[str]:
    """The files an export called `name` writes.

    Example:
    >>> file_names("tiny")
    ['tiny.tflite', 'tiny_model_data.cc', 'tiny_model_data.h']
    """
    return [f"{name}.tflite", f"{name}_model_data.cc", f"{name}_model_data.h"]


def sources(name: str, info, model_bytes: bytes, arena: int, recommended: int) -> dict:
    """File name -> content: the flatbuffer, its C++ array and the header.

    Example:
    >>> import keras, numpy as np
    >>> from keras_distill._src.micro.convert import to_int8_tflite
    >>> from keras_distill._src.micro.model_info import inspect_model
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> tflite = to_int8_tflite(model, np.random.rand(8, 4))
    >>> sorted(sources("tiny", inspect_model(tflite), tflite, 1024, 1136))
    ['tiny.tflite', 'tiny_model_data.cc', 'tiny_model_data.h']
    """
    from keras_distill.version import __version__

    model_file, source_file, header_file = file_names(name)
    source = codegen.array_source(name, info, model_bytes, __version__)
    header = codegen.header_source(name, info, arena, recommended, __version__)
    return {model_file: model_bytes, source_file: source.encode(), header_file: header.encode()}


def check_not_overwriting(directory: pathlib.Path, name: str, overwrite: bool) -> None:
    """Refuses an export whose files already exist in `directory`, unless `overwrite`.

    Raises:
        MicroExportError: Naming the files that exist.

    Example:
    >>> import tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "tiny.tflite").write_bytes(b"")
    >>> check_not_overwriting(folder, "tiny", overwrite=True)
    >>> check_not_overwriting(folder, "tiny", overwrite=False)
    Traceback (most recent call last):
    ...
    keras_distill._src.micro.errors.MicroExportError: ... already holds tiny.tflite ...
    """
    existing = [file for file in file_names(name) if (directory / file).exists()]
    if existing and not overwrite:
        raise MicroExportError(
            f"{str(directory)!r} already holds {', '.join(existing)} (an earlier export "
            f"called {name!r}). Pass overwrite=True to replace them, or choose another `name` "
            "or `output_dir`. Nothing was written."
        )


def write_atomically(directory: pathlib.Path, files: dict) -> list[pathlib.Path]:
    """Writes all files into a temporary folder, then moves them into place; returns the paths.

    Example:
    >>> import tempfile
    >>> [p.name for p in write_atomically(pathlib.Path(tempfile.mkdtemp()), {"a.h": b"x"})]
    ['a.h']
    """
    directory.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=".keras_distill_", dir=directory))
    try:
        for filename, content in files.items():
            (staging / filename).write_bytes(content)
        targets = []
        for filename in files:
            os.replace(staging / filename, directory / filename)
            targets.append(directory / filename)
        return targets
    finally:
        shutil.rmtree(staging, ignore_errors=True)
