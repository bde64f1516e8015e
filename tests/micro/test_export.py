import json
import pathlib
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import SCE

from keras_distill import micro
from keras_distill._src import cli
from keras_distill._src.micro import convert, model_info, verify

STUBS = pathlib.Path(__file__).parents[1] / "stubs"
SHARED = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mlperf-tiny"
GXX = shutil.which("g++")


def images(x):
    return x.reshape(-1, 8, 8, 1)


@pytest.fixture(scope="module")
def cnn(digits):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(10, name="logits"),
        ]
    )
    model.compile(keras.optimizers.Adam(3e-3), SCE, metrics=["accuracy"])
    model.fit(images(digits.x_train), digits.y_train, epochs=30, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def mlp_export(teacher, digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("mlp")
    return micro.export(
        teacher,
        digits.x_train,
        out,
        name="digits_mlp",
        board="arduino_nano_33_ble_sense",
        validation_data=(digits.x_test, digits.y_test),
    )


@pytest.fixture(scope="module")
def cnn_export(cnn, digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("cnn")
    return micro.export(
        cnn,
        images(digits.x_train),
        out,
        name="digits_cnn",
        validation_data=(images(digits.x_test), digits.y_test),
    )


def assert_arena_is_minimal(result):
    path = str(result.tflite_path)
    info = model_info.inspect_model(result.tflite_path.read_bytes())
    assert verify._probe(path, result.arena_bytes, len(info.inputs)).returncode == 0
    smaller = result.arena_bytes - verify.ARENA_RESOLUTION
    assert verify._probe(path, smaller, len(info.inputs)).returncode != 0


def test_the_arena_search_goes_on_without_its_forking_helper(mlp_export):
    path = str(mlp_export.tflite_path)
    prober = verify._ArenaProber(path, num_inputs=1)
    try:
        assert prober.helper is not None  # os.fork exists here
        assert prober.works(mlp_export.arena_bytes)
        assert not prober.works(mlp_export.arena_bytes - verify.ARENA_RESOLUTION)
        prober.helper.kill()  # as if the helper itself had crashed
        prober.helper.wait()
        assert prober.works(mlp_export.arena_bytes)  # one subprocess per probe from here on
        assert prober.helper is None
        assert not prober.works(mlp_export.arena_bytes - verify.ARENA_RESOLUTION)
    finally:
        prober.close()


@pytest.mark.parametrize("which", ["mlp_export", "cnn_export"])
def test_export_runs_in_tflm_agrees_with_float_and_measures_a_minimal_arena(which, request):
    result = request.getfixturevalue(which)
    assert result.validation["examples"] == 450
    assert result.validation["agreement"] >= 0.97
    assert result.validation["int8_accuracy"] >= 0.9
    assert abs(result.validation["int8_accuracy"] - result.validation["float_accuracy"]) < 0.02
    assert result.inputs[0].dtype == "int8" and result.outputs[0].dtype == "int8"
    assert result.recommended_arena_bytes >= 1.1 * result.arena_bytes
    assert_arena_is_minimal(result)
    assert result.tflite_path.read_bytes()[4:8] == b"TFL3"
    assert sorted(p.name for p in result.tflite_path.parent.iterdir()) == sorted(
        [f"{result.name}.tflite", f"{result.name}_model_data.cc", f"{result.name}_model_data.h"]
    )


def test_cnn_has_batch_one_ops_only(cnn_export):
    assert cnn_export.ops == ("CONV_2D", "MAX_POOL_2D", "RESHAPE", "FULLY_CONNECTED")


def test_the_flatbuffer_does_not_change_with_the_models_made_before(cnn, digits):
    samples = images(digits.x_train[:20])
    before = convert.to_int8_tflite(cnn, samples)
    for _ in range(150):  # Keras' automatic names count up: functional_3 -> functional_153
        keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    for _ in range(2_000):  # and keras_tensor_40 -> keras_tensor_2340
        keras.Input((2,))
    assert convert.to_int8_tflite(cnn, samples) == before  # the same names, so the same bytes


def test_summary_and_repr_report_the_numbers(mlp_export):
    text = mlp_export.summary()
    arena = f"{mlp_export.arena_bytes:,} B"
    assert f"| tensor arena, measured minimum (TFLM Python, x86-64) | {arena} |" in text
    assert "top-1 agreement, TFLM int8 vs Keras float" in text
    assert "budget (arduino_nano_33_ble_sense) | flash" in text
    assert repr(mlp_export).startswith("MicroExport('digits_mlp': ")


def c_array_bytes(source: str) -> bytes:
    body = re.search(r"model_data\[\] = \{(.*?)\};", source, re.S)[1]
    return bytes(int(v, 16) for v in re.findall(r"0x([0-9a-f]{2})", body))


CHECK_MAIN = """
#include <cstdint>
#include "{name}_model_data.h"
int main() {{
  {name}_op_resolver resolver;
  if ({name}_register_ops(resolver) != kTfLiteOk) return 1;
  if (resolver.GetRegistrationLength() != {name}_op_count) return 2;
  if (reinterpret_cast<uintptr_t>({name}_model_data) % 16 != 0) return 3;
  if ({name}_model_data_len != {length}u) return 4;
  if ({name}_arena_size < {name}_arena_minimum_bytes) return 5;
  return {name}_input0_dims[0] == 1 ? 0 : 6;
}}
"""


def compile_and_run(result, tmp_path):
    """g++ -std=c++17 compiles the sources against the resolver stub; a check program runs."""
    if GXX is None:
        pytest.skip("g++ is not installed")
    main = tmp_path / "check_main.cc"
    main.write_text(CHECK_MAIN.format(name=result.name, length=result.model_bytes))
    folder = result.source_path.parent
    for source in (result.source_path, main):
        subprocess.run(
            [
                GXX,
                "-std=c++17",
                "-Wall",
                "-Werror",
                "-c",
                str(source),
                "-I",
                str(STUBS),
                "-I",
                str(folder),
                "-o",
                str(tmp_path / (source.stem + ".o")),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
    binary = tmp_path / "check"
    subprocess.run(
        [
            GXX,
            str(tmp_path / "check_main.o"),
            str(tmp_path / (result.source_path.stem + ".o")),
            "-o",
            str(binary),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    assert subprocess.run([str(binary)]).returncode == 0


@pytest.mark.parametrize("which", ["mlp_export", "cnn_export"])
def test_generated_sources_hold_the_exact_model(which, request, tmp_path):
    result = request.getfixturevalue(which)
    source = result.source_path.read_text()
    header = result.header_path.read_text()
    assert f"alignas(16) const unsigned char {result.name}_model_data[]" in source
    assert c_array_bytes(source) == result.tflite_path.read_bytes()
    guard = f"KERAS_DISTILL_{result.name.upper()}_MODEL_DATA_H_"
    assert f"#ifndef {guard}" in header and f"#endif  // {guard}" in header
    assert f"MicroMutableOpResolver<{len(result.ops)}>" in header
    assert f"{result.name}_arena_minimum_bytes = {result.arena_bytes};" in header
    assert f"{result.name}_input0_zero_point = {result.inputs[0].zero_point};" in header


@pytest.mark.slow
@pytest.mark.parametrize("which", ["mlp_export", "cnn_export"])
def test_generated_sources_compile_and_run_against_the_resolver_stub(which, request, tmp_path):
    compile_and_run(request.getfixturevalue(which), tmp_path)


def test_float_io_keeps_float_input_and_output(teacher, digits, tmp_path):
    result = micro.export(
        teacher,
        digits.x_train[:100],
        tmp_path,
        name="float_io",
        float_io=True,
        validation_data=digits.x_test[:50],
    )
    assert result.inputs[0].dtype == "float32" and result.outputs[0].dtype == "float32"
    assert result.validation["agreement"] >= 0.95
    assert result.validation["float_accuracy"] is None  # no labels given


def test_tflite_bytes_and_paths_skip_conversion(mlp_export, tmp_path):
    data = mlp_export.tflite_path.read_bytes()
    from_path = micro.export(mlp_export.tflite_path, None, tmp_path / "a", name="again")
    from_bytes = micro.export(data, None, tmp_path / "b", name="again")
    assert from_path.arena_bytes == from_bytes.arena_bytes == mlp_export.arena_bytes
    assert (tmp_path / "a" / "again.tflite").read_bytes() == data
    assert from_path.float_bytes is None


def gelu_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(16, activation="gelu", name="fancy"),
            keras.layers.Dense(10, name="head"),
        ]
    )


def assert_nothing_written(folder):
    assert not folder.exists() or list(folder.iterdir()) == []


def test_unsupported_op_is_named_with_its_layer_and_nothing_is_written(digits, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(micro.MicroExportError, match=r"no kernel for: GELU \(from layer fancy;"):
        micro.export(gelu_model(), digits.x_train, out)
    assert_nothing_written(out)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"representative_data": np.zeros((10, 32))}, r"shape \(32,\).*expects.*\(64,\)"),
        ({"representative_data": np.zeros((0, 64))}, r"representative data is empty"),
        ({"representative_data": None}, r"`representative_data` is required"),
        ({"name": "2fast"}, r"valid C identifier.*'2fast'"),
        ({"name": "my-model"}, r"received 'my-model'"),
        ({"name": "int"}, r"received 'int'"),
        ({"board": "arduino_uno"}, r"Unknown board 'arduino_uno'; presets: arduino_nano"),
        ({"ram_bytes": 1000}, r"arena needs [\d,]+ B of RAM but the budget is 1,000 B .*over"),
        ({"flash_bytes": 4096}, r"needs [\d,]+ B of flash but the budget is 4,096 B \([\d,]+ B"),
        ({"validation_data": np.zeros((3, 8))}, r"validation data has examples of shape \(8,\)"),
    ],
)
def test_bad_input_raises_a_specific_error_and_writes_nothing(
    teacher, digits, tmp_path, kwargs, message
):
    arguments = {"representative_data": digits.x_train[:100], **kwargs}
    out = tmp_path / "out"
    with pytest.raises(micro.MicroExportError, match=message):
        micro.export(teacher, output_dir=out, **arguments)
    assert_nothing_written(out)


def test_output_dir_that_is_a_file_and_bad_model_files(teacher, digits, tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("not a folder")
    with pytest.raises(micro.MicroExportError, match="is a file"):
        micro.export(teacher, digits.x_train, a_file)
    with pytest.raises(micro.MicroExportError, match="No model file at"):
        micro.export(tmp_path / "missing.keras", digits.x_train, tmp_path / "out")
    with pytest.raises(micro.MicroExportError, match="neither a .keras nor a .tflite"):
        micro.export(a_file, digits.x_train, tmp_path / "out")
    with pytest.raises(micro.MicroExportError, match="not a TFLite model"):
        micro.export(b"definitely not a flatbuffer", None, tmp_path / "out")


def test_a_failed_export_leaves_existing_files_untouched(teacher, digits, tmp_path):
    (tmp_path / "model.tflite").write_bytes(b"previous")
    with pytest.raises(micro.MicroExportError):
        micro.export(teacher, digits.x_train, tmp_path, ram_bytes=100, overwrite=True)
    assert (tmp_path / "model.tflite").read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]


MLPERF = {  # file: smallest arena measured for the shared README (64-byte resolution)
    "kws_ref_model.tflite": 24_308,
    "pretrainedResnet_quant.tflite": 56_037,
    "vww_96_int8.tflite": 103_693,
    "ad01_int8.tflite": 4_670,
}


@pytest.mark.slow
@pytest.mark.skipif(
    not SHARED.is_dir(),
    reason="../shared/data/mlperf-tiny is absent "
    "(it is provided beside the checkout on the project's machines only)",
)
@pytest.mark.parametrize("filename", sorted(MLPERF))
def test_mlperf_tiny_reference_models_export(filename, tmp_path):
    name = filename.split(".")[0].split("_")[0].lower()
    result = micro.export(SHARED / filename, None, tmp_path / "out", name=name, board="esp32")
    assert MLPERF[filename] - 64 <= result.arena_bytes <= MLPERF[filename] + 16
    assert result.model_bytes == (SHARED / filename).stat().st_size
    compile_and_run(result, tmp_path)


@pytest.mark.slow
def test_cli_exports_a_keras_file(cnn, digits, tmp_path):
    cnn.save(tmp_path / "cnn.keras")
    np.save(tmp_path / "x.npy", images(digits.x_train[:200]))
    np.save(tmp_path / "vx.npy", images(digits.x_test))
    np.save(tmp_path / "vy.npy", digits.y_test)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "keras_distill",
            "export-micro",
            str(tmp_path / "cnn.keras"),
            "--data",
            str(tmp_path / "x.npy"),
            "--out",
            str(tmp_path / "out"),
            "--name",
            "cnn",
            "--board",
            "raspberry_pi_pico",
            "--validation-data",
            str(tmp_path / "vx.npy"),
            "--validation-labels",
            str(tmp_path / "vy.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| top-1 agreement, TFLM int8 vs Keras float |" in result.stdout
    assert "budget (raspberry_pi_pico)" in result.stdout
    assert (tmp_path / "out" / "cnn_model_data.h").exists()


def test_cli_reports_bad_files_clearly(tmp_path, capsys):
    assert cli.main(["export-micro", str(tmp_path / "nope.keras"), "--out", str(tmp_path)]) == 1
    assert "No model file at" in capsys.readouterr().err
    (tmp_path / "model.txt").write_text("x")
    assert cli.main(["export-micro", str(tmp_path / "model.txt"), "--out", str(tmp_path)]) == 1
    assert "neither a .keras nor a .tflite" in capsys.readouterr().err
    (tmp_path / "bad.npy").write_text("not numpy")
    args = ["export-micro", str(tmp_path / "model.txt"), "--data", str(tmp_path / "bad.npy")]
    assert cli.main([*args, "--out", str(tmp_path)]) == 1
    assert "Cannot read --data" in capsys.readouterr().err


def test_boards_have_documented_budgets():
    assert set(micro.BOARDS) >= {
        "arduino_nano_33_ble_sense",
        "esp32",
        "stm32f746g_disco",
        "raspberry_pi_pico",
    }
    for board in micro.BOARDS.values():
        assert board.flash_bytes > board.ram_bytes > 100_000
        assert "datasheet" in board.source.lower() or "manual" in board.source.lower()
    assert json.dumps(micro.get_board("Raspberry-Pi-Pico").__dict__)


def test_representative_and_validation_data_from_tf_data(teacher, digits, tmp_path):
    import tensorflow as tf

    train = tf.data.Dataset.from_tensor_slices((digits.x_train, digits.y_train)).batch(32)
    test = tf.data.Dataset.from_tensor_slices((digits.x_test, digits.y_test)).batch(64)
    result = micro.export(teacher, train, tmp_path, name="from_dataset", validation_data=test)
    assert result.validation["examples"] == len(digits.x_test)
    assert result.validation["agreement"] >= 0.97
    samples = convert.representative_samples(train.unbatch(), (64,), num_samples=50)
    assert samples.shape == (50, 64) and samples.dtype == np.float32


def test_cli_rejects_data_of_the_wrong_shape(teacher, tmp_path, capsys):
    teacher.save(tmp_path / "teacher.keras")
    np.save(tmp_path / "x.npy", np.zeros((20, 8, 8), "float32"))
    code = cli.main(
        [
            "export-micro",
            str(tmp_path / "teacher.keras"),
            "--data",
            str(tmp_path / "x.npy"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 1
    assert "examples of shape (8, 8), but the model expects inputs of shape (64,)" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "out").exists()


def test_non_finite_data_and_float_fallbacks_are_refused(teacher, digits, tmp_path, monkeypatch):
    import tensorflow as tf

    nan = np.full((20, 64), np.nan, "float32")
    with pytest.raises(micro.MicroExportError, match=r"NaN or infinite values \(20 of 20"):
        micro.export(teacher, nan, tmp_path / "a")
    # a converter that falls back to float: the export must not call it an int8 model
    converter = tf.lite.TFLiteConverter.from_keras_model(teacher)
    float_model = converter.convert()
    monkeypatch.setattr(convert, "to_int8_tflite", lambda *args, **kwargs: float_model)
    with pytest.raises(
        micro.MicroExportError,
        match=r"not fully integer: float tensors .*input 0 "
        r"\(float32\)",
    ):
        micro.export(teacher, digits.x_train, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_reads_npz_files_and_checks_label_counts(teacher, digits, tmp_path, capsys):
    teacher.save(tmp_path / "teacher.keras")
    np.savez(tmp_path / "data.npz", x=digits.x_train[:100], y=digits.y_train[:100])
    base = ["export-micro", str(tmp_path / "teacher.keras"), "--out", str(tmp_path / "out")]
    assert cli.main([*base, "--data", str(tmp_path / "data.npz")]) == 1
    assert "holds ['x', 'y']; name one as FILE.npz:NAME" in capsys.readouterr().err
    wrong = [
        *base,
        "--data",
        f"{tmp_path / 'data.npz'}:x",
        "--validation-data",
        f"{tmp_path / 'data.npz'}:x",
        "--validation-labels",
        f"{tmp_path / 'data.npz'}:y",
    ]
    np.savez(tmp_path / "data.npz", x=digits.x_train[:100], y=digits.y_train[:90])
    assert cli.main(wrong) == 1
    assert "100 examples but 90 labels" in capsys.readouterr().err
    np.savez(tmp_path / "data.npz", x=digits.x_train[:100], y=digits.y_train[:100])
    assert cli.main(wrong) == 0
    assert "validation examples | 100" in capsys.readouterr().out
