"""Quantization-aware and pruned students with and without distillation, on digits.

Runs with TF_USE_LEGACY_KERAS=1 (tensorflow-model-optimization 0.8 wraps tf_keras
models only). Teacher: tf.keras MLP 64-256-256-10. Student: 64-32-10.

1. int8 accuracy in the TFLite Micro interpreter of
   (a) a float student distilled, then post-training quantized,
   (b) a quantization-aware student distilled (QAT + KD),
   (c) a quantization-aware student trained on the labels alone (QAT only);
2. float test accuracy of magnitude-pruned students at several sparsities,
   pruned while distilled vs pruned while trained on the labels alone.

Mean ± std over seeds. Usage: python benchmarks/optimize_benchmark.py [--quick] [--out ...]
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before TensorFlow is imported
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import mean_std, write_report  # noqa: E402

import keras_distill as kd  # noqa: E402
from keras_distill._src.studies.datasets import load_digits  # noqa: E402
from keras_distill._src.training import tfmot as optimize  # noqa: E402

LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def mlp(hidden, seed):
    tf.keras.utils.set_random_seed(seed)
    layers = [tf.keras.Input((64,))]
    layers += [tf.keras.layers.Dense(units, activation="relu") for units in hidden]
    return tf.keras.Sequential(layers + [tf.keras.layers.Dense(10)])


def train(model, split, epochs, teacher=None, callbacks=()):
    """Distils from `teacher` (T 2 -> 1, alpha 0.5), or trains on the labels alone."""
    callbacks = list(callbacks)
    if teacher is not None:
        model_to_fit = kd.Distiller(teacher, model, temperature=2.0, alpha=0.5)
        callbacks.append(kd.TemperatureScheduler(kd.schedules.Linear(2.0, 1.0, epochs - 1)))
    else:
        model_to_fit = model
    model_to_fit.compile(tf.keras.optimizers.Adam(1e-3), LOSS, metrics=["accuracy"])
    model_to_fit.fit(
        split.x_train, split.y_train, epochs=epochs, batch_size=32, verbose=0, callbacks=callbacks
    )


def int8_accuracy(model, split, representative):
    result = kd.micro.export(
        model,
        representative,
        tempfile.mkdtemp(),
        name="m",
        validation_data=(split.x_test, split.y_test),
    )
    return result.validation["int8_accuracy"]


def float_accuracy(model, split):
    predictions = model.predict(split.x_test, verbose=0)
    return float(np.mean(predictions.argmax(-1) == split.y_test))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/optimize.md")
    args = parser.parse_args()
    seeds = [0] if args.quick else [0, 1, 2]
    epochs = 10 if args.quick else 60
    sparsities = [0.5, 0.8, 0.9]
    split = load_digits()
    teacher = mlp([256, 256], 0)
    teacher.compile(tf.keras.optimizers.Adam(1e-3), LOSS, metrics=["accuracy"])
    teacher.fit(split.x_train, split.y_train, epochs=epochs, batch_size=32, verbose=0)
    teacher_accuracy = float_accuracy(teacher, split)

    quantized = {"ptq": [], "qat_kd": [], "qat": []}
    pruned = {s: {"kd": [], "alone": []} for s in sparsities}
    steps = epochs * int(np.ceil(len(split.x_train) / 32))
    for seed in seeds:
        student = mlp([32], seed)
        train(student, split, epochs, teacher)
        quantized["ptq"].append(int8_accuracy(student, split, split.x_train))
        qat = optimize.quantization_aware(mlp([32], seed))
        train(qat, split, epochs, teacher)
        quantized["qat_kd"].append(int8_accuracy(qat, split, None))
        qat = optimize.quantization_aware(mlp([32], seed))
        train(qat, split, epochs)
        quantized["qat"].append(int8_accuracy(qat, split, None))
        for target in sparsities:
            for kind, source in (("kd", teacher), ("alone", None)):
                model, callbacks = optimize.prune(
                    mlp([32], seed), target, end_step=steps // 2, frequency=20
                )
                train(model, split, epochs, source, callbacks)
                pruned[target][kind].append(float_accuracy(optimize.strip(model), split))
        print(f"seed {seed}:", {k: v[-1] for k, v in quantized.items()}, flush=True)

    lines = [
        f"# Quantization-aware and pruned distillation ({'quick' if args.quick else 'full'} run)",
        "",
        f"Command: `python benchmarks/optimize_benchmark.py{' --quick' if args.quick else ''}`. "
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, TensorFlow {tf.__version__} "
        f"with tf_keras. Digits; teacher 64-256-256-10 ({100 * teacher_accuracy:.1f}%); student "
        f"64-32-10; {epochs} epochs; {len(seeds)} seed(s); test accuracy in %, mean ± std.",
        "",
        "| student | int8 accuracy in TFLite Micro |",
        "|---|---:|",
        f"| (a) float, distilled, post-training int8 | {mean_std(quantized['ptq'])} |",
        f"| (b) quantization-aware, distilled | {mean_std(quantized['qat_kd'])} |",
        f"| (c) quantization-aware, labels only | {mean_std(quantized['qat'])} |",
        "",
        "| sparsity | pruned while distilled | pruned, labels only |",
        "|---:|---:|---:|",
    ]
    lines += [
        f"| {target:.0%} | {mean_std(pruned[target]['kd'])} | {mean_std(pruned[target]['alone'])} |"
        for target in sparsities
    ]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
