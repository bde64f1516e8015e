"""The export's files reach their folder all or none, on a local disk or a tf.io.gfile URL."""

import pathlib

import pytest
import tensorflow as tf

from keras_distill._src.micro import export_files
from keras_distill.micro import MicroExportError

FILES = {"tiny.tflite": b"\x00model", "tiny_model_data.cc": b"// array", "tiny_model_data.h": b"//"}


def test_an_export_folder_on_ram_holds_the_files_and_no_temporary():
    folder = "ram://export-files/one"
    paths = export_files.write_atomically(folder, FILES)
    assert paths == [f"{folder}/{name}" for name in FILES]
    assert sorted(tf.io.gfile.listdir(folder)) == sorted(FILES)
    for path, content in zip(paths, FILES.values(), strict=True):
        assert tf.io.gfile.GFile(path, "rb").read() == content
    with pytest.raises(MicroExportError, match=r"already holds tiny.tflite, tiny_model_data.cc"):
        export_files.check_not_overwriting(folder, "tiny", overwrite=False)


def test_a_local_export_folder_gets_paths_and_no_temporary(tmp_path):
    paths = export_files.write_atomically(tmp_path / "out", FILES)
    assert paths == [tmp_path / "out" / name for name in FILES]
    assert all(isinstance(path, pathlib.Path) for path in paths)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(FILES)


def test_a_failed_write_replaces_none_of_the_earlier_files(tmp_path, monkeypatch):
    export_files.write_atomically(tmp_path, {"a.h": b"old a", "b.h": b"old b"})
    written = []

    def failing_write(path, content):
        if written:
            raise OSError("disk full")
        written.append(path)
        with tf.io.gfile.GFile(path, "wb") as file:
            file.write(content)

    monkeypatch.setattr("keras_distill._src.utils.storage.write_bytes", failing_write)
    with pytest.raises(OSError, match="disk full"):
        export_files.write_atomically(tmp_path, {"a.h": b"new a", "b.h": b"new b"})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {
        "a.h": b"old a",
        "b.h": b"old b",
    }
