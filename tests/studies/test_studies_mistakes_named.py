"""Mistakes made with the studies, the micro export and the CLI are named.

Each case gets a clear error, a warning or the right result, never a crash, a foreign
exception, a silent overwrite, stale results or an unexplained choice.
"""

import json
import re
import warnings

import keras
import numpy as np
import pytest
from conftest import mlp

from keras_distill import compare, micro, sweep, teacher_assistant_chain
from keras_distill._src import cli
from keras_distill._src.studies import recipes
from keras_distill._src.studies.datasets import Split
from keras_distill._src.training.distiller import Distiller


def tiny(seed=0, inputs=4, outputs=2):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(outputs)])


@pytest.fixture(scope="module")
def small(digits):
    return Split(digits.x_train[:64], digits.y_train[:64], digits.x_test[:32], digits.y_test[:32])


# The TFLite calibrator segfaults on a recurrent loop; the user's process lives.
@pytest.mark.slow  # the conversion runs in a subprocess that may crash
@pytest.mark.parametrize("layer", [keras.layers.LSTM, keras.layers.GRU])
def test_exporting_a_recurrent_model_names_the_layer_and_the_process_survives(layer, tmp_path):
    model = keras.Sequential(
        [keras.Input((5, 3)), layer(4, name="recurrent"), keras.layers.Dense(2)]
    )
    x = np.random.default_rng(0).random((16, 5, 3)).astype("float32")
    out = tmp_path / "out"
    with pytest.raises(micro.MicroExportError, match=r"layer recurrent\. Hint: .*unroll=True"):
        micro.export(model, x, out, name="rnn")
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.slow  # the conversion runs in a subprocess that may crash
def test_compare_with_a_recurrent_model_names_the_layer_and_the_process_survives():
    model = keras.Sequential(
        [keras.Input((5, 3)), keras.layers.GRU(4, name="gru"), keras.layers.Dense(2)]
    )
    x = np.random.default_rng(0).random((32, 5, 3)).astype("float32")
    with pytest.raises(micro.MicroExportError, match=r"layer gru\. Hint: .*unroll=True"):
        compare(model, model, (x, np.arange(32) % 2), repeats=1)


def test_an_unrolled_lstm_exports_as_the_hint_says(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((5, 3)), keras.layers.LSTM(4, unroll=True), keras.layers.Dense(2)]
    )
    x = np.random.default_rng(0).random((16, 5, 3)).astype("float32")
    result = micro.export(model, x, tmp_path, name="rnn", validation_data=x)
    assert result.tflite_path.stat().st_size > 0 and result.validation.examples == 16


# An earlier export is not replaced without overwrite=True.
def test_export_refuses_to_replace_an_earlier_export_unless_asked(tmp_path):
    x = np.random.default_rng(0).random((32, 4)).astype("float32")
    first = micro.export(tiny(0), x, tmp_path, name="tiny")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(
        micro.MicroExportError,
        match=r"already holds tiny\.tflite, tiny_model_data\.cc, tiny_model_data\.h"
        r".*overwrite=True",
    ):
        micro.export(tiny(1), x, tmp_path, name="tiny")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    second = micro.export(tiny(1), x, tmp_path, name="tiny", overwrite=True)
    assert second.tflite_path == first.tflite_path
    assert second.tflite_path.read_bytes() != before["tiny.tflite"]


# A distiller is named, with what to export instead.
def test_exporting_a_distiller_says_to_export_its_student(tmp_path):
    distiller = Distiller(tiny(0), tiny(1))
    with pytest.raises(micro.MicroExportError, match=r"distiller\.student"):
        micro.export(distiller, np.zeros((8, 4), "float32"), tmp_path)
    assert list(tmp_path.iterdir()) == []


# A pruned model still wrapped is refused with the call that strips it.
def test_an_unstripped_pruned_model_is_refused_with_the_strip_call(tmp_path):
    class PruneLowMagnitude(keras.layers.Wrapper):  # tfmot's wrapper, recognised by its name
        def call(self, inputs):
            return self.layer(inputs)

    model = keras.Sequential(
        [keras.Input((4,)), PruneLowMagnitude(keras.layers.Dense(2), name="prune_dense")]
    )
    with pytest.raises(
        micro.MicroExportError,
        match=r"pruning wrappers \(PruneLowMagnitude around layer prune_dense\).*"
        r"`kd\.strip\(model\)`",
    ):
        micro.export(model, np.zeros((8, 4), "float32"), tmp_path)


# The CLI says what it expects and what a command does.
def test_cli_says_what_a_bad_number_should_be(capsys):
    with pytest.raises(SystemExit) as error:
        cli.main(["demo", "--epochs", "abc"])
    assert error.value.code == 2
    message = capsys.readouterr().err
    assert "argument --epochs: expected a positive whole number, got 'abc'" in message
    assert "_positive_int" not in message


def test_cli_help_says_what_the_demo_does_without_a_measured_time():
    text = " ".join(cli.build_parser().format_help().split())
    assert "search the student that fits a microcontroller's flash and RAM" in text
    assert "takes a few minutes" in text
    assert not re.search(r"measured|\d+ s\b", text)  # a time measured once goes stale


# A sweep does not reuse runs made with other settings or another teacher.
def test_sweep_refuses_stored_runs_made_differently(small, tmp_path, monkeypatch):
    path = tmp_path / "runs.jsonl"
    students = {"h4": lambda seed: mlp([4], seed=seed)}
    teacher = mlp([8], seed=5)
    first = sweep(students, teacher, small, seeds=[0], epochs=2, path=path, verbose=0)
    assert first.records[0]["identity"]["settings"] == {"epochs": 2, "recipe": {}}
    stored = path.read_text()
    with pytest.raises(ValueError, match=r"settings \{.*\"epochs\": 2.*\} in the file, .*1.* now"):
        sweep(students, teacher, small, seeds=[0], epochs=1, path=path, verbose=0)
    with pytest.raises(ValueError, match=r"the teacher's weights \(fingerprint"):
        sweep(students, mlp([8], seed=6), small, seeds=[0], epochs=2, path=path, verbose=0)
    other_data = Split(small.x_train[:32], small.y_train[:32], small.x_test, small.y_test)
    with pytest.raises(ValueError, match=r"the data \(fingerprint"):
        sweep(students, teacher, other_data, seeds=[0], epochs=2, path=path, verbose=0)
    assert path.read_text() == stored  # nothing appended, nothing mixed
    calls = []
    monkeypatch.setattr(recipes, "train_distilled", lambda *a, **k: calls.append(1))
    again = sweep(students, teacher, small, seeds=[0], epochs=2, path=path, verbose=0)
    assert calls == [] and again.records == first.records  # the same sweep is reused


# A torn last line is repaired with a warning; a torn line inside is named.
def test_sweep_repairs_a_torn_last_line_and_names_a_torn_line_inside(small, tmp_path):
    path = tmp_path / "runs.jsonl"
    students = {"h4": lambda seed: mlp([4], seed=seed)}
    teacher = mlp([8], seed=5)
    sweep(students, teacher, small, seeds=[0], epochs=1, path=path, verbose=0)
    complete = path.read_text()
    path.write_text(complete + complete[:40])  # a run killed while writing its line
    with pytest.warns(UserWarning, match=r"runs\.jsonl', line 2: the last line is torn"):
        result = sweep(students, teacher, small, seeds=[0], epochs=1, path=path, verbose=0)
    assert len(result.records) == 1 and path.read_text() == complete
    path.write_text(complete[:40] + "\n" + complete)
    with pytest.raises(ValueError, match=r"runs\.jsonl', line 1: not a JSON record"):
        sweep(students, teacher, small, seeds=[0], epochs=1, path=path, verbose=0)


# Clear errors, raised before any training, instead of foreign exceptions.
def test_compare_names_mismatched_and_one_hot_labels(teacher, digits):
    x, y = digits.x_test[:100], digits.y_test[:80]
    with pytest.raises(ValueError, match=r"`y` has 80 labels but its inputs have 100 examples"):
        compare(teacher, teacher, (x, y), repeats=1, tflite=False)
    one_hot = np.eye(10)[digits.y_test[:100]]
    with pytest.raises(ValueError, match=r"received shape \(100, 10\) \(one-hot labels\?\)"):
        compare(teacher, teacher, (x, one_hot), repeats=1, tflite=False)


def test_teacher_assistant_chain_with_one_model_says_to_pass_a_list(teacher, small):
    with pytest.raises(
        TypeError, match=r"must be a list \[teacher, .*received a single Sequential"
    ):
        teacher_assistant_chain(teacher, small)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda t, s: recipes.train_distilled(t, mlp([4]), (s.x_train, s.y_train), epochs=1),
            TypeError,
            r"must be a .*Split\(x_train, y_train, x_test, y_test\); received a tuple of 2 items",
        ),
        (
            lambda t, s: recipes.train_recommended(t, mlp([4]), s, epochs=1, make_augment=None),
            TypeError,
            r"`make_student` must be a callable .*received the Sequential object",
        ),
        (
            lambda t, s: recipes.train_recommended(
                t, lambda: mlp([4]), s, epochs=1, make_augment=keras.layers.GaussianNoise(0.1)
            ),
            TypeError,
            r"`make_augment` must be a callable .*received the GaussianNoise object",
        ),
        (
            lambda t, s: recipes.train_from_scratch(mlp([4]), s, epochs="3"),
            ValueError,
            r"`epochs` must be a positive integer; received '3' \(str\)",
        ),
        (
            lambda t, s: recipes.train_distilled(
                t, mlp([4]), Split(s.x_train, np.eye(10)[s.y_train], s.x_test, s.y_test), epochs=1
            ),
            ValueError,
            r"`y_train` must hold one integer class per example.*one-hot",
        ),
        (
            lambda t, s: recipes.train_recommended(
                t,
                lambda: mlp([4]),
                Split(s.x_train[:1], s.y_train[:1], s.x_test, s.y_test),
                epochs=1,
                make_augment=None,
            ),
            ValueError,
            r"at least 2 training examples \(received 1\)",
        ),
        (
            lambda t, s: recipes.train_function_matching(
                t, mlp([4]), Split(s.x_train, s.y_train, s.x_test[:0], s.y_test[:0]), epochs=1
            ),
            ValueError,
            r"The test split is empty",
        ),
    ],
    ids=[
        "tuple",
        "model-as-builder",
        "layer-as-augment",
        "string-epochs",
        "one-hot",
        "one-example",
        "empty-test",
    ],
)
def test_recipes_refuse_bad_arguments_before_training(
    teacher, small, call, error, message, monkeypatch
):
    fits = []
    monkeypatch.setattr(keras.Model, "fit", lambda *a, **k: fits.append(1))
    with pytest.raises(error, match=message):
        call(teacher, small)
    assert fits == []  # refused before anything trained


# A tie on the held-out part is said, not hidden.
def test_train_recommended_says_when_the_candidates_tie(teacher, small):
    def constant_student():  # outputs zeros whatever it learns: both candidates score the same
        keras.utils.set_random_seed(0)
        return keras.Sequential(
            [keras.Input((64,)), keras.layers.Dense(10), keras.layers.Lambda(lambda t: t * 0.0)]
        )

    with pytest.warns(UserWarning, match=r"the candidates tie on the 12 held-out examples"):
        accuracy, info = recipes.train_recommended(
            teacher, constant_student, small, epochs=1, make_augment=None
        )
    assert info["tied"] and info["chosen"] == "distilled"
    assert len(set(info["validation"].values())) == 1


def test_the_old_name_of_split_still_works_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match=r"`kd\.recipes\.Data` is `kd\.datasets\.Split`"):
        data_type = recipes.Data
    assert data_type is Split
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert recipes.Split is Split


def test_stored_run_records_are_json(small, tmp_path):
    path = tmp_path / "runs.jsonl"
    sweep(
        {"h4": lambda seed: mlp([4], seed=seed)},
        mlp([8], seed=5),
        small,
        seeds=[0],
        epochs=1,
        path=path,
        verbose=0,
        temperature=2.0,
    )
    record = json.loads(path.read_text())
    assert record["identity"]["settings"] == {"epochs": 1, "recipe": {"temperature": 2.0}}
    assert set(record["identity"]) == {"settings", "data", "teacher", "student"}
