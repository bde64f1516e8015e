"""Features protocol: logits KD, logits + feature KD, two-teacher ensembles, the DistilBERT recipe.

On digits and MNIST-1D, for several seeds, the same students trained for the same epochs with the
same optimizer (Adam 1e-3, batch 32; no augmentation, so every row is comparable with scratch):

- scratch; logits KD (T 1, alpha 0.5: the Distiller's defaults); logits + a feature term (the
  student's hidden layer to the teacher's last hidden layer, MSE through a learned projector,
  weight 1); KD from teacher A alone, from teacher B alone, and from their ensemble (averaged
  softened probabilities);
- a 4-block teacher halved to 2 blocks: scratch, initialised from every other teacher block
  (`init_from_teacher`) then trained on the labels, and the DistilBERT recipe
  (`recipes.train_distilbert_style`: init + 5:2:1 soft-target KL at T 2, hard loss, cosine on
  the last hidden state);
- a small transformer (`kd.architectures.transformer_classifier`, MNIST-1D as a
  sequence of 10 patches) with 4 blocks halved to 2 blocks: scratch, logits KD, logits + the
  cosine hidden-state term, initialised from every other teacher block then trained on the labels,
  and the DistilBERT recipe.

Usage: python benchmarks/features_benchmark.py [--quick] [--tasks digits mnist1d transformer]
       [--out benchmarks/results/features.md]
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from common import mean_std, mlp, parser, provenance, write_report  # noqa: E402

import keras_distill as kd  # noqa: E402
from keras_distill._src.objective.features import FeatureDistillation  # noqa: E402
from keras_distill._src.studies import (
    datasets,  # noqa: E402
    recipes,
)
from keras_distill._src.studies.architectures import transformer_classifier  # noqa: E402
from keras_distill._src.utils import markdown


def trained(model, data, epochs):
    recipes.train_from_scratch(model, data, epochs=epochs)
    return model


def runs(data, inputs, width, seed, epochs, teachers):
    a, b, deep = teachers
    student = lambda: mlp(inputs, [width], 100 + seed, prefix="s")  # noqa: E731
    half = lambda: mlp(inputs, [64, 64, 64], 200 + seed, prefix="b")  # noqa: E731  embed + 2 blocks
    feature = FeatureDistillation(a.layers[-3].name, "s_0")
    common = dict(epochs=epochs)
    return {
        "scratch": recipes.train_from_scratch(student(), data, **common),
        "logits KD (teacher A)": recipes.train_distilled(a, student(), data, **common),
        "logits + feature KD (teacher A)": recipes.train_distilled(
            a, student(), data, distillation_loss=["kl_divergence", feature], **common
        ),
        "logits KD (teacher B)": recipes.train_distilled(b, student(), data, **common),
        "ensemble A + B": recipes.train_distilled([a, b], student(), data, **common),
        "half depth, scratch": recipes.train_from_scratch(half(), data, **common),
        "half depth, init from teacher": _init_then_labels(deep, half(), data, epochs),
        "half depth, DistilBERT recipe": recipes.train_distilbert_style(
            deep, half(), data, hidden_pairs=[("b_4", "b_2")], **common
        )[0],
    }


def transformer_runs(data, seed, epochs, teacher):
    student = lambda: transformer_classifier(2, seed=100 + seed, name="student")  # noqa: E731
    cosine = FeatureDistillation("block_3", "block_1", loss="cosine")
    common = dict(epochs=epochs)
    return {
        "half depth, scratch": recipes.train_from_scratch(student(), data, **common),
        "half depth, logits KD": recipes.train_distilled(teacher, student(), data, **common),
        "half depth, logits + cosine on the last block": recipes.train_distilled(
            teacher, student(), data, distillation_loss=["kl_divergence", cosine], **common
        ),
        "half depth, init from teacher": _init_then_labels(teacher, student(), data, epochs),
        "half depth, DistilBERT recipe": recipes.train_distilbert_style(
            teacher, student(), data, hidden_pairs=[("block_3", "block_1")], **common
        )[0],
    }


def _init_then_labels(teacher, student, data, epochs):
    kd.init_from_teacher(student, teacher)
    return recipes.train_from_scratch(student, data, epochs=epochs)


def task_data(name):
    if name == "digits":
        return datasets.load_digits(), 64
    return datasets.load_mnist1d(), 40


def run_task(task, seeds, epochs):
    """(title, teacher accuracies, per-seed results, table header) of one task."""
    if task == "transformer":
        data = datasets.load_mnist1d()
        teacher = trained(transformer_classifier(4, seed=0, name="teacher"), data, 2 * epochs)
        accuracy = {"4-block transformer": recipes.test_accuracy(teacher, data)}
        return (
            "MNIST-1D as a sequence, transformer",
            accuracy,
            [transformer_runs(data, seed, epochs, teacher) for seed in seeds],
            "student (transformer, 2 blocks of the teacher's 4)",
        )
    data, inputs = task_data(task)
    teachers = (
        trained(mlp(inputs, [256, 256], 0, prefix="a", dropout=0.3), data, 2 * epochs),
        trained(mlp(inputs, [128, 128], 1, prefix="t", dropout=0.3), data, 2 * epochs),
        trained(mlp(inputs, [64] * 5, 2, prefix="b"), data, 2 * epochs),
    )
    accuracy = {
        f"teacher {k}": recipes.test_accuracy(t, data)
        for k, t in zip("AB", teachers[:2], strict=True)
    }
    accuracy["4-block teacher"] = recipes.test_accuracy(teachers[2], data)
    return (
        {"digits": "digits", "mnist1d": "MNIST-1D"}[task],
        accuracy,
        [runs(data, inputs, 16, seed, epochs, teachers) for seed in seeds],
        "student (MLP, hidden 16; half depth: 64-64-64)",
    )


def summary(results):
    """Rows `[name, "mean ± std (difference to the same student's scratch row)"]`."""
    rows = []
    for key in results[0]:
        values = np.array([r[key] for r in results])
        base = np.array(
            [r["half depth, scratch" if key.startswith("half") else "scratch"] for r in results]
        )
        rows.append([key, f"{mean_std(values)} ({100 * (values.mean() - base.mean()):+.1f})"])
    return rows


def main():
    arguments = parser(__doc__, "benchmarks/results/features.md")
    arguments.add_argument(
        "--tasks",
        nargs="+",
        default=["digits", "mnist1d", "transformer"],
        choices=["digits", "mnist1d", "transformer"],
    )
    args = arguments.parse_args()
    seeds, epochs = ([0], 3) if args.quick else ([0, 1, 2, 3, 4], 60)
    lines = [
        "# Features benchmark",
        "",
        f"{provenance()} Tasks: {', '.join(args.tasks)}; {len(seeds)} seeds, {epochs} epochs "
        f"per student (teachers {2 * epochs}), Adam 1e-3, "
        "batch 32, no augmentation. Test accuracy in %, mean ± std; in brackets the difference "
        "to the scratch row of the same student.",
    ]
    for task in args.tasks:
        name, accuracy, results, header = run_task(task, seeds, epochs)
        lines += [
            "",
            f"## {name} (teachers: " + ", ".join(f"{k} {v:.1%}" for k, v in accuracy.items()) + ")",
            "",
            markdown.table([header, "test accuracy"], summary(results)),
        ]
        print("\n".join(lines[-3:]), flush=True)
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
