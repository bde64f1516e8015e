import os
import re
import shutil
import subprocess
import sys

import pytest

from keras_distill._src import cli

SCRIPT = shutil.which("keras-distill", path=os.path.dirname(sys.executable))
CPU_LINE = "cpu_feature_guard"  # TensorFlow's C++ INFO line on CPUs with extra instructions


def run(command, timeout=600):
    """`command`'s result, with no TF_CPP_MIN_LOG_LEVEL from the environment (conftest sets one)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.slow  # subprocesses that load TensorFlow
@pytest.mark.parametrize(
    "command", [[SCRIPT], [sys.executable, "-m", "keras_distill"]], ids=["script", "module"]
)
def test_the_command_prints_no_tensorflow_cpu_lines(command):
    if command[0] is None:
        pytest.skip("the keras-distill script is not installed beside this Python")
    if CPU_LINE not in run([sys.executable, "-c", "import tensorflow"]).stderr:
        pytest.skip(f"TensorFlow prints no {CPU_LINE} line on this machine")
    result = run([*command, "--version"])
    assert re.match(r"keras-distill \d+\.\d+\.\d+", result.stdout)
    assert CPU_LINE not in result.stderr


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


def test_demo_without_the_examples_extra_names_it_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mnist1d", None)  # `import mnist1d` now fails
    out = tmp_path / "demo"
    assert cli.main(["demo", "--quick", "--quiet", "--output-dir", str(out)]) == 1
    error = capsys.readouterr().err
    assert error == (
        "keras-distill demo: error: The demo needs mnist1d, from the [examples] extra: "
        "pip install 'keras-distill[examples]'. Nothing was written.\n"
    )
    assert not out.exists()


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
