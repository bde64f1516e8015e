"""Model introspection helpers: multiply-accumulates and eager predictions."""

import keras
import numpy as np
import pytest

import keras_distill as kd
from keras_distill._src.utils import model_inspection


def test_multiply_accumulates_counts_dense_and_convolutions_in_nested_models():
    inner = keras.Sequential([keras.Input((8, 3)), keras.layers.Conv1D(4, 3, padding="same")])
    model = keras.Sequential(
        [
            keras.Input((8, 3)),
            inner,
            keras.layers.Conv1D(2, 3, strides=2, padding="same"),
            keras.layers.Flatten(),
            keras.layers.Dense(5),
        ]
    )
    # 8 positions x 3 x 3 x 4, then 4 positions x 3 x 4 x 2, then 8 x 5
    assert model_inspection.multiply_accumulates(model) == 8 * 36 + 4 * 24 + 40


def test_a_wrapper_counts_the_kernel_of_the_layer_it_wraps():
    model = keras.Sequential(
        [
            keras.Input((8, 3)),
            keras.layers.Conv1D(4, 3, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(5),
        ]
    )
    # a quantization-aware model costs what its float model does: 8 x 3 x 3 x 4, then 32 x 5
    assert model_inspection.multiply_accumulates(kd.quantization_aware(model)) == 288 + 160
    assert model_inspection.multiply_accumulates(model) == 288 + 160
    per_step = keras.Sequential(
        [keras.Input((6, 3)), keras.layers.TimeDistributed(keras.layers.Dense(2))]
    )
    assert model_inspection.multiply_accumulates(per_step) == 6 * 3 * 2


def test_multiply_accumulates_refuses_a_model_without_output_shapes():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = Subclassed()
    model(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="no known output shape"):
        model_inspection.multiply_accumulates(model)


def test_predictions_equal_predict_without_tracing():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    x = np.random.default_rng(0).random((10, 4)).astype("float32")
    np.testing.assert_allclose(
        model_inspection.predictions(model, x, batch_size=3),
        model.predict(x, verbose=0),
        rtol=1e-6,
        atol=1e-6,
    )
