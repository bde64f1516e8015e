"""Several teachers: the target is the weighted average of their softened probabilities."""

import keras
import numpy as np
import pytest
from conftest import SCE, mlp

import keras_distill as kd
from keras_distill import Distiller
from keras_distill._src.teachers import ensemble

pytestmark = pytest.mark.xdist_group("ensemble")  # one worker trains the teachers once


def softmax(z):
    z = z - z.max(-1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def teachers(digits):
    models = []
    for seed, width in ((10, 32), (11, 64)):
        model = mlp([width], seed=seed)
        model.compile("adam", SCE)
        model.fit(digits.x_train, digits.y_train, epochs=3, verbose=0)
        models.append(model)
    softmax_teacher = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, "softmax")])
    softmax_teacher.compile("adam", keras.losses.SparseCategoricalCrossentropy())
    softmax_teacher.fit(digits.x_train, digits.y_train, epochs=3, verbose=0)
    return models + [softmax_teacher]


def test_the_target_is_the_numpy_average_of_softened_probabilities(teachers, digits):
    x = digits.x_test[:50]
    student = mlp([8], seed=12)
    distiller = Distiller(teachers, student, temperature=3.0, teacher_weights=[1, 2, 1])
    target = softmax(distiller.teacher.predict(x, verbose=0) / 3.0)
    logits = [t.predict(x, verbose=0) for t in teachers[:2]]
    logits.append(np.log(teachers[2].predict(x, verbose=0)))  # a softmax teacher
    expected = sum(w * softmax(z / 3.0) for w, z in zip([0.25, 0.5, 0.25], logits))
    np.testing.assert_allclose(target, expected, atol=1e-5)
    distiller.temperature = 1.0  # the combined logits follow the distiller's temperature
    target = softmax(distiller.teacher.predict(x, verbose=0))
    expected = sum(w * softmax(z) for w, z in zip([0.25, 0.5, 0.25], logits))
    np.testing.assert_allclose(target, expected, atol=1e-5)
    averaged = Distiller(teachers[:2], mlp([8], seed=12), teacher_average="logits")
    np.testing.assert_allclose(
        averaged.teacher.predict(x, verbose=0), (logits[0] + logits[1]) / 2, atol=1e-5
    )


def test_an_ensemble_trains_runs_live_and_saves(teachers, digits, tmp_path, capsys):
    weights = [t.get_weights() for t in teachers]
    distiller = Distiller(teachers[:2], mlp([8], seed=13), temperature=2.0)
    distiller.compile("adam", SCE, metrics=["accuracy"])
    distiller.fit(digits.x_train, digits.y_train, epochs=2, verbose=1)
    assert "averaged probabilities depend on the temperature" in capsys.readouterr().out
    for teacher, before in zip(teachers, weights):  # never modified
        for a, b in zip(teacher.get_weights(), before):
            np.testing.assert_array_equal(a, b)
    distiller.save(tmp_path / "ensemble.keras")
    loaded = keras.models.load_model(tmp_path / "ensemble.keras")
    loaded.temperature = 5.0
    x = digits.x_test[:20]
    distiller.temperature = 5.0
    np.testing.assert_allclose(
        loaded.teacher.predict(x, verbose=0), distiller.teacher.predict(x, verbose=0), atol=1e-5
    )


def test_label_with_teacher_stores_the_ensemble(teachers, digits, tmp_path):
    x = digits.x_test[:32]
    kd.label_with_teacher(teachers[:2], x, tmp_path / "labels", verbose=0)
    dataset = kd.load_teacher_labels(tmp_path / "labels", shuffle=False)
    stored = np.concatenate([targets["teacher_logits"].numpy() for _, targets in dataset])
    expected = (
        softmax(teachers[0].predict(x, verbose=0)) + softmax(teachers[1].predict(x, verbose=0))
    ) / 2
    np.testing.assert_allclose(softmax(stored), expected, atol=1e-5)


def test_bad_teacher_lists_are_refused(teachers, digits):
    student = mlp([8], seed=14)
    with pytest.raises(ValueError, match=r"received 2 teachers and teacher_weights=\[1.0\]"):
        Distiller(teachers[:2], student, teacher_weights=[1])
    with pytest.raises(ValueError, match=r"teacher_weights=\[1.0, -1.0\]"):
        Distiller(teachers[:2], student, teacher_weights=[1, -1])
    with pytest.raises(ValueError, match="two or more teachers"):
        Distiller([teachers[0]], student)
    with pytest.raises(ValueError, match="`teacher_weights` weighs a list of teachers"):
        Distiller(teachers[0], student, teacher_weights=[1.0])
    five = mlp([8], seed=15, outputs=5)
    with pytest.raises(ValueError, match="between teacher 0 and teacher 1"):
        ensemble.ensemble([teachers[0], five])
    with pytest.raises(ValueError, match="`average` must be one of"):
        ensemble.ensemble(teachers[:2], average="votes")
