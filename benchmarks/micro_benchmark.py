"""TinyML export benchmark: sizes, arena, TFLM agreement and per-inference latency.

For the models of tutorial 02 (a CNN teacher and a distilled CNN student on
scikit-learn's digits), measured in one run on this machine:

- float32 Keras weight size vs int8 .tflite size,
- the tensor arena TFLite Micro needs,
- top-1 agreement of the int8 model in TFLM with the float Keras model,
- median latency of one inference (batch 1) with Keras, the TFLite interpreter
  and the TFLM interpreter, and their ratios to Keras.

Usage: python benchmarks/micro_benchmark.py [--quick] [--out benchmarks/results/micro.md]
"""

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import digits_cnn, parser, provenance, write_report  # noqa: E402

import keras_distill as kd  # noqa: E402
from keras_distill._src.micro import model_info  # noqa: E402
from keras_distill._src.studies.compression_report import median_seconds  # noqa: E402
from keras_distill._src.studies.datasets import load_digits  # noqa: E402
from keras_distill._src.utils.tflite_interpreter import tflite_interpreter  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def latencies(model, result, example, repeats):
    keras_call = tf.function(lambda x: model(x, training=False))
    tflite = tflite_interpreter(result.tflite_path.read_bytes())
    tflite.allocate_tensors()
    source = tflite.get_input_details()[0]
    target = tflite.get_output_details()[0]["index"]
    info = model_info.inspect_model(result.tflite_path.read_bytes())
    quantized = info.inputs[0].quantize(example)

    def run_tflite(_):
        tflite.set_tensor(source["index"], quantized)
        tflite.invoke()
        return tflite.get_tensor(target)

    from tflite_micro.python.tflite_micro import runtime

    tflm = runtime.Interpreter.from_bytes(
        result.tflite_path.read_bytes(), arena_size=result.recommended_arena_bytes
    )

    def run_tflm(_):
        tflm.set_input(quantized, 0)
        tflm.invoke()
        return tflm.get_output(0)

    return {
        "Keras": median_seconds(keras_call, tf.constant(example), repeats, warmup=10),
        "TFLite": median_seconds(run_tflite, example, repeats, warmup=10),
        "TFLM": median_seconds(run_tflm, example, repeats, warmup=10),
    }


def main():
    args = parser(__doc__, "benchmarks/results/micro.md").parse_args()
    epochs, repeats = (5, 200) if args.quick else (40, 2000)

    split = load_digits()
    x_train, x_test = split.x_train.reshape(-1, 8, 8, 1), split.x_test.reshape(-1, 8, 8, 1)
    teacher = digits_cnn(32, 128, seed=0)
    teacher.compile(keras.optimizers.Adam(1e-3), LOSS)
    teacher.fit(x_train, split.y_train, epochs=epochs, batch_size=32, verbose=0)
    student = digits_cnn(4, 16, seed=1)
    distiller = kd.Distiller(teacher, student, temperature=2.0, alpha=0.5)
    distiller.compile(keras.optimizers.Adam(3e-3), LOSS)
    distiller.fit(
        x_train,
        split.y_train,
        epochs=epochs,
        batch_size=32,
        verbose=0,
        callbacks=[kd.TemperatureScheduler(kd.schedules.Linear(2.0, 1.0, steps=epochs))],
    )

    rows = []
    for name, model in (("teacher", teacher), ("student", student)):
        result = kd.micro.export(
            model, x_train, tempfile.mkdtemp(), name=name, validation_data=(x_test, split.y_test)
        )
        times = latencies(model, result, x_test[:1], repeats)
        rows.append((name, model.count_params(), result, times))
        print(name, result, {k: f"{v * 1e6:.1f} us" for k, v in times.items()}, flush=True)

    lines = [
        f"# TinyML export benchmark ({'quick' if args.quick else 'full'} run)",
        "",
        f"{provenance()} Latency: median of {repeats} single-example inferences after 10 "
        "warm-up runs.",
        "",
        "| model | params | float32 weights | int8 .tflite | arena (min / recommended) "
        "| TFLM top-1 agreement | accuracy float / TFLM int8 | Keras | TFLite | TFLM "
        "| TFLite / Keras | TFLM / Keras |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, params, result, times in rows:
        v = result.validation
        lines.append(
            f"| {name} | {params:,} | {result.float_bytes:,} B | {result.model_bytes:,} B | "
            f"{result.arena_bytes:,} / {result.recommended_arena_bytes:,} B | "
            f"{v['agreement']:.1%} | {v['float_accuracy']:.1%} / {v['int8_accuracy']:.1%} | "
            f"{times['Keras'] * 1e6:.0f} us | {times['TFLite'] * 1e6:.0f} us | "
            f"{times['TFLM'] * 1e6:.0f} us | {times['TFLite'] / times['Keras']:.3g} | "
            f"{times['TFLM'] / times['Keras']:.3g} |"
        )
    lines += [
        "",
        "Latencies are host-CPU numbers that compare the three runtimes in one run; they are "
        "not microcontroller timings (TFLM's reference kernels are unoptimized on x86).",
    ]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
