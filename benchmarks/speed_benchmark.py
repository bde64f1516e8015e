"""Speed protocol: time per epoch of distillation implementations, in one run.

On scikit-learn's digits with a large MLP teacher (64-1024-1024-1024-10) and a
small student (64-32-10), batch 32, the median epoch time (epochs timed
round-robin, one of each in turn, after a warm-up round) of:

1. plain student training (no teacher),
2. teacher inference alone over the same batches,
3. keras-distill's Distiller,
4. Keras' built-in keras.distillation.Distiller, configured correctly
   (LogitsDistillation(loss=keras.losses.KLDivergence())),
5. a re-implementation of the keras.io knowledge-distillation example,

reported as ratios to (1) + (2), the cost of the two passes distillation needs.
It also trains each for a few epochs and reports the student's test accuracy,
including Keras' built-in with its default loss="kl_divergence" string, which in
Keras 3.15 applies KL to raw logits.

Usage: python benchmarks/speed_benchmark.py [--quick] [--out benchmarks/results/speed.md]
"""

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import write_report  # noqa: E402

import keras_distill as kd  # noqa: E402
from keras_distill.datasets import load_digits  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
TEMPERATURE, ALPHA = 2.0, 0.5


class KerasIoDistiller(keras.Model):
    """The keras.io example's Distiller (Keras 3 version), T**2-scaled KL."""

    def __init__(self, student, teacher):
        super().__init__()
        self.teacher, self.student = teacher, student

    def compile(self, optimizer, metrics, student_loss_fn, distillation_loss_fn, alpha,
                temperature):  # fmt: skip
        super().compile(optimizer=optimizer, metrics=metrics)
        self.student_loss_fn = student_loss_fn
        self.distillation_loss_fn = distillation_loss_fn
        self.alpha, self.temperature = alpha, temperature

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, allow_empty=False):
        teacher_pred = self.teacher(x, training=False)
        student_loss = self.student_loss_fn(y, y_pred)
        distillation_loss = self.distillation_loss_fn(
            keras.ops.softmax(teacher_pred / self.temperature, axis=1),
            keras.ops.softmax(y_pred / self.temperature, axis=1),
        ) * (self.temperature**2)
        return self.alpha * student_loss + (1 - self.alpha) * distillation_loss

    def call(self, x):
        return self.student(x)


def mlp(hidden, seed):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((64,))]
    layers += [keras.layers.Dense(units, activation="relu") for units in hidden]
    return keras.Sequential(layers + [keras.layers.Dense(10)])


def builds(teacher):
    """name -> function returning a compiled model whose .student is trained."""

    def plain():
        model = mlp([32], 1)
        model.compile(keras.optimizers.Adam(1e-3), LOSS, metrics=["accuracy"])
        model.student = model
        return model

    def ours():
        model = kd.Distiller(teacher, mlp([32], 1), temperature=TEMPERATURE, alpha=ALPHA)
        model.compile(keras.optimizers.Adam(1e-3), LOSS, metrics=["accuracy"])
        return model

    def builtin(loss):
        def build():
            model = keras.distillation.Distiller(
                teacher=teacher, student=mlp([32], 1),
                distillation_losses=keras.distillation.LogitsDistillation(
                    temperature=TEMPERATURE, loss=loss),
                student_loss_weight=ALPHA,
            )  # fmt: skip
            model.compile(keras.optimizers.Adam(1e-3), loss=LOSS, metrics=["accuracy"])
            return model

        return build

    def kerasio():
        model = KerasIoDistiller(mlp([32], 1), teacher)
        model.compile(keras.optimizers.Adam(1e-3), ["accuracy"], LOSS,
                      keras.losses.KLDivergence(), ALPHA, TEMPERATURE)  # fmt: skip
        return model

    return {
        "(1) plain student training": plain,
        "(3) keras-distill Distiller": ours,
        "(4) keras.distillation.Distiller, KLDivergence() instance": builtin(
            keras.losses.KLDivergence()
        ),
        "(4') keras.distillation.Distiller, default loss='kl_divergence'": builtin("kl_divergence"),
        "(5) keras.io example": kerasio,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/speed.md")
    args = parser.parse_args()
    timing_epochs, accuracy_epochs = (3, 5) if args.quick else (15, 40)
    split = load_digits()
    data = tf.data.Dataset.from_tensor_slices((split.x_train, split.y_train)).batch(32).cache()
    teacher = mlp([1024, 1024, 1024], 0)
    teacher.compile(keras.optimizers.Adam(1e-3), LOSS, metrics=["accuracy"])
    teacher.fit(data, epochs=10, verbose=0)
    teacher_accuracy = teacher.evaluate(split.x_test, split.y_test, verbose=0)[1]

    forward = tf.function(lambda x: teacher(x, training=False))

    def teacher_inference():
        for x, _ in data:
            forward(x)

    # Round-robin: one epoch of each in turn, so that drifts of the machine's speed
    # hit every implementation alike.
    models = {name: build() for name, build in builds(teacher).items()}
    runners = {"(2) teacher inference alone": teacher_inference}
    runners.update({name: (lambda m=m: m.fit(data, epochs=1, verbose=0)) for name, m in
                    models.items()})  # fmt: skip
    times = {name: [] for name in runners}
    for round_ in range(timing_epochs + 1):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            if round_:  # the first round warms up (tracing)
                times[name].append(time.perf_counter() - start)
    inference_time = float(np.median(times.pop("(2) teacher inference alone")))

    results = {}
    for name, build in builds(teacher).items():
        model = build()
        model.fit(data, epochs=accuracy_epochs, verbose=0)
        student = model.student
        student.compile(loss=LOSS, metrics=["accuracy"])
        accuracy = student.evaluate(split.x_test, split.y_test, verbose=0)[1]
        results[name] = (float(np.median(times[name])), accuracy)
        print(name, results[name], flush=True)
    base = results["(1) plain student training"][0] + inference_time

    lines = [
        f"# Speed benchmark ({'quick' if args.quick else 'full'} run)",
        "",
        f"Command: `python benchmarks/speed_benchmark.py{' --quick' if args.quick else ''}`. "
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, TensorFlow {tf.__version__}, "
        f"Keras {keras.__version__}. Digits, teacher 64-1024-1024-1024-10 "
        f"({teacher.count_params():,} params, {teacher_accuracy:.1%}), student 64-32-10, batch "
        f"32, T = {TEMPERATURE:g}, alpha = {ALPHA:g}. Epoch time: median of {timing_epochs} "
        "epochs timed round-robin (one epoch of each in turn) after a warm-up round; accuracy "
        f"after {accuracy_epochs} epochs.",
        "",
        "| implementation | time per epoch | ratio to (1) + (2) | student test accuracy |",
        "|---|---:|---:|---:|",
        f"| (2) teacher inference alone | {inference_time * 1000:.0f} ms | "
        f"{inference_time / base:.2f} | |",
    ]
    for name, (seconds, accuracy) in results.items():
        lines.append(f"| {name} | {seconds * 1000:.0f} ms | {seconds / base:.2f} | "
                     f"{accuracy:.1%} |")  # fmt: skip
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
