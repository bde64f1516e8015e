"""The small transformer of the DistilBERT tutorial and benchmark."""

import keras
import numpy as np
import pytest

import keras_distill as kd
from keras_distill._src.studies.architectures import (
    IntegerLayerNorm,
    TransformerBlock,
    transformer_classifier,
)


def test_integer_layer_norm_equals_keras_layer_normalization():
    x = np.random.default_rng(0).normal(size=(3, 5, 8)).astype("float32")
    ours, theirs = IntegerLayerNorm(epsilon=1e-3), keras.layers.LayerNormalization(epsilon=1e-3)
    ours.build(x.shape)
    theirs.build(x.shape)
    gamma, beta = np.linspace(0.5, 2, 8), np.linspace(-1, 1, 8)
    ours.set_weights([gamma, beta])
    theirs.set_weights([gamma, beta])
    np.testing.assert_allclose(ours(x), theirs(x), atol=1e-5)


def test_the_classifier_saves_loads_and_halves_the_distilbert_way(tmp_path):
    teacher, student = transformer_classifier(4, seed=0), transformer_classifier(2, seed=1)
    x = np.random.default_rng(1).normal(size=(4, 40)).astype("float32")
    path = tmp_path / "t.keras"
    teacher.save(path)
    np.testing.assert_allclose(keras.saving.load_model(path)(x), teacher(x), atol=1e-6)
    report = kd.init_from_teacher(student, teacher)
    assert ("block_1", "block_2") in report.copied and report.skipped == ()
    assert [type(layer) for layer in student.layers].count(TransformerBlock) == 2


def test_bad_shapes_are_refused_with_the_values():
    with pytest.raises(ValueError, match="received width=10, heads=4"):
        TransformerBlock(heads=4, width=10)
    with pytest.raises(ValueError, match="length=40, patch=3"):
        transformer_classifier(2, patch=3)
