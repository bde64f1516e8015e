"""Choosing the recommended temperature and alpha by measurement.

On the smallest student of each quality-benchmark task (digits: 64-8-10 with
the MLP teacher 64-256-256-10; MNIST-1D: 40-16-10 with the CNN teacher), full
labels and 10% labels with a transfer set, several (temperature schedule,
alpha) settings over five seeds. The library's defaults must not make the student worse than scratch
with full labels and must clearly beat scratch with few labels.

Usage: python benchmarks/defaults_benchmark.py [--task digits|mnist1d] [--quick] [--out ...]
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from common import label_scarce, mean_std, mlp, parser, provenance, write_report  # noqa: E402

from keras_distill._src.studies import recipes  # noqa: E402
from keras_distill._src.studies.datasets import load_digits, load_mnist1d  # noqa: E402
from keras_distill._src.studies.demo import teacher_cnn  # noqa: E402

SETTINGS = [  # (label, start temperature, final temperature, alpha)
    ("T 1, alpha 0.5", 1.0, 1.0, 0.5),
    ("T 2 -> 1, alpha 0.5", 2.0, 1.0, 0.5),
    ("T 2 -> 1, alpha 0.7", 2.0, 1.0, 0.7),
    ("T 2 -> 1, alpha 0.9", 2.0, 1.0, 0.9),
    ("T 4, alpha 0.1", 4.0, 4.0, 0.1),
]


def main():
    arguments = parser(__doc__, None, out_help="the report (default: defaults_<task>.md)")
    arguments.add_argument("--task", choices=["digits", "mnist1d"], default="digits")
    arguments.add_argument("--settings", default="all", help="comma-separated setting numbers")
    args = arguments.parse_args()
    out = args.out or f"benchmarks/results/defaults_{args.task}.md"
    seeds = [0, 1] if args.quick else [0, 1, 2, 3, 4]
    if args.task == "digits":
        epochs = 15 if args.quick else 100
        data, teacher = load_digits(), mlp(64, [256, 256], 0, dropout=0.3)
        inputs, hidden = 64, [8]
    else:
        epochs = 10 if args.quick else 60
        data, teacher = load_mnist1d(), teacher_cnn(0)
        inputs, hidden = 40, [16]

    def student(seed):
        return mlp(inputs, hidden, seed)

    chosen = (
        SETTINGS if args.settings == "all" else [SETTINGS[int(i)] for i in args.settings.split(",")]
    )
    teacher_accuracy = recipes.train_from_scratch(teacher, data, epochs=epochs)
    scratch, scarce_scratch = [], []
    results = {label: ([], []) for label, *_ in chosen}
    for seed in seeds:
        scratch.append(recipes.train_from_scratch(student(seed), data, epochs=epochs))
        few, transfer = label_scarce(data, seed)  # few: the labelled 10%, repeated 10 times
        scarce_scratch.append(recipes.train_from_scratch(student(seed), few, epochs=epochs))
        for label, start, final, alpha in chosen:
            kwargs = dict(epochs=epochs, temperature=start, final_temperature=final, alpha=alpha)
            full, few_labels = results[label]
            full.append(recipes.train_distilled(teacher, student(seed), data, **kwargs))
            few_labels.append(recipes.train_distilled(teacher, student(seed), transfer, **kwargs))
        print(f"seed {seed} done", flush=True)

    def delta(values, baseline):
        return 100 * (np.mean(values) - np.mean(baseline))

    lines = [
        f"# Defaults benchmark ({'quick' if args.quick else 'full'} run)",
        "",
        f"{provenance()} Task {args.task}, teacher "
        f"{100 * teacher_accuracy:.1f}%, student {inputs}-{hidden[0]}-10, {epochs} epochs, "
        f"{len(seeds)} seeds; "
        f"scratch {mean_std(scratch)} with all labels, {mean_std(scarce_scratch)} with 10% "
        "labels (repeated 10 times: as many steps). Test accuracy in %, mean ± std; deltas "
        "against scratch in points.",
        "",
        "| setting | all labels | delta | 10% labels + transfer set | delta |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, (full, few_labels) in results.items():
        lines.append(
            f"| {label} | {mean_std(full)} | {delta(full, scratch):+.1f} | "
            f"{mean_std(few_labels)} | {delta(few_labels, scarce_scratch):+.1f} |"
        )
    write_report(lines, out)


if __name__ == "__main__":
    main()
