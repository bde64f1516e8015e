"""The exported C++ built against the real TFLite Micro, run on the host and an emulated Cortex-M4.

Needs `$KERAS_DISTILL_TFLM_DIR` pointing at a tflite-micro checkout, `make` and
`g++`; the Cortex-M4 tests also need Debian's Arm toolchain and
`qemu-system-arm` (`make test` installs them when it runs as root). Each
TFLM library is built once into the keras-distill cache and reused.
"""

import concurrent.futures
import pathlib
import re
import shutil
import struct
import subprocess

import keras
import numpy as np
import pytest
from conftest import SCE, TFLM, mlp, needs_arm, needs_tflm

from keras_distill import micro
from keras_distill._src.micro import firmware, model_info, target_run, verify

ROOT = pathlib.Path(__file__).resolve().parents[2]
MLPERF = ROOT.parent / "shared" / "data" / "mlperf-tiny"


def cnn(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )


@pytest.fixture(scope="module")
def exports(digits, tmp_path_factory):
    """The digits MLP and CNN students, trained briefly and exported."""
    folder = tmp_path_factory.mktemp("exports")
    images = digits.x_train.reshape(-1, 8, 8, 1)
    result = {}
    for name, model, x in (("mlp", mlp([16], seed=1), digits.x_train), ("cnn", cnn(), images)):
        model.compile("adam", SCE)
        model.fit(x, digits.y_train, epochs=3, verbose=0)
        result[name] = micro.export(model, x[:200], folder / name, name=f"digits_{name}")
    return result


def inputs_for(digits, name):
    x = digits.x_test[:40]
    return x.reshape(-1, 8, 8, 1) if name == "cnn" else x


def python_outputs(export, x):
    model_bytes = export.tflite_path.read_bytes()
    info = model_info.inspect_model(model_bytes)
    return verify.run_tflm(model_bytes, info, x, export.recommended_arena_bytes, dequantize=False)


@needs_tflm
@needs_arm
@pytest.mark.slow
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_students_give_bit_identical_outputs_on_host_cortex_m4_and_python(exports, digits, name):
    export, x = exports[name], inputs_for(digits, name)
    expected = python_outputs(export, x)
    runs = {
        target: micro.run_on_target(micro.build(export, TFLM, target), x, measure_arena=True)
        for target in ("host", "cortex-m4")
    }
    for run in runs.values():
        assert run.raw_outputs.dtype == np.int8 and run.raw_outputs.shape == (40, 10)
        np.testing.assert_array_equal(run.raw_outputs, expected)
        np.testing.assert_allclose(run.outputs, export.outputs[0].dequantize(expected))
    host, m4 = runs["host"], runs["cortex-m4"]
    assert host.instructions is None
    assert m4.instructions.shape == (40,) and np.all(m4.instructions > 1000)
    assert np.ptp(m4.instructions) <= 0.05 * np.median(m4.instructions)  # same work each time
    # TFLM's persistent structures hold pointers: 4 bytes on the Cortex-M4, 8 on x86-64.
    assert 0 < m4.arena_used_bytes < host.arena_used_bytes
    assert m4.arena_used_bytes <= m4.arena_minimum_bytes < host.arena_minimum_bytes
    assert m4.arena_minimum_bytes % 16 == 0


@needs_tflm
@needs_arm
@pytest.mark.slow
def test_export_verify_on_cortex_m4_recommends_the_targets_arena(digits, tmp_path):
    model = mlp([16], seed=2)
    model.compile("adam", SCE)
    model.fit(digits.x_train, digits.y_train, epochs=2, verbose=0)
    result = micro.export(
        model,
        digits.x_train[:200],
        tmp_path / "out",
        name="checked",
        validation_data=(digits.x_test, digits.y_test),
        verify_on="cortex-m4",
        tflm_dir=TFLM,
    )
    target = result.on_target
    assert (
        target["target"] == "cortex-m4"
        and target["examples"] == micro.export_validation.TARGET_EXAMPLES
    )
    assert target["recommended_arena_bytes"] == result.recommended_arena_bytes
    assert target["arena_used_bytes"] < target["arena_minimum_bytes"] < result.arena_bytes
    header = result.header_path.read_text()
    assert f"checked_arena_size = {result.recommended_arena_bytes};" in header
    summary = result.summary()
    assert "| tensor arena, measured minimum on cortex-m4 |" in summary
    assert "bit-identical to TFLM Python, 200 examples" in summary
    assert f"| instructions per inference (QEMU -icount) | {target['instructions']:,} |" in summary


@needs_tflm
@needs_arm
@pytest.mark.slow
def test_a_too_small_arena_fails_on_the_target_with_a_clear_error(exports, digits):
    tiny = micro.build(exports["mlp"], TFLM, "cortex-m4", arena_bytes=256)
    with pytest.raises(micro.FirmwareError, match=r"tensor arena of 256 bytes is too small"):
        micro.run_on_target(tiny, digits.x_test[:2])
    built = micro.build(exports["mlp"], TFLM, "cortex-m4")  # the same, limited at run time
    with pytest.raises(micro.FirmwareError, match=r"tensor arena of 512 bytes is too small"):
        micro.run_on_target(built, digits.x_test[:2], arena_bytes=512)


@needs_tflm
@needs_arm
@pytest.mark.slow
@pytest.mark.skipif(not MLPERF.is_dir(), reason="../shared/data/mlperf-tiny is absent")
def test_mlperf_tiny_keyword_spotting_runs_on_the_cortex_m4(tmp_path):
    export = micro.export(MLPERF / "kws_ref_model.tflite", None, tmp_path / "kws", name="kws")
    source = export.inputs[0]
    rng = np.random.default_rng(0)
    x = source.dequantize(rng.integers(-128, 128, (3, *source.shape[1:])))
    run = micro.run_on_target(micro.build(export, TFLM, "cortex-m4"), x)
    np.testing.assert_array_equal(run.raw_outputs, python_outputs(export, x))
    assert run.arena_used_bytes < export.arena_bytes
    assert np.all(run.instructions > 1_000_000)  # a 2.7M-MAC network, reference kernels


@pytest.mark.slow
@needs_arm
def test_the_timer_counts_40_instructions_per_tick_in_qemu(tmp_path):
    """The constant behind `TargetRun.instructions`, measured on a loop of known length."""
    (tmp_path / "loop.c").write_text(r"""
#include <stdint.h>
#include <stdio.h>
#define CTRL (*(volatile uint32_t*)0x40000000)
#define VALUE (*(volatile uint32_t*)0x40000004)
#define RELOAD (*(volatile uint32_t*)0x40000008)
int main(void) {
  uint32_t n = 1000000;  /* two instructions per iteration */
  CTRL = 0; RELOAD = 0xFFFFFFFF; VALUE = 0xFFFFFFFF; CTRL = 1;
  uint32_t start = VALUE;
  __asm__ volatile("1: subs %0, %0, #1\n bne 1b\n" : "+r"(n) :: "cc");
  printf("TICKS %lu\n", (unsigned long)(start - VALUE));
  return 0;
}
""")
    subprocess.run(
        [
            "arm-none-eabi-gcc",
            "-O2",
            "-mcpu=cortex-m4",
            "-mthumb",
            "--specs=rdimon.specs",
            "loop.c",
            "-o",
            "loop.elf",
        ],
        cwd=tmp_path,
        check=True,
    )
    fake = micro.Firmware("loop", "cortex-m4", tmp_path / "loop.elf", 0, (), (), tmp_path)
    command = target_run._command(fake, tmp_path)
    out = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60).stdout
    ticks = int(out.split("TICKS")[1])
    assert ticks * target_run.INSTRUCTIONS_PER_TICK == pytest.approx(2_000_000, rel=0.001)


def test_missing_tree_toolchain_and_unknown_target_are_named(tmp_path, monkeypatch):
    export_dir = tmp_path / "export"
    export_dir.mkdir()
    with pytest.raises(micro.FirmwareError, match="exactly one <name>_model_data.h"):
        micro.build(export_dir, TFLM)
    with pytest.raises(micro.FirmwareError, match="Unknown target 'esp8266'"):
        micro.build(export_dir, TFLM, "esp8266")
    monkeypatch.delenv(firmware.TFLM_DIR_VARIABLE, raising=False)
    with pytest.raises(micro.FirmwareError, match="Pass tflm_dir="):
        firmware.find_tflm(None)
    with pytest.raises(micro.FirmwareError, match="is not a TensorFlow Lite Micro tree"):
        firmware.find_tflm(tmp_path)
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    with pytest.raises(micro.FirmwareError, match="apt-get install gcc-arm-none-eabi"):
        firmware.check_toolchain(firmware.TARGETS["cortex-m4"])
    info = model_info.TensorInfo((1, 4), "int8", 0.1, 0)
    elf = tmp_path / "app.elf"
    elf.write_bytes(b"\x7fELF\x01" + bytes(40))
    fake = micro.Firmware("m", "cortex-m4", elf, 4096, (info,), (info,), tmp_path)
    with pytest.raises(micro.FirmwareError, match="apt-get install qemu-system-arm"):
        micro.run_on_target(fake, np.zeros((1, 4)))


@pytest.mark.slow  # runs programs that crash and hang
def test_a_crash_or_a_hang_on_the_target_is_reported(tmp_path):
    info = model_info.TensorInfo((1, 4), "int8", 0.1, 0)
    crash = tmp_path / "crash"
    crash.write_text("#!/bin/sh\necho 'KD_ARENA_USED 10'\nexit 139\n")
    crash.chmod(0o755)
    application = micro.Firmware("m", "host", crash, 4096, (info,), (info,), tmp_path)
    with pytest.raises(micro.FirmwareError, match=r"stopped on host before finishing \(exit 139\)"):
        micro.run_on_target(application, np.zeros((2, 4)))
    hang = tmp_path / "hang"
    hang.write_text("#!/bin/sh\nsleep 30\n")
    hang.chmod(0o755)
    application = micro.Firmware("m", "host", hang, 4096, (info,), (info,), tmp_path)
    with pytest.raises(micro.FirmwareError, match="did not finish within 0.5 s"):
        micro.run_on_target(application, np.zeros((1, 4)), timeout=0.5)


# A stand-in for TFLM's Makefile: its `microlite_test` rule logs when a build starts and ends.
LOGGING_MAKEFILE = """define microlite_test
$(1):
	echo start >> builds.log; sleep 0.3; echo end >> builds.log
	mkdir -p gen/host/bin && touch gen/host/bin/$(1)
endef
"""


def test_builds_sharing_a_cache_run_one_at_a_time(tmp_path):
    """Two builds into one cache (a search's processes) never run `make` at the same time."""
    tree = tmp_path / "tflm"
    (tree / firmware.RELATIVE_MAKEFILE).parent.mkdir(parents=True)
    (tree / firmware.RELATIVE_MAKEFILE).write_text(LOGGING_MAKEFILE)
    export = micro.export(mlp([4]), np.random.default_rng(0).random((20, 64)), tmp_path / "e")
    cache = tmp_path / "cache"

    def build(_):
        return micro.build(export, tree, "host", cache_dir=cache, verbose=0)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        built = list(pool.map(build, range(2)))
    assert built[0].binary == built[1].binary and built[0].binary.is_file()
    log = next(cache.glob("tflm/*-host/builds.log")).read_text().split()
    assert log == ["start", "end", "start", "end"]


def test_the_inputs_file_holds_the_quantized_examples(tmp_path):
    info = model_info.TensorInfo((1, 2), "int8", 0.5, 1)
    application = micro.Firmware("m", "host", tmp_path / "x", 4096, (info,), (info,), tmp_path)
    count = target_run._inputs_file(application, [[0.0, 1.0], [-1.0, 100.0]], tmp_path / "in.bin")
    data = (tmp_path / "in.bin").read_bytes()
    assert count == 2 and data[:4] == b"KDIN" and struct.unpack("<II", data[4:12]) == (2, 2)
    assert struct.unpack("<I", data[12:16]) == (0,)  # no arena limit
    assert list(np.frombuffer(data[16:], np.int8)) == [1, 3, -1, 127]  # q = x / 0.5 + 1, clipped


@needs_tflm
@pytest.mark.slow
def test_cli_builds_and_runs_an_export(exports, digits, tmp_path, capsys):
    from keras_distill._src import cli

    np.save(tmp_path / "x.npy", digits.x_test[:5])
    folder = str(exports["mlp"].header_path.parent)
    code = cli.main(
        [
            "firmware",
            folder,
            "--tflm-dir",
            str(TFLM),
            "--target",
            "host",
            "--inputs",
            str(tmp_path / "x.npy"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert re.search(r"Built .*kd_app_\w+ for host \(arena [\d,]+ B\)", out)
    assert re.search(r"Ran 5 examples: arena_used_bytes [\d,]+ B on host", out)
    assert cli.main(["firmware", str(tmp_path), "--tflm-dir", str(TFLM)]) == 1
    assert "exactly one <name>_model_data.h" in capsys.readouterr().err
