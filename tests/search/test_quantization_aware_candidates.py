"""A search that trains candidates quantization-aware: chosen per candidate, exported, compared."""

import functools
import json
import re
import shutil

import keras
import numpy as np
import pytest
from conftest import mlp

import keras_distill as kd
from keras_distill._src.micro import exporter, model_info
from keras_distill._src.search import config, training
from keras_distill._src.training.quantization_aware import ActivationQuantizer

# The module's fixtures run once: its tests share one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group("quantization_aware_candidates")

TRAIN, VALIDATION = 600, 200  # digits examples
# The quantization-aware candidate is the smaller one: on the front whatever the accuracies.
SUGGESTED = ({"width": 8, "quantization_aware": True}, {"width": 32, "quantization_aware": False})


def dense(choices):
    width = choices.choose("width", (8, 32))
    return keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(width, activation="relu"), keras.layers.Dense(10)]
    )


def space(quantization_aware, build=dense, suggested=SUGGESTED):
    options = dict(temperatures=(2.0,), alphas=(0.5,), suggested=suggested)
    return kd.search.SearchSpace(build, quantization_aware=quantization_aware, **options)


def search(digits, directory, space, trials=2, **settings):
    data = (digits.x_train[:TRAIN], digits.y_train[:TRAIN])
    validation = (digits.x_test[:VALIDATION], digits.y_test[:VALIDATION])
    teacher = mlp([16], seed=0, name="teacher")
    settings = dict(flash_bytes=40_000, trials=trials, epochs=2, seed=0, verbose=0, **settings)
    return kd.find_student(teacher, data, validation, space=space, directory=directory, **settings)


def is_aware(model) -> bool:
    return any(isinstance(layer, ActivationQuantizer) for layer in model.layers)


@pytest.fixture(scope="module")
def searched(digits, tmp_path_factory):
    """Two trials of a space that may train quantization-aware; how each scratch twin trained."""
    directory = tmp_path_factory.mktemp("search")
    twins = []
    scratch = training.scratch

    def recorded_scratch(plan, model, *args, **kwargs):
        params = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        twins.append((params, is_aware(model)))
        return scratch(plan, model, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "scratch", recorded_scratch)
        result = search(digits, directory, space((False, True)))
    return result, directory, dict(twins)


def front_candidate(result, aware: bool):
    return next(c for c in result.front if c.recipe["quantization_aware"] is aware)


def test_the_recipe_records_whether_each_candidate_trained_quantization_aware(searched):
    result, _, _ = searched
    assert [t.recipe["quantization_aware"] for t in result.trials] == [True, False]
    assert all(t.feasible for t in result.trials) and len(result.front) == 2
    for aware in (True, False):
        candidate = front_candidate(result, aware)
        assert is_aware(keras.saving.load_model(candidate.model_path)) is aware
        row = next(
            line
            for line in result.to_markdown().splitlines()
            if line.startswith(f"| {candidate.number} |")
        )
        assert ("QAT" in row) is aware


def test_exported_fully_int8_without_representative_data(searched, tmp_path, monkeypatch):
    result, _, _ = searched
    given = []
    export = exporter.export
    monkeypatch.setattr(
        exporter,
        "export",
        lambda model, data, *a, **k: given.append(data) or export(model, data, *a, **k),
    )
    candidate = front_candidate(result, True)
    micro = result.export(candidate, tmp_path / "firmware", name="aware")
    assert given == [None]
    info = model_info.inspect_model(micro.tflite_path.read_bytes())
    assert micro.kind == "int8" and info.fully_integer and info.float_tensors == ()
    assert micro.validation.agreement >= 0.99  # TFLM int8 against the quantization-aware model
    assert micro.validation.int8_accuracy == pytest.approx(candidate.int8_accuracy, abs=1e-6)


def test_the_int8_accuracy_in_tflm_agrees_with_the_keras_model(searched, digits):
    result, _, _ = searched
    candidate = front_candidate(result, True)
    model = keras.saving.load_model(candidate.model_path)
    x, y = digits.x_test[:VALIDATION], digits.y_test[:VALIDATION]
    keras_accuracy = float(np.mean(model.predict(x, verbose=0).argmax(-1) == y))
    assert candidate.float_accuracy == pytest.approx(keras_accuracy, abs=1e-6)
    assert candidate.int8_accuracy == pytest.approx(keras_accuracy, abs=0.01)


def test_each_scratch_twin_trained_as_its_candidate(searched):
    result, _, twins = searched
    assert {c.params: c.recipe["quantization_aware"] for c in result.front} == twins
    assert all(c.scratch_accuracy is not None for c in result.front)


@pytest.mark.parametrize("bad", [("yes",), (0, 1), True, ()])
def test_a_bad_value_is_refused_and_quoted(bad):
    message = "is empty" if bad == () else f"received {bad!r}"
    with pytest.raises(ValueError, match=f"`quantization_aware`.*{re.escape(message)}"):
        space(bad)


def test_a_rerun_resumes_only_with_the_same_options(searched, digits, tmp_path):
    _, directory, _ = searched
    copy = shutil.copytree(directory, tmp_path / "search")
    with pytest.raises(ValueError, match=r"other settings.*'quantization_aware': \[False, True\]"):
        search(digits, copy, space((True,)))
    resumed = search(digits, copy, space((False, True)))
    assert resumed.trials == searched[0].trials  # nothing trained again
    assert resumed.front == searched[0].front
    # final training as long as the trials': the trials' students are already final
    final = search(digits, copy, space((False, True)), final_epochs=2, final_candidates=2)
    assert final.front == searched[0].front
    assert not list((copy / "students").glob("*_final.keras"))


def tanh_or_relu(choices):
    activation = choices.choose("activation", ("relu", "tanh"))  # the first is pre-flighted first
    hidden = keras.layers.Dense(8, activation=activation)
    return keras.Sequential([keras.Input((64,)), hidden, keras.layers.Dense(10)])


def test_a_layer_it_cannot_model_makes_the_candidate_infeasible_untrained(digits, tmp_path):
    suggested = ({"activation": "tanh"}, {"activation": "relu"})
    result = search(digits, tmp_path, space((True,), tanh_or_relu, suggested=suggested))
    tanh, relu = sorted(result.trials, key=lambda t: t.number)
    assert tanh.reason.startswith("not for quantization-aware training: ")
    assert "'tanh' does not fuse" in tanh.reason and tanh.model_path is None
    assert relu.feasible and [c.number for c in result.front] == [relu.number]
    assert sorted(p.name for p in (tmp_path / "students").iterdir()) == [
        f"trial_{relu.number}.keras"
    ]


def test_a_space_whose_smallest_candidate_it_cannot_model_is_refused_before_training(
    digits, tmp_path
):
    def tanh(choices):
        width = choices.choose("width", (8,))
        hidden = keras.layers.Dense(width, activation="tanh")
        return keras.Sequential([keras.Input((64,)), hidden, keras.layers.Dense(10)])

    with pytest.raises(ValueError, match="not for quantization-aware training: .*'tanh' does not"):
        search(digits, tmp_path, space((True,), tanh, suggested=()), trials=1)
    assert not (tmp_path / "students").exists()


def test_a_config_file_sets_the_options_of_the_default_space(digits, tmp_path, monkeypatch):
    x, y = digits.x_train[:TRAIN], digits.y_train[:TRAIN]
    np.savez(tmp_path / "data.npz", x_train=x, y_train=y, x_val=x, y_val=y)
    mlp([16], seed=0, name="teacher").save(tmp_path / "teacher.keras")
    searches = []

    @functools.wraps(config.find_student)  # the accepted keys are read from its signature
    def recorded(*args, **kwargs):
        searches.append(kwargs)

    monkeypatch.setattr(config, "find_student", recorded)

    def run(options):
        path = tmp_path / "search.json"
        keys = {"teachers": {"t": "teacher.keras"}, "data": "data.npz", "board": "esp32"}
        options = {} if options is None else {"quantization_aware": options}
        path.write_text(json.dumps({**keys, **options}))
        return config.search_from_config(path)

    run(None)  # find_student's default: default_space, every candidate quantization-aware
    assert "space" not in searches[0]
    run([False, True])
    chosen = searches[1]["space"]
    assert chosen.quantization_aware == (False, True)
    assert chosen.name == kd.search.default_space((64,), 10).name
    with pytest.raises(
        ValueError, match="`quantization_aware` must be a tuple, list or 1-D array .* received True"
    ):
        run(True)
