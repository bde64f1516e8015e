"""Training throughput from stored teacher outputs vs a live teacher, and storage cost.

Measured in one run on this machine, on scikit-learn's digits with a large MLP
teacher (1024-1024-1024) and a small student (64-32-10):

1. plain student training on the labels (no distillation): the baseline,
2. Distiller with the live teacher (teacher forward pass in every step),
3. Distiller(teacher=None) from outputs stored by label_with_teacher.

Time per epoch is the median over epochs after a warm-up epoch; ratios are to (1).
Storage: bytes per example stored with full logits and with top-k, for the 10
digits classes and for a synthetic 2,000-word vocabulary.

Usage: python benchmarks/stored_teacher_benchmark.py [--quick] [--out ...]
"""

import os
import pathlib
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import EpochTimer, mlp, parser, provenance, write_report  # noqa: E402

import keras_distill as kd  # noqa: E402
from keras_distill._src.studies.datasets import load_digits  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def epoch_time(model, data, epochs):
    timer = EpochTimer()
    model.fit(data, epochs=epochs, verbose=0, callbacks=[timer])
    return float(np.median(timer.times[1:]))


def main():
    args = parser(__doc__, "benchmarks/results/stored_teacher.md").parse_args()
    epochs = 4 if args.quick else 12
    split = load_digits()
    x, y = split.x_train, split.y_train
    work = pathlib.Path(tempfile.mkdtemp())

    teacher = mlp(64, [1024, 1024, 1024], seed=0)
    teacher.compile(keras.optimizers.Adam(1e-3), LOSS)
    teacher.fit(x, y, epochs=3, batch_size=64, verbose=0)
    started = time.perf_counter()
    kd.label_with_teacher(teacher, (x, y), work / "full", verbose=0)
    labelling = time.perf_counter() - started
    arrays = tf.data.Dataset.from_tensor_slices((x, y)).batch(32).cache()

    plain = mlp(64, [32], seed=1)
    plain.compile(keras.optimizers.Adam(1e-3), LOSS)
    live = kd.Distiller(teacher, mlp(64, [32], seed=1))
    live.compile(keras.optimizers.Adam(1e-3), LOSS)
    stored = kd.Distiller(None, mlp(64, [32], seed=1))
    stored.compile(keras.optimizers.Adam(1e-3), LOSS)
    stored_data = kd.load_teacher_labels(work / "full", batch_size=32).cache()
    times = {
        "plain student training": epoch_time(plain, arrays, epochs),
        "Distiller, live teacher": epoch_time(live, arrays, epochs),
        "Distiller, stored teacher outputs": epoch_time(stored, stored_data, epochs),
    }
    base = times["plain student training"]

    storage = []
    for top_k in (None, 3):
        manifest = kd.label_with_teacher(
            teacher, x, work / f"digits-{top_k}", top_k=top_k, verbose=0
        )
        storage.append(("digits, 10 classes", top_k, manifest["bytes_per_example"]))
    projection = np.random.default_rng(0).normal(size=(64, 2000)).astype("float32")
    for top_k in (None, 20):
        manifest = kd.label_with_teacher(
            lambda b: b @ projection, x[:256], work / f"v-{top_k}", top_k=top_k, verbose=0
        )
        storage.append(("synthetic, 2,000-word vocabulary", top_k, manifest["bytes_per_example"]))

    lines = [
        f"# Stored vs live teacher ({'quick' if args.quick else 'full'} run)",
        "",
        f"{provenance()} Teacher MLP 64-1024-1024-1024-10 "
        f"({teacher.count_params():,} parameters), student 64-32-10, digits ({len(x):,} training "
        f"examples), batch 32, median epoch time over {epochs - 1} epochs after a warm-up epoch.",
        "",
        "| training | time per epoch | ratio to plain training |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {t * 1000:.0f} ms | {t / base:.2f} |" for name, t in times.items()]
    lines += [
        "",
        f"Labelling the {len(x):,} examples once with the teacher took {labelling:.2f} s "
        f"({labelling / base:.1f} plain epochs).",
        "",
        "| data | stored | bytes per example |",
        "|---|---|---:|",
    ]
    lines += [
        f"| {data} | {'all logits' if k is None else f'top-{k}'} | {b:,.0f} |"
        for data, k, b in storage
    ]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
