import re
import subprocess
import sys

import pytest

from keras_distill import cli


def run(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "keras_distill", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_demo_prints_the_comparison_table():
    result = run("demo", "--epochs", "3", "--teacher-epochs", "3", "--student-units", "8")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "Epoch 3/3" in out  # Keras progress output
    rows = dict(re.findall(r"\| (teacher|student, [a-z0-9%+ ,]+) \| ([\d,]+) \|", out))
    assert rows == {
        "teacher": "85,002",
        "student, trained from scratch": "610",
        "student, distilled": "610",
        "student, 10% of the labels, trained alone": "610",
        "student, 10% of the labels + teacher on all inputs": "610",
    }
    assert re.search(r"the teacher's outputs on the rest are worth [+-][\d.]+ points", out)
    assert re.search(r"Compression ratio 139x", out)


def test_bad_arguments_exit_with_a_message():
    with pytest.raises(SystemExit) as error:
        cli.main(["demo", "--epochs", "0"])
    assert error.value.code == 2
    with pytest.raises(SystemExit):
        cli.main(["distil-everything"])


def test_version(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert re.match(r"keras-distill \d+\.\d+\.\d+", capsys.readouterr().out)
