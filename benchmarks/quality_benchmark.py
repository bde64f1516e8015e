"""Quality protocol: when does distillation pay off? Offline, real data, several seeds.

Tasks: scikit-learn digits (MLP teacher) and MNIST-1D generated offline with
`mnist1d.data.make_dataset` (CNN teacher). For each task, two student sizes
(compression ratios), and two settings:

(a) full labels: the student sees every training label;
(b) label-scarce: the student sees the labels of 10% of the training set and
    the teacher's outputs on all of it (a transfer set). The scratch baseline
    trains on the 10% for ten times as many epochs, so both take the same
    number of gradient steps.

Students: scratch, distilled with the library's recommended recipe
(`keras_distill.recipes`), and, in setting (a), the keras.io example's settings
(T = 10, alpha = 0.1). Mean and standard deviation over
seeds; gap recovered = (distilled - scratch) / (teacher - scratch).

Usage: python benchmarks/quality_benchmark.py [--quick] [--out-dir benchmarks/results]
"""

import argparse
import os
import pathlib
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_distill import recipes  # noqa: E402
from keras_distill.datasets import load_digits  # noqa: E402


def mlp(inputs, hidden, seed, dropout=0.0):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((inputs,))]
    for units in hidden:
        layers.append(keras.layers.Dense(units, activation="relu"))
        if dropout:
            layers.append(keras.layers.Dropout(dropout))
    return keras.Sequential(layers + [keras.layers.Dense(10)])


def cnn_1d(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((40,)),
            keras.layers.Reshape((40, 1)),
            keras.layers.Conv1D(32, 5, padding="same", activation="relu"),
            keras.layers.Conv1D(32, 5, strides=2, padding="same", activation="relu"),
            keras.layers.Conv1D(32, 5, strides=2, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )


def tasks():
    digits = load_digits()
    from mnist1d.data import get_dataset_args, make_dataset

    m = make_dataset(get_dataset_args())  # generated offline, never downloaded
    mnist1d = recipes.Data(
        m["x"].astype("float32"), m["y"].astype("int32"),
        m["x_test"].astype("float32"), m["y_test"].astype("int32"),
    )  # fmt: skip
    return {
        "digits": (digits, lambda: mlp(64, [256, 256], 0, dropout=0.3), 64, [[8], [32]]),
        "MNIST-1D": (mnist1d, lambda: cnn_1d(0), 40, [[16], [64, 64]]),
    }


def scarce(data, seed, fraction=0.1):
    """Labels for `fraction` of the training set; the rest masked out."""
    rng = np.random.default_rng(seed)
    labeled = rng.random(len(data.y_train)) < fraction
    return labeled, recipes.Data(
        data.x_train,
        {"labels": np.where(labeled, data.y_train, 0), "label_mask": labeled.astype("float32")},
        data.x_test,
        data.y_test,
    )


def gap(distilled, scratch, teacher_accuracy):
    """Share of the teacher-scratch gap that distillation recovers."""
    return (np.mean(distilled) - np.mean(scratch)) / (teacher_accuracy - np.mean(scratch))


def mean_std(values):
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, few epochs")
    parser.add_argument("--out-dir", default="benchmarks/results")
    args = parser.parse_args()
    seeds = [0, 1] if args.quick else [0, 1, 2, 3, 4]
    epochs = {"digits": 15, "MNIST-1D": 10} if args.quick else {"digits": 100, "MNIST-1D": 60}
    out = pathlib.Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    rows, plot_points = [], []
    for task, (data, make_teacher, inputs, student_sizes) in tasks().items():
        teacher = make_teacher()
        teacher_accuracy = recipes.train_from_scratch(teacher, data, epochs=epochs[task])
        print(f"{task}: teacher {teacher.count_params():,} params, {teacher_accuracy:.1%}",
              flush=True)  # fmt: skip
        for hidden in student_sizes:
            params = mlp(inputs, hidden, 0).count_params()
            ratio = teacher.count_params() / params
            results = {key: [] for key in ("scratch", "kd", "kerasio", "scarce", "scarce_kd")}
            n = epochs[task]
            for seed in seeds:
                results["scratch"].append(
                    recipes.train_from_scratch(mlp(inputs, hidden, seed), data, epochs=n)
                )
                results["kd"].append(
                    recipes.train_distilled(teacher, mlp(inputs, hidden, seed), data, epochs=n)
                )
                results["kerasio"].append(
                    recipes.train_distilled(
                        teacher,
                        mlp(inputs, hidden, seed),
                        data,
                        epochs=n,
                        temperature=10.0,
                        final_temperature=10.0,
                        alpha=0.1,
                    )
                )
                labeled, transfer = scarce(data, seed)
                few = recipes.Data(
                    data.x_train[labeled], data.y_train[labeled], data.x_test, data.y_test
                )
                results["scarce"].append(
                    recipes.train_from_scratch(mlp(inputs, hidden, seed), few, epochs=10 * n)
                )
                results["scarce_kd"].append(
                    recipes.train_distilled(teacher, mlp(inputs, hidden, seed), transfer,
                                            epochs=n))  # fmt: skip
                print(
                    f"  {hidden} seed {seed}: "
                    + ", ".join(f"{k} {v[-1]:.1%}" for k, v in results.items()),
                    flush=True,
                )

            rows.append(
                f"| {task} | {'-'.join(map(str, hidden))} | {params:,} | {ratio:.0f}x | "
                f"{100 * teacher_accuracy:.1f} | {mean_std(results['scratch'])} | "
                f"{mean_std(results['kd'])} | "
                f"{gap(results['kd'], results['scratch'], teacher_accuracy):+.2f} | "
                f"{mean_std(results['kerasio'])} | {mean_std(results['scarce'])} | "
                f"{mean_std(results['scarce_kd'])} | "
                f"{gap(results['scarce_kd'], results['scarce'], teacher_accuracy):+.2f} |"
            )
            plot_points.append((task, ratio, results, teacher_accuracy))
    minutes = (time.time() - started) / 60
    lines = [
        f"# Quality benchmark ({'quick' if args.quick else 'full'} run)",
        "",
        f"Command: `python benchmarks/quality_benchmark.py{' --quick' if args.quick else ''}`. "
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, TensorFlow {tf.__version__}, "
        f"Keras {keras.__version__}; {len(seeds)} seeds, epochs {epochs}; took {minutes:.0f} min. "
        "Test accuracy in %, mean ± std over seeds. 'recommended' = keras_distill.recipes "
        f"(T {recipes.RECOMMENDED_TEMPERATURE:g} -> {recipes.RECOMMENDED_FINAL_TEMPERATURE:g}, "
        f"alpha {recipes.RECOMMENDED_ALPHA:g}); 'keras.io' = T 10, alpha 0.1. "
        "Label-scarce: 10% of the training labels, "
        "teacher outputs on all training inputs; its scratch baseline trains on the 10% with "
        "10x the epochs.",
        "",
        "| task | student hidden | params | compression | teacher | scratch | distilled "
        "(recommended) | gap recovered | distilled (keras.io) | 10% labels: scratch "
        "| 10% labels: distilled | gap recovered |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]
    (out / ("quality_quick.md" if args.quick else "quality.md")).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, task in zip(axes, ("digits", "MNIST-1D"), strict=True):
        points = [p for p in plot_points if p[0] == task]
        ratios = [p[1] for p in points]
        for key, label in (("scratch", "scratch, all labels"), ("kd", "distilled, all labels"),
                           ("scarce", "scratch, 10% labels"),
                           ("scarce_kd", "distilled, 10% labels")):  # fmt: skip
            ax.errorbar(
                ratios,
                [np.mean(p[2][key]) for p in points],
                [np.std(p[2][key]) for p in points],
                marker="o",
                capsize=3,
                label=label,
            )
        ax.axhline(points[0][3], color="gray", ls=":", label="teacher")
        ax.set_xscale("log")
        ax.set_xlabel("compression ratio")
        ax.set_ylabel("test accuracy")
        ax.set_title(task)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out / ("quality_quick.png" if args.quick else "quality.png"), dpi=110)


if __name__ == "__main__":
    main()
