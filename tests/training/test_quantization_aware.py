"""Quantization-aware Keras 3 students: what they learn is what the int8 kernels compute."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import SCE

import keras_distill as kd
from keras_distill._src.training.quantization_aware import ActivationQuantizer, QuantizedWeights


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


# The tests of this trained student run in one worker, which trains it once.
ON_THE_DISTILLED_STUDENT = pytest.mark.xdist_group("distilled_conv_student")


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


@ON_THE_DISTILLED_STUDENT
def test_the_int8_model_computes_what_the_aware_student_computed(distilled_conv_student, digits):
    _, x_test = images(digits)
    _, _, aware = distilled_conv_student
    int8, kinds = int8_predictions(aware, x_test)
    keras_outputs = aware.predict(x_test, verbose=0)
    agreement = np.mean(int8.argmax(1) == keras_outputs.argmax(1))
    assert agreement >= 0.98  # near-ties may round the other way in integer kernels
    assert np.mean(keras_outputs.argmax(1) == digits.y_test) > 0.8
    assert kinds <= {np.int8, np.int32}  # no float tensor anywhere: fully int8


@ON_THE_DISTILLED_STUDENT
def test_the_float_student_is_not_changed(distilled_conv_student):
    student, float_weights, _ = distilled_conv_student
    for before, after in zip(float_weights, student.get_weights()):
        np.testing.assert_array_equal(before, after)


@ON_THE_DISTILLED_STUDENT
def test_batch_norms_are_folded_and_relus_fused(distilled_conv_student):
    _, _, aware = distilled_conv_student
    names = [layer.name for layer in aware.layers]
    assert sum(name.endswith("_folded") for name in names) == 2
    quantizers = [layer for layer in aware.layers if isinstance(layer, ActivationQuantizer)]
    # input, ReLU, relu6 activation, the hidden dense (relu fused), the logits
    assert len(quantizers) == 5


@ON_THE_DISTILLED_STUDENT
def test_batch_statistics_in_training_update_the_moving_ones(distilled_conv_student):
    student, _, aware = distilled_conv_student
    norms = [
        layer for layer in student.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    folded = [layer.batch_norm for layer in aware.layers if getattr(layer, "batch_norm", None)]
    assert len(folded) == len(norms) == 2
    for before, after in zip(norms, folded):
        assert np.abs(after.moving_mean.numpy() - before.moving_mean.numpy()).max() > 1e-4


@ON_THE_DISTILLED_STUDENT
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


def dense_kernel_scales(tflite_path) -> dict:
    """For each int8 FULLY_CONNECTED kernel of a 64-16-10 MLP, its shape: how many scales."""
    interpreter = tf.lite.Interpreter(model_path=str(tflite_path))
    return {
        tuple(int(n) for n in d["shape"]): len(d["quantization_parameters"]["scales"])
        for d in interpreter.get_tensor_details()
        if d["dtype"] == np.int8 and tuple(d["shape"]) in ((16, 64), (10, 16))
    }


def test_dense_kernels_get_one_scale_per_output_unit_as_post_training_int8(digits, tmp_path):
    def make():
        keras.utils.set_random_seed(4)
        return keras.Sequential(
            [keras.Input((64,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(10)]
        )

    scales = {}
    for kind, model, samples in (
        ("post_training", make(), digits.x_train),
        ("aware", kd.quantization_aware(make()), None),
    ):
        model.compile(keras.optimizers.Adam(3e-3), SCE)
        model.fit(digits.x_train, digits.y_train, epochs=2, verbose=0)
        result = kd.micro.export(
            model,
            samples,
            tmp_path / kind,
            name=kind,
            validation_data=(digits.x_test, digits.y_test),
        )
        assert result.kind == "int8"
        scales[kind] = dense_kernel_scales(result.tflite_path)
    assert scales["post_training"] == {(16, 64): 16, (10, 16): 10}
    assert scales["aware"] == scales["post_training"]
    assert result.validation.agreement >= 0.99  # the aware model's, in the TFLM interpreter


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


def quantizers(model):
    return [layer for layer in model.layers if isinstance(layer, ActivationQuantizer)]


def dense_aware(seed=4):
    keras.utils.set_random_seed(seed)
    student = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(10)]
    )
    return kd.quantization_aware(student, freeze_after_steps=1000)


def test_trains_from_stored_teacher_outputs(teacher, digits, tmp_path):
    kd.label_with_teacher(teacher, (digits.x_train, digits.y_train), tmp_path, verbose=0)
    aware = dense_aware()
    distiller = kd.Distiller(None, aware, temperature=2.0, alpha=0.5)
    distiller.compile(keras.optimizers.Adam(3e-3), SCE)
    stored = kd.load_teacher_labels(tmp_path, batch_size=64)
    history = distiller.fit(stored, epochs=4, shuffle=False, verbose=0)
    steps = 4 * int(np.ceil(len(digits.x_train) / 64))
    assert [float(q.observed_steps) for q in quantizers(aware)] == [steps] * 3
    assert history.history["loss"][-1] < history.history["loss"][0]
    accuracy = np.mean(aware.predict(digits.x_test, verbose=0).argmax(1) == digits.y_test)
    assert accuracy > 0.6  # 0.72 measured after 4 epochs


def test_trains_with_augmentation_seen_by_the_ranges(teacher, digits):
    aware = dense_aware()
    scaled = keras.layers.Lambda(lambda x: 4.0 * x)  # the input range the quantizer must learn
    distiller = kd.Distiller(teacher, aware, temperature=2.0, alpha=0.5, augment=scaled)
    distiller.compile(keras.optimizers.Adam(3e-3), SCE)
    distiller.fit(digits.x_train, digits.y_train, epochs=1, batch_size=64, verbose=0)
    input_range = quantizers(aware)[0]
    assert float(input_range.range_max) == pytest.approx(4.0, abs=1e-3)  # digits are in [0, 1]
    assert float(input_range.range_min) == pytest.approx(0.0, abs=1e-6)


@pytest.fixture
def mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_mixed_precision_fake_quantizes_in_float32(teacher, digits, mixed_precision):
    aware = kd.quantization_aware(conv_student(seed=5))
    dtypes = {type(layer).__name__: layer.compute_dtype for layer in aware.layers}
    assert dtypes["QuantizedWeights"] == "float16" and dtypes["ActivationQuantizer"] == "float32"
    x_train, x_test = images(digits)
    flat_teacher = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), teacher])
    distiller = kd.Distiller(flat_teacher, aware, temperature=2.0, alpha=0.5)
    distiller.compile(keras.optimizers.Adam(3e-3), SCE)
    assert isinstance(distiller.optimizer, keras.optimizers.LossScaleOptimizer)
    history = distiller.fit(x_train, digits.y_train, epochs=3, batch_size=64, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert history.history["loss"][-1] < history.history["loss"][0]
    outputs = aware.predict(x_test, verbose=0)
    assert outputs.dtype == np.float32
    assert np.mean(outputs.argmax(1) == digits.y_test) > 0.6


def test_jit_compile_matches_the_graph_step(teacher, digits):
    x_train, _ = images(digits)
    flat_teacher = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), teacher])

    def run(jit):
        aware = kd.quantization_aware(conv_student(seed=6), freeze_after_steps=10)
        distiller = kd.Distiller(flat_teacher, aware, temperature=2.0, alpha=0.5)
        distiller.compile(keras.optimizers.SGD(0.05), SCE, jit_compile=jit)
        history = distiller.fit(
            x_train[:512], digits.y_train[:512], epochs=2, batch_size=64, shuffle=False, verbose=0
        )
        return history.history["loss"], [float(q.range_max) for q in quantizers(aware)]

    (xla_loss, xla_ranges), (graph_loss, graph_ranges) = run(True), run(False)
    # XLA's batch moments differ in the last bits; int8 rounding turns that into 0.4% in 2 epochs
    np.testing.assert_allclose(xla_loss, graph_loss, rtol=2e-2, atol=1e-5)
    np.testing.assert_allclose(xla_ranges, graph_ranges, rtol=2e-2, atol=1e-5)


def test_mirrored_strategy_on_one_cpu_matches_no_strategy(teacher, digits):
    x, y = digits.x_train[:512], digits.y_train[:512]

    def run(strategy):
        with strategy.scope():
            aware = dense_aware(seed=7)
            distiller = kd.Distiller(teacher, aware, temperature=2.0, alpha=0.5)
            distiller.compile(keras.optimizers.SGD(0.05), SCE)
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
        distiller.fit(data, epochs=2, verbose=0)
        ranges = [(q.range_max.numpy(), q.observed_steps.numpy()) for q in quantizers(aware)]
        return aware.get_weights(), ranges

    mirrored, ranges = run(tf.distribute.MirroredStrategy(["/cpu:0"]))
    plain, plain_ranges = run(tf.distribute.get_strategy())
    assert [steps for _, steps in ranges] == [16.0] * 3
    np.testing.assert_allclose(ranges, plain_ranges, rtol=1e-4, atol=1e-5)
    for a, b in zip(mirrored, plain):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


LOAD_SCRIPT = """
import json, os, sys
assert "TF_USE_LEGACY_KERAS" not in os.environ
import keras, numpy as np
import keras_distill
model = keras.saving.load_model(sys.argv[1])
state = [
    [float(v) for v in (layer.range_min, layer.range_max, layer.observed_steps)]
    for layer in model.layers if type(layer).__name__ == "ActivationQuantizer"
]
x = np.load(sys.argv[2])
print(json.dumps({"state": state, "outputs": model.predict(x, verbose=0).tolist()}))
"""


@pytest.mark.slow
@ON_THE_DISTILLED_STUDENT
def test_loaded_in_a_new_process_with_ranges_and_step_counter(
    distilled_conv_student, digits, tmp_path
):
    _, x_test = images(digits)
    _, _, aware = distilled_conv_student
    aware.save(tmp_path / "aware.keras")
    np.save(tmp_path / "x.npy", x_test[:50])
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    run = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, str(tmp_path / "aware.keras"), str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    loaded = json.loads(run.stdout.strip().splitlines()[-1])
    state = [
        [float(v) for v in (q.range_min, q.range_max, q.observed_steps)] for q in quantizers(aware)
    ]
    np.testing.assert_allclose(loaded["state"], state, atol=1e-6)
    assert {steps for _, _, steps in state} == {6 * 22.0}  # 6 epochs of 1,347 examples / 64
    np.testing.assert_allclose(loaded["outputs"], aware.predict(x_test[:50], verbose=0), atol=1e-5)


def depthwise_layer(kind, **settings):
    """A `kind` layer ("DepthwiseConv1D", ...) of kernel 3, with 8 filters if separable."""
    options = {} if kind.startswith("Depthwise") else {"filters": 8}
    return getattr(keras.layers, kind)(kernel_size=3, padding="same", **options, **settings)


def separable_student(kind, seed=8):
    keras.utils.set_random_seed(seed)
    two_d = kind.endswith("2D")
    return keras.Sequential(
        [
            keras.Input((8, 8, 1) if two_d else (64, 1)),
            keras.layers.Conv2D(4, 3, padding="same") if two_d else keras.layers.Conv1D(4, 3),
            depthwise_layer(kind, depth_multiplier=2),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D()
            if two_d
            else keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(10),
        ]
    )


@pytest.mark.parametrize(
    "kind", ["SeparableConv2D", "SeparableConv1D", "DepthwiseConv2D", "DepthwiseConv1D"]
)
def test_separable_and_depthwise_students_export_fully_int8_per_channel(kind, digits, tmp_path):
    student = separable_student(kind)
    shape = (-1, *student.inputs[0].shape[1:])
    x_train, x_test = digits.x_train.reshape(shape), digits.x_test.reshape(shape)
    aware = kd.quantization_aware(student)
    aware.compile(keras.optimizers.Adam(1e-2), SCE)
    aware.fit(x_train, digits.y_train, epochs=4, batch_size=64, verbose=0)
    result = kd.micro.export(
        aware, None, tmp_path, name="student", validation_data=(x_test, digits.y_test)
    )
    assert result.kind == "int8"
    assert result.validation.agreement >= 0.97  # TFLite Micro against the aware Keras model
    assert "DEPTHWISE_CONV_2D" in result.ops
    interpreter = tf.lite.Interpreter(model_path=str(result.tflite_path))
    scales = {len(d["quantization_parameters"]["scales"]) for d in interpreter.get_tensor_details()}
    assert 2 * 4 in scales  # the depthwise kernel: one scale per output channel
    if kind.startswith("Separable"):
        assert 8 in scales  # the 1x1 convolution's kernel, per channel too


@pytest.mark.parametrize("kind", ["SeparableConv1D", "DepthwiseConv1D"])
def test_strided_1d_depthwise_students_train_and_export(kind, digits, tmp_path):
    keras.utils.set_random_seed(3)
    strided = depthwise_layer(kind, strides=2)
    student = keras.Sequential(
        [keras.Input((64, 1)), keras.layers.Conv1D(4, 3), strided, keras.layers.ReLU()]
        + [keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(10)]
    )
    x_train, x_test = digits.x_train[..., None], digits.x_test[..., None]
    aware = kd.quantization_aware(student)
    # computed as a 2D convolution of height 1, whose CPU kernel takes equal strides only; a
    # training-mode pass sets the ranges, and the fake-quantized logits (at most about 0.2)
    # then stay close to the float ones
    assert tuple(aware(x_test[:64], training=True).shape) == (64, 10)
    np.testing.assert_allclose(aware(x_test[:64]), student(x_test[:64]), rtol=0, atol=0.01)
    aware.compile(keras.optimizers.Adam(1e-2), SCE)
    aware.fit(x_train, digits.y_train, epochs=2, batch_size=64, verbose=0)
    result = kd.micro.export(
        aware, None, tmp_path, name="student", validation_data=(x_test, digits.y_test)
    )
    assert result.kind == "int8"
    assert result.validation.agreement >= 0.97
    assert "DEPTHWISE_CONV_2D" in result.ops


def test_the_range_settings_reach_every_quantizer_and_survive_saving(tmp_path):
    aware = kd.quantization_aware(
        separable_student("SeparableConv1D"), momentum=0.5, freeze_after_steps=3
    )
    aware.save(tmp_path / "aware.keras")
    for model in (aware, keras.saving.load_model(tmp_path / "aware.keras")):
        intermediates = [
            layer.intermediate for layer in model.layers if hasattr(layer, "intermediate")
        ]
        found = quantizers(model) + [q for q in intermediates if q is not None]
        assert (
            len(found) == 6
        )  # input, first conv, between the separable steps, BN+ReLU, pool, logits
        assert {(q.momentum, q.freeze_after_steps) for q in found} == {(0.5, 3)}


def test_a_separable_layer_needs_its_intermediate_quantizer():
    layer = keras.layers.SeparableConv1D(4, 3)
    layer.build((None, 16, 2))
    with pytest.raises(ValueError, match="intermediate=None for .*SeparableConv1D"):
        QuantizedWeights(layer)
    dense = keras.layers.Dense(3)
    dense.build((None, 4))
    with pytest.raises(ValueError, match="separable layer and None otherwise"):
        QuantizedWeights(dense, intermediate=ActivationQuantizer())
