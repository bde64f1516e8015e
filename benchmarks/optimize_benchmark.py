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

Mean ± std over seeds. Usage: python benchmarks/optimize_benchmark.py [--quick] [--out ...]
"""

import os
import sys

TFMOT_PART = "--tfmot-part" in sys.argv
if TFMOT_PART:
    os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before TensorFlow is imported
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import mean_std, parser, provenance, write_report  # noqa: E402

import keras_distill as kd  # noqa: E402
from keras_distill.datasets import load_digits  # noqa: E402

STUDENTS = {"mlp": "MLP 64-16-10", "cnn": "CNN conv8-BN-ReLU-pool-10"}
SPARSITIES = (0.5, 0.8, 0.9)


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
    """(int8 accuracy, top-1 agreement with the Keras model) in the TFLite Micro interpreter."""
    validation = kd.micro.export(
        model,
        representative,
        tempfile.mkdtemp(),
        name="m",
        validation_data=(split.x_test, split.y_test),
    ).validation
    return validation.int8_accuracy, validation.agreement


def teacher_for(framework, split, epochs):
    teacher = build(framework, "mlp", 0, hidden=(256, 256))
    train(framework, teacher, split, epochs)
    return teacher


def keras3_part(split, seeds, epochs) -> dict:
    """Float, post-training int8 and Keras 3 quantization-aware rows, per student and seed."""
    teacher = teacher_for(keras, split, epochs)
    rows = {kind: {"float": [], "ptq": [], "qat": [], "agreement": []} for kind in STUDENTS}
    for seed in seeds:
        for kind, row in rows.items():
            student = build(keras, kind, seed)
            train(keras, student, split, epochs, teacher)
            predictions = student.predict(split.x_test, verbose=0).argmax(-1)
            row["float"].append(float(np.mean(predictions == split.y_test)))
            row["ptq"].append(tflm(student, split, split.x_train)[0])
            aware = kd.quantization_aware(build(keras, kind, seed))
            train(keras, aware, split, epochs, teacher)
            accuracy, agreement = tflm(aware, split, None)
            row["qat"].append(accuracy)
            row["agreement"].append(agreement)
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


def main():
    command = parser(__doc__, "benchmarks/results/optimize.md")
    command.add_argument("--tfmot-part", action="store_true", help="internal: the tf_keras rows")
    args = command.parse_args()
    seeds = [0, 1, 2, 3, 4]
    epochs = 15 if args.quick else 60
    split = images(load_digits())
    if args.tfmot_part:
        print(json.dumps(tfmot_part(split, seeds, epochs)))
        return
    env = {key: value for key, value in os.environ.items() if key != "TF_USE_LEGACY_KERAS"}
    if env != dict(os.environ):
        sys.exit("Run without TF_USE_LEGACY_KERAS: the Keras 3 rows need Keras 3.")
    legacy = subprocess.Popen(
        [sys.executable, __file__, "--tfmot-part", *(["--quick"] if args.quick else [])],
        stdout=subprocess.PIPE,
        text=True,
    )
    keras3 = keras3_part(split, seeds, epochs)
    output, _ = legacy.communicate()
    if legacy.returncode:
        sys.exit(f"the tfmot part failed (exit {legacy.returncode})")
    legacy_rows = json.loads(output.strip().splitlines()[-1])
    write_report(report(args, seeds, epochs, keras3, legacy_rows), args.out)


if __name__ == "__main__":
    main()
