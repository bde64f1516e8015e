"""Firmware protocol: exported models built with TFLite Micro's Makefile, run on the host and
on a Cortex-M4 emulated by QEMU (mps2-an386).

For each model: the smallest arena in the Python TFLM interpreter (x86-64, what `export`
measures), the smallest arena that allocates and runs in the built application on the
host and on the Cortex-M4 (bisection to 16 bytes, each probe its own run),
`arena_used_bytes()` on the Cortex-M4, the instructions per inference on the Cortex-M4
(QEMU -icount; TFLM's reference kernels, no CMSIS-NN), and whether the outputs on both
targets are bit-identical to the Python interpreter's.

Models: the demo's distilled MNIST-1D student (trained briefly here: the figures do not depend
on the weights) and the MLPerf Tiny reference models in ../shared/data/mlperf-tiny.

Usage: python benchmarks/firmware_benchmark.py [--tflm-dir DIR] [--out FILE.md]
"""

import os
import pathlib
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from common import parser, provenance, write_report  # noqa: E402

from keras_distill import micro  # noqa: E402
from keras_distill._src.micro import model_info, verify  # noqa: E402
from keras_distill._src.studies import datasets, demo, recipes
from keras_distill._src.utils import markdown

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def exports(folder):
    split = datasets.load_mnist1d()
    student = demo.student_mlp()
    recipes.train_from_scratch(student, split, epochs=5)
    yield (
        "MNIST-1D student (MLP 40-64-64-10)",
        micro.export(student, split.x_train, folder / "student", name="student"),
        split.x_test[:20],
    )
    for file in sorted((SHARED / "data" / "mlperf-tiny").glob("*.tflite")):
        export = micro.export(file, None, folder / file.stem, name=file.stem.split("_")[0])
        source = export.inputs[0]
        x = source.dequantize(np.random.default_rng(0).integers(-128, 128, (5, *source.shape[1:])))
        yield f"MLPerf Tiny {file.stem}", export, x


def row(label, export, x, tflm):
    model_bytes = export.tflite_path.read_bytes()
    expected = verify.run_tflm(
        model_bytes,
        model_info.inspect_model(model_bytes),
        x,
        export.recommended_arena_bytes,
        dequantize=False,
    )
    runs = {
        t: micro.run_on_target(micro.build(export, tflm, t), x, measure_arena=True)
        for t in ("host", "cortex-m4")
    }
    same = all(np.array_equal(r.raw_outputs, expected) for r in runs.values())
    m4 = runs["cortex-m4"]
    return [
        label,
        f"{export.arena_bytes:,}",
        f"{runs['host'].arena_minimum_bytes:,}",
        f"{m4.arena_minimum_bytes:,}",
        f"{m4.arena_used_bytes:,}",
        f"{int(np.median(m4.instructions)):,}",
        f"{'yes' if same else 'NO'} ({len(x)})",
    ]


def main():
    arguments = parser(__doc__, str(ROOT / "benchmarks/results/firmware.md"), quick=None)
    arguments.add_argument("--tflm-dir", default=str(SHARED / "tflm" / "tflite-micro"))
    args = arguments.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        rows = [
            row(label, export, x, args.tflm_dir)
            for label, export, x in exports(pathlib.Path(scratch))
        ]
    header = [
        "model",
        "arena, TFLM Python x86-64 (B)",
        "arena, built app on host (B)",
        "arena, Cortex-M4 (B)",
        "arena_used_bytes, Cortex-M4 (B)",
        "instructions / inference, Cortex-M4",
        "outputs bit-identical (examples)",
    ]
    write_report(
        [
            "# Firmware benchmark",
            "",
            f"{provenance()} TFLite Micro from ../shared/tflm built with its Makefile (host: "
            "g++; Cortex-M4: Debian's arm-none-eabi-gcc, TARGET=cortex_m_qemu, reference "
            "kernels), run in qemu-system-arm -M mps2-an386 -icount shift=0. Arenas: smallest "
            "that allocates and runs, to 16 bytes.",
            "",
            markdown.table(header, rows),
        ],
        args.out,
    )


if __name__ == "__main__":
    main()
