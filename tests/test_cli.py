import re
import subprocess
import sys

import pytest

from keras_distill._src import cli


def run(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "keras_distill", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_demo_quick_trains_compares_exports_and_plots(tmp_path):
    out = tmp_path / "demo"
    result = run("demo", "--quick", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout
    assert "student distilled: function matching (no labels)" in text  # a progress bar per run
    assert "2/2" in text
    rows = re.findall(
        r"\| ((?:teacher|student)[^|]*) \| ([\d,]+) \| [\d,]+ \| [\d,]+ \| "
        r"([\d.]+)% \|",
        text,
    )
    assert {name: params for name, params, _ in rows} == {
        "teacher (CNN)": "13,706",
        "student alone (+ the same augmentation)": "7,434",
        "student distilled (function matching)": "7,434",
        "student alone, 10% of the labels (+ augmentation)": "7,434",
    }
    assert all(0 <= float(accuracy) <= 100 for _, _, accuracy in rows)
    verdicts = re.findall(
        r"^(All labels|10% of the labels): ([+-][\d.]+) points: (.*)\.$", text, re.MULTILINE
    )
    assert [v[0] for v in verdicts] == ["All labels", "10% of the labels"]
    for _, gain, verdict in verdicts:  # the verdict follows the measured sign
        assert ("did not beat" in verdict) == (float(gain) <= 0)
    assert "22x fewer multiply-accumulates" in text
    assert "| top-1 agreement, TFLM int8 vs Keras float |" in text
    for name in (
        "micro/student.tflite",
        "micro/student_model_data.cc",
        "micro/student_model_data.h",
        "demo.png",
    ):
        assert (out / name).stat().st_size > 0, name
    assert (out / "demo.png").read_bytes()[:4] == b"\x89PNG"
    assert f"Figure: {out / 'demo.png'}" in text


def test_bad_arguments_exit_with_a_message():
    with pytest.raises(SystemExit) as error:
        cli.main(["demo", "--epochs", "0"])
    with pytest.raises(SystemExit):
        cli.main(["demo", "--student-units", "8"])  # the digits demo's option is gone
    assert error.value.code == 2
    with pytest.raises(SystemExit):
        cli.main(["distil-everything"])


def test_version(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert re.match(r"keras-distill \d+\.\d+\.\d+", capsys.readouterr().out)


def test_export_micro_refuses_a_float_tflite(tmp_path, capsys):
    import keras
    import tensorflow as tf

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    path = tmp_path / "float.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    assert cli.main(["export-micro", str(path), "--out", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert f"keras-distill export-micro: error: {str(path)!r} holds a float32 TFLite" in error
    assert "its .keras file or its SavedModel folder" in error
    assert not (tmp_path / "out").exists()
