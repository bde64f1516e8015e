"""The export says what it made: never a float model called int8; arguments refused by name."""

import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_distill import micro
from keras_distill._src.micro import convert, export_validation, isolated_conversion
from keras_distill._src.micro.result import ValidationResult

FEATURES = 8


@pytest.fixture(scope="module")
def dense_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(16, activation="relu", name="hidden"),
            keras.layers.Dense(4, name="logits"),
        ]
    )


@pytest.fixture(scope="module")
def inputs():
    return np.random.default_rng(0).random((120, FEATURES), dtype="float32")


def float_tflite(model) -> bytes:
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def assert_nothing_written(folder: pathlib.Path):
    assert not folder.exists() or list(folder.iterdir()) == []


def test_a_float_tflite_is_refused_with_what_to_pass_instead(dense_model, inputs, tmp_path):
    path = tmp_path / "float.tflite"
    path.write_bytes(float_tflite(dense_model))
    assert micro.inspect_model(path.read_bytes()).kind == "float32"
    out = tmp_path / "out"
    with pytest.raises(micro.MicroExportError) as error:
        micro.export(path, inputs, out, validation_data=(inputs, np.zeros(len(inputs))))
    message = str(error.value)
    assert f"{str(path)!r} holds a float32 TFLite model" in message
    assert "cannot be re-quantized" in message
    assert "its .keras file or its SavedModel folder" in message
    with pytest.raises(micro.MicroExportError, match="The .tflite bytes given hold a float32"):
        micro.export(path.read_bytes(), inputs, out)
    assert_nothing_written(out)


def test_a_partly_float_tflite_is_refused_as_mixed(inputs, tmp_path):
    wide = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(256)])  # > 1,024 weights
    converter = tf.lite.TFLiteConverter.from_keras_model(wide)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]  # int8 weights, float activations
    dynamic_range = converter.convert()
    assert micro.inspect_model(dynamic_range).kind == "mixed int8 and float32"
    with pytest.raises(micro.MicroExportError, match="a mixed int8 and float32 TFLite model"):
        micro.export(dynamic_range, inputs, tmp_path / "out")
    assert_nothing_written(tmp_path / "out")


def test_the_reported_kind_comes_from_the_tensor_types(dense_model, inputs, tmp_path):
    made = micro.export(dense_model, inputs, tmp_path / "a", float_io=True)
    assert made.kind == "int8" == micro.inspect_model(made.tflite_path.read_bytes()).kind
    assert made.inputs[0].dtype == "float32"
    again = micro.export(made.tflite_path, None, tmp_path / "b", validation_data=inputs[:20])
    assert again.kind == "int8"
    summary = again.summary()
    assert "| int8 model (flash) |" in summary and "| input 0 | float32 [1, 8]" in summary
    validation = ValidationResult(20, 0.9, 0.8, 0.7)
    paths = (tmp_path / p for p in "abc")
    labelled = micro.MicroExport(
        "m",
        *paths,
        1000,
        None,
        800,
        880,
        0.1,
        (),
        (),
        (),
        validation,
        None,
        None,
        None,
        kind="float32",
    )
    rows = labelled.summary()
    assert "| float32 model (flash) | 1,000 B |" in rows
    assert "| top-1 agreement, TFLM float32 vs Keras float | 90.00% |" in rows
    assert "| accuracy, TFLM float32 | 70.00% |" in rows
    assert "int8" not in rows


def test_a_saved_model_folder_is_converted(dense_model, inputs, tmp_path):
    dense_model.export(tmp_path / "saved", verbose=False)
    result = micro.export(
        tmp_path / "saved", inputs, tmp_path / "out", validation_data=(inputs, np.zeros(120))
    )
    assert result.kind == "int8" and result.ops == ("FULLY_CONNECTED",)
    assert result.inputs[0].dtype == "int8" and result.outputs[0].dtype == "int8"
    assert result.float_bytes == 4 * dense_model.count_params()
    assert result.validation.agreement >= 0.9  # against the SavedModel run in float
    with pytest.raises(micro.MicroExportError, match="folder without saved_model.pb"):
        micro.export(tmp_path, inputs, tmp_path / "other")


def test_layer_normalization_is_named_with_a_hint(inputs, tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(6, name="hidden"),
            keras.layers.LayerNormalization(name="norm"),
            keras.layers.Dense(3, name="logits"),
        ]
    )
    with pytest.raises(micro.MicroExportError) as error:
        micro.export(model, inputs, tmp_path / "out")
    message = str(error.value)
    assert "kept layer norm (LayerNormalization) in float" in message
    assert "use BatchNormalization" in message
    assert "representative data" not in message
    assert_nothing_written(tmp_path / "out")


@pytest.mark.parametrize(
    "argument, value",
    [
        ("ram_bytes", -5),
        ("ram_bytes", 0),
        ("flash_bytes", 2.5),
        ("flash_bytes", True),
        ("ram_bytes", "256k"),
        ("num_samples", 0),
    ],
)
def test_budgets_must_be_positive_integers(dense_model, inputs, tmp_path, argument, value):
    with pytest.raises(micro.MicroExportError) as error:
        micro.export(dense_model, inputs, tmp_path / "out", **{argument: value})
    assert str(error.value) == (
        f"`{argument}` must be a positive whole number (or None); received {value!r}."
    )
    assert_nothing_written(tmp_path / "out")


def test_numpy_integers_are_budgets(dense_model, inputs, tmp_path):
    result = micro.export(dense_model, inputs, tmp_path, ram_bytes=np.int64(1 << 20))
    assert result.ram_bytes == 1 << 20


@pytest.mark.parametrize("argument, value", [("arena_margin", -0.1), ("agreement_threshold", 1.5)])
def test_fractions_must_be_in_range(dense_model, inputs, tmp_path, argument, value):
    with pytest.raises(micro.MicroExportError, match=rf"`{argument}` must be in .*{value}"):
        micro.export(dense_model, inputs, tmp_path / "out", **{argument: value})


def test_representative_data_as_nested_lists(dense_model, inputs, tmp_path):
    from_array = micro.export(dense_model, inputs, tmp_path / "a")
    from_lists = micro.export(
        dense_model, inputs.tolist(), tmp_path / "b", validation_data=inputs[:10].tolist()
    )
    assert from_lists.inputs == from_array.inputs  # calibrated on the same values
    assert from_lists.outputs == from_array.outputs
    assert from_lists.validation.examples == 10
    with pytest.raises(micro.MicroExportError, match=r"\(list\) cannot be read as examples"):
        micro.export(dense_model, [["a"] * FEATURES] * 3, tmp_path / "c")


def test_an_unreachable_bucket_is_named_and_nothing_is_written(
    dense_model, inputs, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # a URL taken for a local path would write a gs: folder here
    url = "gs://keras-distill-no-such-bucket/export"
    with pytest.raises(micro.MicroExportError) as error:
        micro.export(dense_model, inputs, url)
    message = str(error.value)
    assert f"Cannot reach the output directory {url!r}" in message
    assert "credentials" in message and "Nothing was written" in message
    assert list(tmp_path.iterdir()) == []


def test_a_url_that_works_is_written_there(dense_model, inputs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = micro.export(dense_model, inputs, "ram://micro-export-test/out", name="tiny")
    assert result.tflite_path == "ram://micro-export-test/out/tiny.tflite"
    assert tf.io.gfile.GFile(result.tflite_path, "rb").read()[4:8] == b"TFL3"
    assert list(tmp_path.iterdir()) == []


def fake_quant(x, low, high, **kwargs):
    return keras.quantizers.fake_quant_with_min_max_vars(x, low, high, num_bits=8, **kwargs)


class FakeQuantDense(keras.layers.Layer):
    """Dense + ReLU with fake-quantized weights and output, as a quantization-aware student."""

    def __init__(self, units, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.units, self.activation = units, keras.activations.get(activation)

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units))
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros")

    def call(self, x):
        kernel = fake_quant(self.kernel, -1.0, 1.0, narrow_range=True)
        return fake_quant(self.activation(x @ kernel + self.bias), -4.0, 4.0)


def test_a_fake_quantized_student_exports_fully_int8_without_data(inputs, tmp_path):
    keras.utils.set_random_seed(0)
    x = model_input = keras.Input((FEATURES,))
    x = keras.layers.Lambda(lambda t: fake_quant(t, 0.0, 1.0), name="input_range")(x)
    x = FakeQuantDense(16, "relu", name="hidden")(x)
    model = keras.Model(model_input, FakeQuantDense(4, name="logits")(x))
    result = micro.export(model, None, tmp_path, validation_data=inputs)
    assert result.kind == "int8" and result.ops == ("FULLY_CONNECTED",)  # no (DE)QUANTIZE
    assert result.inputs[0].dtype == result.outputs[0].dtype == "int8"
    assert result.inputs[0].scale == pytest.approx(1 / 255, abs=1e-7)  # the input's range (float32)
    assert result.outputs[0].scale == pytest.approx(
        8 / 255, abs=1e-7
    )  # the logits' range (float32)
    assert result.validation.agreement >= 0.95


def test_verify_on_without_inputs_to_run_is_refused_by_name():
    with pytest.raises(micro.MicroExportError, match=r"`verify_on` needs inputs to run"):
        export_validation.check_on_target("m", None, b"", (0, 0), None, "host", None, 0.1)


def test_a_recurrent_model_left_partly_float_by_the_converter_is_converted_again(
    monkeypatch, tmp_path
):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((5, 3)), keras.layers.LSTM(4, unroll=True), keras.layers.Dense(2)]
    )
    x = np.random.default_rng(0).random((16, 5, 3)).astype("float32")
    # The converter itself leaves this LSTM partly float at random: a dense model's bytes
    # stand for the fully integer conversion.
    dense = keras.Sequential([keras.Input((5, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])
    converted = convert.to_int8_tflite(dense, x)
    partly_float = float_tflite(model)
    results = iter([partly_float, partly_float, converted])
    calls = []

    def converter(*args, **kwargs):
        calls.append(args)
        return next(results)

    monkeypatch.setattr(convert, "to_int8_tflite", converter)
    assert isolated_conversion.to_int8_tflite_for_tflm(model, x) == converted
    assert len(calls) == 3  # until one is fully integer
    calls.clear()
    results = iter([partly_float] * isolated_conversion.RECURRENT_ATTEMPTS)
    with pytest.raises(
        micro.MicroExportError,
        match=r"float tensors in this recurrent model in each of 4 conversions.*not fully",
    ):
        micro.export(model, x, tmp_path)  # float after the last attempt: refused
    assert len(calls) == isolated_conversion.RECURRENT_ATTEMPTS == 4
    assert_nothing_written(tmp_path)


@pytest.mark.slow  # starts a Python process
def test_a_conversion_in_a_subprocess_gives_the_bytes_of_one_in_this_process():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])
    x = np.random.default_rng(0).random((8, 4)).astype("float32")
    isolated = isolated_conversion.to_int8_tflite_isolated(model, x, False, [])
    assert isolated == convert.to_int8_tflite(model, x)


def test_a_model_with_a_recurrent_loop_is_converted_once_in_a_subprocess(monkeypatch):
    model = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4), keras.layers.Dense(2)])
    x = np.random.default_rng(0).random((16, 5, 3)).astype("float32")
    calls = []

    def isolated(model, samples, float_io, layers, batch_size=1):
        calls.append(layers)
        return b"converted"

    monkeypatch.setattr(isolated_conversion, "to_int8_tflite_isolated", isolated)
    assert isolated_conversion.to_int8_tflite_for_tflm(model, x) == b"converted"
    assert calls == [[model.layers[0].name]]  # once, naming the loop, never retried
