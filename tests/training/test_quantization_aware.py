"""Quantization-aware Keras 3 students: what they learn is what the int8 kernels compute."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import SCE

import keras_distill as kd
from keras_distill._src.training.quantization_aware import ActivationQuantizer


def conv_student(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.DepthwiseConv2D(3, padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.Activation("relu6"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def images(digits):
    return digits.x_train.reshape(-1, 8, 8, 1), digits.x_test.reshape(-1, 8, 8, 1)


def int8_predictions(model, x):
    """The int8 TFLite model's dequantized outputs (converted without representative data)."""
    spec = tf.TensorSpec((1, *model.inputs[0].shape[1:]), tf.float32)
    function = tf.function(lambda v: model(v, training=False), input_signature=[spec])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    interpreter = tf.lite.Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()
    inputs, outputs = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    (scale, zero), (out_scale, out_zero) = inputs["quantization"], outputs["quantization"]
    rows = []
    for row in x:
        q = np.clip(np.round(row / scale + zero), -128, 127).astype(np.int8)
        interpreter.set_tensor(inputs["index"], q[None])
        interpreter.invoke()
        rows.append(
            (interpreter.get_tensor(outputs["index"]).astype("float32") - out_zero) * out_scale
        )
    kinds = {d["dtype"] for d in interpreter.get_tensor_details()}
    return np.concatenate(rows), kinds


@pytest.fixture(scope="module")
def distilled_conv_student(digits):
    """A conv student with batch norms, trained float, made aware, distilled for 6 epochs."""
    x_train, _ = images(digits)
    keras.utils.set_random_seed(0)
    teacher = conv_student(seed=1)
    teacher.compile("adam", SCE)
    teacher.fit(x_train, digits.y_train, epochs=5, verbose=0)
    student = conv_student(seed=2)
    student.compile("adam", SCE)
    student.fit(x_train, digits.y_train, epochs=5, verbose=0)
    float_weights = [np.array(w) for w in student.get_weights()]
    aware = kd.quantization_aware(student, freeze_after_steps=100)
    distiller = kd.Distiller(teacher, aware, temperature=2.0, alpha=0.5)
    distiller.compile(keras.optimizers.Adam(1e-3), SCE, metrics=["accuracy"])
    distiller.fit(x_train, digits.y_train, epochs=6, batch_size=64, verbose=0)
    return student, float_weights, aware


def test_the_int8_model_computes_what_the_aware_student_computed(distilled_conv_student, digits):
    _, x_test = images(digits)
    _, _, aware = distilled_conv_student
    int8, kinds = int8_predictions(aware, x_test)
    keras_outputs = aware.predict(x_test, verbose=0)
    agreement = np.mean(int8.argmax(1) == keras_outputs.argmax(1))
    assert agreement >= 0.98  # near-ties may round the other way in integer kernels
    assert np.mean(keras_outputs.argmax(1) == digits.y_test) > 0.8
    assert kinds <= {np.int8, np.int32}  # no float tensor anywhere: fully int8


def test_the_float_student_is_not_changed(distilled_conv_student):
    student, float_weights, _ = distilled_conv_student
    for before, after in zip(float_weights, student.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_batch_norms_are_folded_and_relus_fused(distilled_conv_student):
    _, _, aware = distilled_conv_student
    names = [layer.name for layer in aware.layers]
    assert sum(name.endswith("_folded") for name in names) == 2
    quantizers = [layer for layer in aware.layers if isinstance(layer, ActivationQuantizer)]
    # input, ReLU, relu6 activation, the hidden dense (relu fused), the logits
    assert len(quantizers) == 5


def test_saved_and_loaded_with_its_ranges(distilled_conv_student, digits, tmp_path):
    _, x_test = images(digits)
    _, _, aware = distilled_conv_student
    aware.save(tmp_path / "aware.keras")
    loaded = keras.saving.load_model(tmp_path / "aware.keras")
    np.testing.assert_allclose(
        loaded.predict(x_test, verbose=0), aware.predict(x_test, verbose=0), atol=1e-6
    )


def test_ranges_stop_moving_after_the_freeze():
    quantizer = ActivationQuantizer(momentum=0.5, freeze_after_steps=2)
    quantizer(np.array([[-1.0, 1.0]], "float32"), training=True)
    quantizer(np.array([[-3.0, 3.0]], "float32"), training=True)
    frozen = float(quantizer.range_max)
    quantizer(np.array([[-9.0, 9.0]], "float32"), training=True)
    assert frozen == pytest.approx(2.0, abs=1e-6)
    assert float(quantizer.range_max) == pytest.approx(frozen, abs=1e-6)


def test_a_dense_student_trains_aware_and_converts_fully_int8(digits):
    keras.utils.set_random_seed(3)
    student = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)]
    )
    aware = kd.quantization_aware(student)
    aware.compile(keras.optimizers.Adam(3e-3), SCE)
    aware.fit(digits.x_train, digits.y_train, epochs=5, verbose=0)
    int8, kinds = int8_predictions(aware, digits.x_test)
    outputs = aware.predict(digits.x_test, verbose=0)
    assert np.mean(int8.argmax(1) == outputs.argmax(1)) >= 0.99
    assert kinds <= {np.int8, np.int32}


@pytest.mark.parametrize(
    "layer, named",
    [
        (keras.layers.LayerNormalization(), "LayerNormalization"),
        (keras.layers.Dense(4, activation="gelu"), "gelu"),
    ],
)
def test_an_unsupported_layer_is_named_before_training(layer, named):
    student = keras.Sequential([keras.Input((4,)), layer, keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=named) as raised:
        kd.quantization_aware(student)
    assert "post-training int8" in str(raised.value)


@pytest.mark.parametrize("bad", [-1, 0, 2.5, True])
def test_a_bad_freeze_setting_is_quoted(bad):
    with pytest.raises(ValueError, match=f"freeze_after_steps={bad!r}"):
        ActivationQuantizer(freeze_after_steps=bad)
