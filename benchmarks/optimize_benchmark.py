"""Post-training int8 vs quantization-aware training (Keras 3 and tfmot), and pruning, on digits.

Every student is distilled with the same recipe (teacher 64-256-256-10 on the flattened 8x8
images, T 2 -> 1, alpha 0.5, Adam 1e-3, batch 32) and measured in the TFLite Micro interpreter
(`kd.micro.export(..., validation_data=...)`) on the 450 test digits:

1. int8 accuracy of (a) the float student distilled, then post-training quantized (representative
   data: the training set); (b) `kd.quantization_aware` on Keras 3, distilled (no representative
   data), with its TFLM-vs-Keras top-1 agreement; (c) tensorflow-model-optimization's
   quantization-aware student on tf_keras, distilled (run in a subprocess with
   TF_USE_LEGACY_KERAS=1, with its own tf_keras teacher trained the same way);
   for two students: an MLP 64-16-10 and a CNN (Conv2D 8 + BatchNormalization + ReLU,
   MaxPooling, Dense 10);
2. float test accuracy of magnitude-pruned MLP 64-32-10 students (tfmot, tf_keras), pruned while
   distilled vs pruned while trained on the labels alone.

With `--narrow`, the sweep of students small enough that post-training int8 costs accuracy
(report: benchmarks/results/optimize_narrow.md): widths swept down on digits (MLP 64-w-10) and on
MNIST-1D (a 1-D CNN: two Conv1D(w, 5, stride 2) + BatchNormalization + ReLU, Dense 10; its tfmot
twin uses Conv2D with (5, 1) kernels, the op TFLite runs for both, as tfmot has no Conv1D), every
row distilled with the same recipe from scratch, 5 seeds, then the targets checked (exit status 1
on a miss): quantization-aware Keras 3 int8 at least 1 point above post-training int8 where
post-training loses 1.5 points or more, never more than 0.3 below it elsewhere, within 0.5 points
of tfmot's quantization-aware student, and its TFLM-vs-Keras agreement at least 99%.

Mean ± std over seeds.
Usage: python benchmarks/optimize_benchmark.py [--narrow] [--quick] [--out ...]
"""

import os
import sys

TFMOT_PART = "--tfmot-part" in sys.argv
if TFMOT_PART:
    os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before TensorFlow is imported
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import functools  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import mean_std, parser, provenance, write_report  # noqa: E402

import keras_distill as kd  # noqa: E402
from keras_distill._src.micro.convert import representative_samples, to_int8_tflite  # noqa: E402
from keras_distill._src.micro.export_validation import validate  # noqa: E402
from keras_distill.datasets import load_digits, load_mnist1d  # noqa: E402

STUDENTS = {"mlp": "MLP 64-16-10", "cnn": "CNN conv8-BN-ReLU-pool-10"}
SPARSITIES = (0.5, 0.8, 0.9)
ARENA_BYTES = 64 * 1024  # ample for these students (the smallest arena is not measured here)
# The narrow sweep: widths from wide to narrow, student epochs (full run, quick run).
NARROW = {
    "digits": {"widths": (16, 8, 4, 2), "epochs": (40, 4), "name": "MLP 64-{w}-10"},
    "mnist1d": {"widths": (16, 8, 4), "epochs": (20, 2), "name": "1-D CNN {w}-{w} (BN, ReLU)"},
}
DEFAULT_OUT = "benchmarks/results/optimize.md"
TARGETS = {"gain": 1.0, "lossy": 1.5, "floor": -0.3, "tfmot": 0.5, "agreement": 99.0}


def images(split):
    """The digits as 8x8x1 images (the MLPs flatten them first)."""
    return split._replace(
        x_train=split.x_train.reshape(-1, 8, 8, 1), x_test=split.x_test.reshape(-1, 8, 8, 1)
    )


def build(framework, kind, seed, hidden=(16,)):
    """A student (`kind` "mlp" or "cnn") or the teacher (`kind` "mlp", hidden 256-256)."""
    framework.utils.set_random_seed(seed)
    layers = framework.layers
    if kind == "mlp":
        stack = [layers.Flatten()] + [layers.Dense(units, activation="relu") for units in hidden]
    else:
        stack = [
            layers.Conv2D(8, 3, padding="same"),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.MaxPooling2D(),
            layers.Flatten(),
        ]
    return framework.Sequential([framework.Input((8, 8, 1)), *stack, layers.Dense(10)])


def train(framework, model, split, epochs, teacher=None, callbacks=()):
    """Distils from `teacher` (T 2 -> 1, alpha 0.5), or trains on the labels alone."""
    callbacks = list(callbacks)
    fitted = model
    if teacher is not None:
        fitted = kd.Distiller(teacher, model, temperature=2.0, alpha=0.5)
        callbacks.append(kd.TemperatureScheduler(kd.schedules.Linear(2.0, 1.0, epochs - 1)))
    loss = framework.losses.SparseCategoricalCrossentropy(from_logits=True)
    fitted.compile(framework.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    fitted.fit(
        split.x_train, split.y_train, epochs=epochs, batch_size=32, verbose=0, callbacks=callbacks
    )


def tflm(model, split, representative):
    """(int8 accuracy, top-1 agreement with the Keras model) in the TFLite Micro interpreter.

    The conversion and validation of `kd.micro.export` (its representative samples, its
    converter, its TFLM run), without the arena measurement in subprocesses.
    """
    samples = None
    if representative is not None:
        samples = representative_samples(representative, tuple(model.inputs[0].shape[1:]))
    model_bytes = to_int8_tflite(model, samples)
    info = kd.micro.inspect_model(model_bytes)
    validation = validate(model, model_bytes, info, (split.x_test, split.y_test), ARENA_BYTES)
    return validation.int8_accuracy, validation.agreement


def teacher_for(framework, split, epochs):
    teacher = build(framework, "mlp", 0, hidden=(256, 256))
    train(framework, teacher, split, epochs)
    return teacher


def keras3_seed(make, split, epochs, teacher, row) -> None:
    """Appends one seed's float, post-training int8 and Keras 3 QAT results to `row`.

    `make()` builds the float student afresh (same seed): one is distilled, then
    post-training quantized; the other made quantization-aware, then distilled.
    """
    student = make()
    train(keras, student, split, epochs, teacher)
    predictions = student.predict(split.x_test, verbose=0).argmax(-1)
    row["float"].append(float(np.mean(predictions == split.y_test)))
    row["ptq"].append(tflm(student, split, split.x_train)[0])
    aware = kd.quantization_aware(make())
    train(keras, aware, split, epochs, teacher)
    accuracy, agreement = tflm(aware, split, None)
    row["qat"].append(accuracy)
    row["agreement"].append(agreement)


def new_row() -> dict:
    return {"float": [], "ptq": [], "qat": [], "agreement": []}


def keras3_part(split, seeds, epochs) -> dict:
    """Float, post-training int8 and Keras 3 quantization-aware rows, per student and seed."""
    teacher = teacher_for(keras, split, epochs)
    rows = {kind: new_row() for kind in STUDENTS}
    for seed in seeds:
        for kind, row in rows.items():
            keras3_seed(functools.partial(build, keras, kind, seed), split, epochs, teacher, row)
        print(
            f"seed {seed}:",
            {k: {n: v[-1] for n, v in r.items()} for k, r in rows.items()},
            flush=True,
        )
    return rows


def tfmot_part(split, seeds, epochs) -> dict:
    """tfmot quantization-aware rows and the pruning table (tf_keras, in its own process)."""
    framework = tf.keras
    teacher = teacher_for(framework, split, epochs)
    qat = {kind: [] for kind in STUDENTS}
    pruned = {str(s): {"kd": [], "alone": []} for s in SPARSITIES}
    steps = epochs * int(np.ceil(len(split.x_train) / 32))
    for seed in seeds:
        for kind in STUDENTS:
            aware = kd.quantization_aware(build(framework, kind, seed))
            train(framework, aware, split, epochs, teacher)
            qat[kind].append(tflm(aware, split, None)[0])
        for target in SPARSITIES:
            for column, source in (("kd", teacher), ("alone", None)):
                model, callbacks = kd.prune(
                    build(framework, "mlp", seed, hidden=(32,)),
                    target,
                    end_step=steps // 2,
                    frequency=20,
                )
                train(framework, model, split, epochs, source, callbacks)
                stripped = kd.strip(model)
                predictions = stripped.predict(split.x_test, verbose=0).argmax(-1)
                pruned[str(target)][column].append(float(np.mean(predictions == split.y_test)))
    return {"qat": qat, "pruned": pruned}


def narrow_student(framework, task, width, seed):
    """The sweep's student of `width` for `task` ("digits" or "mnist1d").

    On MNIST-1D, the Keras 3 student uses Conv1D; its tf_keras twin Conv2D with (5, 1)
    kernels on a (40, 1, 1) input (tfmot quantizes no Conv1D): the same function, and
    the same Conv2D kernels in TFLite.
    """
    if task == "digits":
        return build(framework, "mlp", seed, hidden=(width,))
    framework.utils.set_random_seed(seed)
    layers, legacy = framework.layers, framework is not keras
    stack = [layers.Reshape((40, 1, 1) if legacy else (40, 1))]
    for _ in range(2):
        if legacy:
            conv = layers.Conv2D(width, (5, 1), strides=(2, 1), padding="same")
        else:
            conv = layers.Conv1D(width, 5, strides=2, padding="same")
        stack += [conv, layers.BatchNormalization(), layers.ReLU()]
    stack += [layers.Flatten(), layers.Dense(10)]
    return framework.Sequential([framework.Input((40,)), *stack])


def narrow_teacher(framework, task, split, epochs):
    """Digits: the MLP 64-256-256-10; MNIST-1D: the 1-D CNN of width 64. Trained on labels."""
    if task == "digits":
        return teacher_for(framework, split, epochs)
    teacher = narrow_student(framework, task, 64, seed=0)
    train(framework, teacher, split, epochs)
    return teacher


def narrow_setting(task, quick):
    """(split, student epochs, widths) of a task; the quick run takes its narrowest student."""
    setting = NARROW[task]
    split = images(load_digits()) if task == "digits" else load_mnist1d()
    widths = setting["widths"][-1:] if quick else setting["widths"]
    return split, setting["epochs"][int(quick)], widths


def accuracy(model, split) -> float:
    return float(np.mean(model.predict(split.x_test, verbose=0).argmax(-1) == split.y_test))


def narrow_keras3_part(task, seeds, quick) -> dict:
    """Float, post-training int8 and Keras 3 QAT results of a task, per width, with timings."""
    split, epochs, widths = narrow_setting(task, quick)
    start = time.perf_counter()
    teacher = narrow_teacher(keras, task, split, epochs)
    result = {"teacher": accuracy(teacher, split), "rows": {}, "params": {}}
    for width in widths:
        row = result["rows"][str(width)] = new_row()
        result["params"][str(width)] = narrow_student(keras, task, width, 0).count_params()
        for seed in seeds:
            make = functools.partial(narrow_student, keras, task, width, seed)
            keras3_seed(make, split, epochs, teacher, row)
        means = {name: round(100 * np.mean(values), 1) for name, values in row.items()}
        print(f"{task} width {width}: {means} ({time.perf_counter() - start:.0f} s)", flush=True)
    result["seconds"] = time.perf_counter() - start
    return result


def narrow_tfmot_part(seeds, quick) -> dict:
    """tfmot quantization-aware results of every task and width (tf_keras, its own process)."""
    framework, results = tf.keras, {}
    for task in NARROW:
        split, epochs, widths = narrow_setting(task, quick)
        teacher = narrow_teacher(framework, task, split, epochs)
        results[task] = {"teacher": accuracy(teacher, split), "rows": {}}
        for width in widths:
            results[task]["rows"][str(width)] = []
            for seed in seeds:
                aware = kd.quantization_aware(narrow_student(framework, task, width, seed))
                train(framework, aware, split, epochs, teacher)
                results[task]["rows"][str(width)].append(tflm(aware, split, None)[0])
    return results


def report(args, seeds, epochs, keras3, legacy) -> list[str]:
    lines = [
        f"# Quantization-aware and pruned distillation ({'quick' if args.quick else 'full'} run)",
        "",
        f"{provenance()} Digits (1,347 train / 450 test); teacher 64-256-256-10; {epochs} epochs; "
        f"{len(seeds)} seeds; int8 test accuracy in the TFLite Micro interpreter, in %, "
        "mean ± std. Every student distilled with the same recipe (T 2 -> 1, alpha 0.5). The "
        "tfmot rows run in a subprocess with TF_USE_LEGACY_KERAS=1 (tf_keras teacher and student).",
        "",
        "| student | Keras float | post-training int8 | QAT, Keras 3 (kd.quantization_aware) "
        "| QAT, tfmot + tf_keras | Keras 3 QAT: TFLM vs Keras agreement |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind, name in STUDENTS.items():
        row = keras3[kind]
        lines.append(
            f"| {name} | {mean_std(row['float'])} | {mean_std(row['ptq'])} | "
            f"{mean_std(row['qat'])} | {mean_std(legacy['qat'][kind])} | "
            f"{mean_std(row['agreement'])} |"
        )
    lines += [
        "",
        "| sparsity (MLP 64-32-10, float) | pruned while distilled | pruned, labels only |",
        "|---:|---:|---:|",
    ]
    for target in SPARSITIES:
        cells = legacy["pruned"][str(target)]
        lines.append(f"| {target:.0%} | {mean_std(cells['kd'])} | {mean_std(cells['alone'])} |")
    return lines


def points(values) -> float:
    return 100.0 * float(np.mean(values))


def narrow_checks(task, width, row, tfmot_row) -> list[tuple[str, bool]]:
    """(line, met) for each target of one student of the sweep."""
    student = f"{task}, {NARROW[task]['name'].format(w=width)}"
    loss = points(row["float"]) - points(row["ptq"])
    gain = points(row["qat"]) - points(row["ptq"])
    lossy = loss >= TARGETS["lossy"]
    wanted = TARGETS["gain"] if lossy else TARGETS["floor"]
    checks = [
        (
            f"{student}: Keras 3 QAT - post-training int8 = {gain:+.1f} points, post-training "
            f"losing {loss:.1f} (target >= {wanted:+.1f})",
            gain >= wanted,
        )
    ]
    if tfmot_row is not None:
        gap = points(row["qat"]) - points(tfmot_row)
        checks.append(
            (
                f"{student}: Keras 3 QAT - tfmot QAT = {gap:+.1f} points (target within "
                f"±{TARGETS['tfmot']:.1f})",
                abs(gap) <= TARGETS["tfmot"],
            )
        )
    agreement = points(row["agreement"])
    lowest = 100.0 * min(row["agreement"])
    checks.append(
        (
            f"{student}: Keras 3 QAT TFLM-vs-Keras agreement {agreement:.1f}% (lowest seed "
            f"{lowest:.1f}%; target >= {TARGETS['agreement']:.0f}%)",
            agreement >= TARGETS["agreement"],
        )
    )
    return checks


def narrow_table(task, result, legacy) -> list[str]:
    """The Markdown table of one task of the sweep."""
    lines = [
        "| student | parameters | float (Keras) | post-training int8 | its loss | QAT, Keras 3 "
        "| QAT - post-training | QAT, tfmot + tf_keras | Keras 3 QAT: TFLM vs Keras agreement |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for width, row in result["rows"].items():
        loss = points(row["float"]) - points(row["ptq"])
        gain = points(row["qat"]) - points(row["ptq"])
        tfmot_row = None if legacy is None else legacy[task]["rows"][width]
        lines.append(
            f"| {NARROW[task]['name'].format(w=width)} | {result['params'][width]:,} | "
            f"{mean_std(row['float'])} | {mean_std(row['ptq'])} | {loss:.1f} | "
            f"{mean_std(row['qat'])} | {gain:+.1f} | "
            f"{'not run' if tfmot_row is None else mean_std(tfmot_row)} | "
            f"{mean_std(row['agreement'])} |"
        )
    return lines


def narrow_report(args, seeds, keras3, legacy, legacy_error) -> tuple[list[str], bool]:
    """The sweep's report and whether every target was met."""
    epochs = {task: narrow_setting(task, args.quick)[1] for task in NARROW}
    lines = [
        f"# Quantization-aware vs post-training int8 on narrow students "
        f"({'quick' if args.quick else 'full'} run)",
        "",
        f"{provenance()} {len(seeds)} seed(s). Every student distilled from scratch with the same "
        "recipe (T 2 -> 1, alpha 0.5, Adam 1e-3, batch 32; digits "
        f"{epochs['digits']} epochs, MNIST-1D {epochs['mnist1d']} epochs); teachers trained as "
        "long on the labels alone. int8 test accuracy in the TFLite Micro interpreter, in %, "
        "mean ± std; post-training int8 calibrated on 200 training examples; the "
        "quantization-aware students converted without representative data. 'its loss': float "
        "minus post-training int8, in points. The tfmot rows run in a subprocess with "
        "TF_USE_LEGACY_KERAS=1 (tf_keras teacher and student, trained the same way).",
    ]
    checks = []
    for task, result in keras3.items():
        title = {"digits": "Digits (1,347 train / 450 test)", "mnist1d": "MNIST-1D (4,000 / 1,000)"}
        teacher = f"teacher {100 * result['teacher']:.1f}% (Keras 3)"
        if legacy is not None:
            teacher += f", {100 * legacy[task]['teacher']:.1f}% (tf_keras)"
        lines += ["", f"## {title[task]}: {teacher}; {result['seconds']:.0f} s", ""]
        lines += narrow_table(task, result, legacy)
        for width, row in result["rows"].items():
            tfmot_row = None if legacy is None else legacy[task]["rows"][width]
            checks += narrow_checks(task, width, row, tfmot_row)
    if legacy is None:
        lines += ["", f"The tfmot rows did not run: {legacy_error}"]
    lossy = [line.split(":")[0] for line, _ in checks if "target >= +1.0" in line]
    lines += [
        "",
        "## Targets",
        "",
        "Students whose post-training int8 loses 1.5 points or more (where QAT must gain 1 point): "
        f"{', '.join(lossy) if lossy else 'none in this sweep'}.",
        "",
    ]
    lines += [f"- {line}: {'met' if met else 'MISSED'}" for line, met in checks]
    return lines, all(met for _, met in checks)


def tfmot_process(args) -> subprocess.Popen:
    """This script's tf_keras part, started in its own process (TF_USE_LEGACY_KERAS=1)."""
    env = {key: value for key, value in os.environ.items() if key != "TF_USE_LEGACY_KERAS"}
    if env != dict(os.environ):
        sys.exit("Run without TF_USE_LEGACY_KERAS: the Keras 3 rows need Keras 3.")
    flags = [flag for flag in ("--quick", "--narrow") if getattr(args, flag[2:])]
    return subprocess.Popen(
        [sys.executable, __file__, "--tfmot-part", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def tfmot_output(legacy: subprocess.Popen) -> tuple[dict | None, str | None]:
    """(the tf_keras part's results, None), or (None, why it failed)."""
    output, errors = legacy.communicate()
    if legacy.returncode:
        return None, f"exit {legacy.returncode}: {errors.strip().splitlines()[-1:]}"
    return json.loads(output.strip().splitlines()[-1]), None


def run_narrow(args, seeds) -> None:
    """The sweep: Keras 3 rows here, tfmot rows in a subprocess meanwhile; exits 1 on a miss."""
    legacy = tfmot_process(args)
    keras3 = {task: narrow_keras3_part(task, seeds, args.quick) for task in NARROW}
    legacy_rows, legacy_error = tfmot_output(legacy)
    lines, all_met = narrow_report(args, seeds, keras3, legacy_rows, legacy_error)
    write_report(lines, args.out or "benchmarks/results/optimize_narrow.md")
    if not all_met:
        sys.exit(1)


def main():
    command = parser(__doc__, None)
    command.add_argument("--narrow", action="store_true", help="the sweep of narrow students")
    command.add_argument("--tfmot-part", action="store_true", help="internal: the tf_keras rows")
    args = command.parse_args()
    if args.narrow:
        seeds = [0] if args.quick else [0, 1, 2, 3, 4]
        if args.tfmot_part:
            print(json.dumps(narrow_tfmot_part(seeds, args.quick)))
        else:
            run_narrow(args, seeds)
        return
    seeds = [0, 1, 2, 3, 4]
    epochs = 15 if args.quick else 60
    split = images(load_digits())
    if args.tfmot_part:
        print(json.dumps(tfmot_part(split, seeds, epochs)))
        return
    legacy = tfmot_process(args)
    keras3 = keras3_part(split, seeds, epochs)
    legacy_rows, legacy_error = tfmot_output(legacy)
    if legacy_rows is None:
        sys.exit(f"the tfmot part failed ({legacy_error})")
    write_report(report(args, seeds, epochs, keras3, legacy_rows), args.out or DEFAULT_OUT)


if __name__ == "__main__":
    main()
