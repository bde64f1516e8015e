"""find_student refuses bad input with a clear message, before anything is trained or written."""

import json

import keras
import numpy as np
import pytest
from conftest import mlp

import keras_distill as kd
from keras_distill._src.micro import firmware


@pytest.fixture(scope="module")
def untrained_teacher():
    return mlp([16], seed=0, name="teacher")


def search(teacher, digits, directory, **settings):
    arguments = dict(flash_bytes=20_000, trials=1, epochs=1, directory=directory, verbose=0)
    data = ((digits.x_train, digits.y_train), (digits.x_test, digits.y_test))
    return kd.find_student(teacher, *data, **{**arguments, **settings})


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(board="nano"), "Unknown board 'nano'; presets: arduino_nano_33_ble_sense, esp32"),
        (dict(flash_bytes=None), "No budget: give `board=`"),
        (dict(storage="mysql+pymysql://u@localhost/db"), "pip install PyMySQL"),
        (dict(minimize="speed"), "`minimize` must be one of"),
        (dict(trials=0), "trials"),
        (dict(final_epochs=0), "`final_epochs` must be a positive integer; received 0"),
        (dict(final_candidates=0), "`final_candidates` must be a positive integer"),
        (dict(latency_ms=5.0), "needs the board's clock"),
        (dict(tflm_dir="tflm"), "tflm_dir= counts each candidate's instructions .* `clock_hz=`"),
    ],
)
def test_bad_settings(untrained_teacher, digits, tmp_path, settings, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        search(untrained_teacher, digits, tmp_path / "out", **settings)
    assert not (tmp_path / "out").exists()


def test_a_budget_even_the_smallest_candidate_exceeds(untrained_teacher, digits, tmp_path):
    with pytest.raises(
        ValueError, match=r"Even the smallest candidate of the space \(610 param"
    ) as e:
        search(untrained_teacher, digits, tmp_path / "out", flash_bytes=1_000)
    assert "flash 3," in str(e.value) and "> 1,000 B" in str(e.value)
    assert not (tmp_path / "out").exists()


def test_teachers_whose_classes_differ_from_the_labels(digits, tmp_path):
    five = mlp([16], outputs=5, name="five")
    with pytest.raises(
        ValueError, match="Teacher 'five' outputs 5 classes, but the labels have 10"
    ):
        search(five, digits, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_no_validation_data(untrained_teacher, digits, tmp_path):
    with pytest.raises(ValueError, match="`validation_data` is required"):
        kd.find_student(untrained_teacher, (digits.x_train, digits.y_train), None, board="esp32")
    empty = (digits.x_test[:0], digits.y_test[:0])
    with pytest.raises(ValueError, match="received 0 examples"):
        kd.find_student(untrained_teacher, (digits.x_train, digits.y_train), empty, board="esp32")


def test_a_space_with_no_candidate(untrained_teacher, digits, tmp_path):
    def build(choices):
        units = choices.choose("units", ())
        return keras.Sequential([keras.Input((64,)), keras.layers.Dense(units)])

    with pytest.raises(ValueError, match="no candidate: the choice 'units' has no options"):
        search(untrained_teacher, digits, tmp_path / "out", space=build)
    with pytest.raises(ValueError, match="no candidate: `alphas` is empty"):
        kd.search.SearchSpace(build, alphas=())
    assert not (tmp_path / "out").exists()


def test_suggested_candidates_are_dicts_of_choices():
    def build(choices):
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])

    with pytest.raises(ValueError, match=r"`suggested` must hold dicts of choices .* \(8,\)"):
        kd.search.SearchSpace(build, suggested=(8,))


def test_a_tflm_dir_that_is_not_a_tflm_tree(untrained_teacher, digits, tmp_path):
    with pytest.raises(kd.micro.FirmwareError, match=r"is not a TensorFlow Lite Micro tree"):
        search(untrained_teacher, digits, tmp_path / "out", tflm_dir=tmp_path, clock_hz=64_000_000)
    assert not (tmp_path / "out").exists()


def test_a_tflm_tree_without_the_arm_compiler(untrained_teacher, digits, tmp_path, monkeypatch):
    tree = tmp_path / "tflm"
    makefile = tree / firmware.RELATIVE_MAKEFILE
    makefile.parent.mkdir(parents=True)
    makefile.write_text("# a TFLM tree's Makefile\n")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no compiler, no make
    with pytest.raises(kd.micro.FirmwareError, match=r"arm-none-eabi-g\+\+ not found on PATH"):
        search(untrained_teacher, digits, tmp_path / "out", tflm_dir=tree, board="esp32")
    assert not (tmp_path / "out").exists()


def test_recipe_options_may_be_numpy_arrays_and_are_stored_as_python_values():
    space = kd.search.SearchSpace(
        lambda choices: None,
        temperatures=np.linspace(2.0, 8.0, 3),
        alphas=[np.float32(0.5)],
        function_matching=np.array([False, True]),
    )
    assert space.temperatures == (2.0, 5.0, 8.0)
    assert space.alphas == (0.5,) and space.function_matching == (False, True)
    assert {type(value) for value in space.temperatures + space.alphas} == {float}
    assert json.dumps(space.recipe_options())  # as an Optuna storage holds them
    with pytest.raises(ValueError, match=r"`temperatures` must be a tuple, list or 1-D array"):
        kd.search.SearchSpace(lambda choices: None, temperatures=np.ones((2, 2)))
