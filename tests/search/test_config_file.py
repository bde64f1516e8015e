"""`keras-distill search --config FILE`: a search described in JSON, run in-process."""

import json

import keras
import numpy as np
import pytest

from keras_distill._src import cli


@pytest.fixture
def files(tmp_path):
    """A tiny data set (.npz) and teacher (.keras) in `tmp_path`; returns a config writer."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 8)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int32")
    np.savez(tmp_path / "data.npz", x_train=x[:120], y_train=y[:120], x_val=x[120:], y_val=y[120:])
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)], name="linear")
    teacher.save(tmp_path / "teacher.keras")

    def write(**keys):
        config = {"teachers": {"linear": "teacher.keras"}, "data": "data.npz", **keys}
        path = tmp_path / "search.json"
        path.write_text(json.dumps(config))
        return str(path)

    return write


def test_a_config_file_runs_the_search_and_writes_its_report(files, tmp_path, capsys):
    # post-training candidates: one trial of one epoch is mostly conversions, twice as long aware
    settings = dict(trials=1, epochs=1, batch_size=32, quantization_aware=[False])
    config = files(flash_bytes=40_000, directory="out", **settings)
    assert cli.main(["search", "--config", config]) == 0
    out = capsys.readouterr().out
    report = (tmp_path / "out" / "report.md").read_text()  # relative to the config's folder
    assert report.startswith("Budget: flash 40,000 B, RAM unlimited. 1 trial")
    assert out.count("| trial |") == 1  # the front, printed once
    assert out.count("\ntrial ") == 1  # a line per trial
    assert (tmp_path / "out" / "journal.log").stat().st_size > 0


def test_a_bad_config_key_is_named(files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = files(flash_bytes=40_000, trails=2)
    assert cli.main(["search", "--config", config]) == 1
    error = capsys.readouterr().err
    assert error.startswith("keras-distill search: error: The search config has unknown keys")
    assert "['trails']" in error and "trials" in error  # the accepted keys are listed
    assert not (tmp_path / "keras_distill_search").exists()  # nothing written
