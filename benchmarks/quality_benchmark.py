"""Quality protocol: does distillation beat the strongest scratch baseline? Offline, several seeds.

Tasks: scikit-learn digits (MLP teacher) and MNIST-1D generated offline with
`mnist1d.data.make_dataset` (CNN teacher); two student sizes each. Every
student row trains the same student for the same epochs with the same
optimizer (Adam, cosine decay, batch 128), so rows differ only in what they
learn from:

(a) full labels. Scratch three ways: no augmentation, the recommended
    augmentation without mixup, and with mixup (labels mixed alike); the best
    of the three is the *strongest scratch baseline*, against which every gain
    is measured, so augmentation alone is never credited to distillation.
    Distilled: today's default (T 1, alpha 0.5, no augmentation), function
    matching (teacher on the same augmented view, T 1, alpha 0) without and
    with input mixup, and DKD (T 4), DIST (T 1) and standardized KL (T 2),
    each with the recommended augmentation and alpha 0.
(b) label-scarce: labels for 10% of the training set, the teacher's outputs on
    all of it. Scratch on the 10% (repeated ten times, so as many steps; with
    and without augmentation, the better one counts), today's default, and
    function matching (alpha 0: it uses no label, so it is the full-label run).

Gap recovered = (distilled - best scratch) / (teacher - best scratch).

Usage:
    python benchmarks/quality_benchmark.py [--quick] [--task digits|MNIST-1D]
        [--student 0|1] [--part-dir DIR]    # runs and writes one JSON part
    python benchmarks/quality_benchmark.py --report [--part-dir DIR] [--out DIR]  # merges parts
Without --task/--report it runs everything, then writes the report.
"""

import json
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from common import label_scarce, mean_std, mlp, parser, provenance, write_report  # noqa: E402

from keras_distill import losses  # noqa: E402
from keras_distill._src.studies import recipes
from keras_distill._src.studies.datasets import load_digits, load_mnist1d  # noqa: E402
from keras_distill._src.studies.demo import teacher_cnn  # noqa: E402
from keras_distill._src.training import augment
from keras_distill._src.utils import markdown

BATCH = 128


def recommended_augmentation(input_shape, kind):
    """`kd.augment.default_augmentation` of a kind, with or without input mixup.

    Digits are flat feature vectors to the default ("features": noise, mixup); a 1-pixel
    translation of the 8x8 images cost the small students 3-8 points even from scratch
    in a first run, so it is not used. MNIST-1D inputs are signals (shift, noise, mixup).
    """

    def make(mix, seed):
        return augment.default_augmentation(input_shape, kind, seed=seed, mixup=mix)

    return make


def tasks():
    mnist1d = load_mnist1d()  # generated offline, never downloaded
    return {
        "digits": (
            load_digits(),
            lambda: mlp(64, [256, 256], 0, dropout=0.3),
            64,
            [[8], [32]],
            recommended_augmentation((64,), "features"),
        ),
        "MNIST-1D": (
            mnist1d,
            lambda: teacher_cnn(0),
            40,
            [[16], [64, 64]],
            recommended_augmentation((40,), "signal"),
        ),
    }


def rows_for(teacher, data, student, make_aug, epochs, seed):
    """Every row's test accuracy for one student size and seed."""
    common = dict(epochs=epochs, batch_size=BATCH, learning_rate=3e-3)
    scratch = dict(common, schedule="cosine")
    fm = dict(epochs=epochs, seed=seed)
    few, transfer = label_scarce(data, seed)
    runs = {
        "scratch": lambda: recipes.train_from_scratch(student(), data, **scratch),
        "scratch_aug": lambda: recipes.train_from_scratch(
            student(), data, augment=make_aug(False, seed), **scratch
        ),
        "scratch_mix": lambda: recipes.train_from_scratch(
            student(), data, augment=make_aug(True, seed), **scratch
        ),
        "default": lambda: recipes.train_distilled(teacher, student(), data, **scratch),
        "fm": lambda: recipes.train_function_matching(
            teacher, student(), data, augment=make_aug(False, seed), **fm
        ),
        "fm_mix": lambda: recipes.train_function_matching(
            teacher, student(), data, augment=make_aug(True, seed), **fm
        ),
        "dkd": lambda: recipes.train_function_matching(
            teacher,
            student(),
            data,
            augment=make_aug(True, seed),
            temperature=4.0,
            distillation_loss=losses.DecoupledKD(alpha=1.0, beta=8.0),
            **fm,
        ),
        "dist": lambda: recipes.train_function_matching(
            teacher, student(), data, augment=make_aug(True, seed), distillation_loss="dist", **fm
        ),
        "standardized": lambda: recipes.train_function_matching(
            teacher,
            student(),
            data,
            augment=make_aug(True, seed),
            temperature=2.0,
            distillation_loss="standardized_kl",
            **fm,
        ),
        "scarce_scratch": lambda: recipes.train_from_scratch(student(), few, **scratch),
        "scarce_scratch_aug": lambda: recipes.train_from_scratch(
            student(), few, augment=make_aug(True, seed), **scratch
        ),
        "scarce_default": lambda: recipes.train_distilled(teacher, student(), transfer, **scratch),
    }
    # Function matching at alpha 0 uses no label: on the transfer set it is the same run as
    # "fm_mix" (same inputs, seed and steps), so that result is reused, not recomputed.
    results = {}
    for name, run in runs.items():
        started = time.perf_counter()
        results[name] = run()
        results[f"{name}_seconds"] = time.perf_counter() - started
        print(
            f"  seed {seed} {name}: {results[name]:.1%} ({results[f'{name}_seconds']:.0f} s)",
            flush=True,
        )
    results["scarce_fm"], results["scarce_fm_seconds"] = results["fm_mix"], 0.0
    return results


def run_auto(task, student_index, seeds, epochs, teacher_epochs, part_dir):
    """The recommended recipe (recipes.train_recommended): chosen on a validation split."""
    data, make_teacher, inputs, sizes, make_aug = tasks()[task]
    teacher = make_teacher()
    recipes.train_from_scratch(teacher, data, epochs=teacher_epochs)
    for index in [student_index] if student_index is not None else range(len(sizes)):
        hidden, runs = sizes[index], []
        for seed in seeds:
            accuracy, info = recipes.train_recommended(
                teacher,
                lambda seed=seed, hidden=hidden: mlp(inputs, hidden, seed),
                data,
                epochs=epochs,
                make_augment=lambda seed=seed: make_aug(False, seed),
                seed=seed,
            )
            runs.append(
                {
                    "auto": accuracy,
                    "chosen": info["chosen"],
                    "seconds": info["seconds"],
                    "validation": info["validation"],
                }
            )
            print(
                f"  seed {seed} auto: {accuracy:.1%} ({info['chosen']}, {info['seconds']:.0f} s)",
                flush=True,
            )
            path = part_dir / f"{task}-{'-'.join(map(str, hidden))}.auto"
            path.write_text(json.dumps(runs, indent=1))


def run_part(task, student_index, seeds, epochs, teacher_epochs, part_dir):
    data, make_teacher, inputs, sizes, make_aug = tasks()[task]
    teacher = make_teacher()
    teacher_accuracy = recipes.train_from_scratch(teacher, data, epochs=teacher_epochs)
    print(f"{task}: teacher {teacher.count_params():,} params, {teacher_accuracy:.1%}", flush=True)
    for index in [student_index] if student_index is not None else range(len(sizes)):
        hidden = sizes[index]
        part = {
            "task": task,
            "hidden": hidden,
            "params": mlp(inputs, hidden, 0).count_params(),
            "teacher_params": teacher.count_params(),
            "teacher": teacher_accuracy,
            "epochs": epochs,
            "seeds": list(seeds),
            "runs": [],
        }
        for seed in seeds:
            student = lambda seed=seed, hidden=hidden: mlp(inputs, hidden, seed)  # noqa: E731
            part["runs"].append(rows_for(teacher, data, student, make_aug, epochs, seed))
            path = part_dir / f"{task}-{'-'.join(map(str, hidden))}.json"
            path.write_text(json.dumps(part, indent=1))


ROWS = [
    ("scratch", "scratch, no augmentation"),
    ("scratch_aug", "scratch + augmentation"),
    ("scratch_mix", "scratch + augmentation + mixup"),
    ("default", "KD, today's default (T 1, alpha 0.5)"),
    ("fm", "function matching (T 1, alpha 0)"),
    ("fm_mix", "function matching + mixup"),
    ("dkd", "DKD + FM + mixup (T 4)"),
    ("dist", "DIST + FM + mixup (T 1)"),
    ("standardized", "standardized KL + FM + mixup (T 2)"),
]
SCRATCH = ("scratch", "scratch_aug", "scratch_mix")


def summarize(part):
    """Mean, std per row; the best scratch row; deltas and gaps against it."""
    values = {key: np.array([run[key] for run in part["runs"]]) for key in part["runs"][0]}
    best = max(SCRATCH, key=lambda key: values[key].mean())
    scarce_best = max(("scarce_scratch", "scarce_scratch_aug"), key=lambda k: values[k].mean())
    return values, best, scarce_best


def cell(values, key, base=None, teacher=None):
    text = mean_std(values[key])
    if base is not None:
        delta = 100 * (values[key].mean() - values[base].mean())
        text += f" ({delta:+.1f})"
        if teacher is not None:
            gap = (values[key].mean() - values[base].mean()) / (teacher - values[base].mean())
            text += f", gap {gap:+.2f}"
    return text


def with_auto(part, part_dir, values):
    """Adds the recommended recipe's runs (`--auto`), if they were made, to the values."""
    path = part_dir / f"{part['task']}-{'-'.join(map(str, part['hidden']))}.auto"
    if not path.exists():
        return None
    runs = json.loads(path.read_text())
    values["auto"] = np.array([run["auto"] for run in runs])
    chosen = [run["chosen"] for run in runs]
    return (
        f"{cell(values, 'auto', summarize(part)[1])}; chose "
        + ", ".join(f"{name} {chosen.count(name)}x" for name in sorted(set(chosen)))
        + f"; {np.mean([run['seconds'] for run in runs]):.0f} s"
    )


def report(part_dir, out_dir, header):
    parts = [json.loads(p.read_text()) for p in sorted(part_dir.glob("*.json"))]
    parts.sort(key=lambda p: (p["task"] != "digits", p["params"]))
    lines = list(header)
    full_rows, scarce_rows, auto_rows, plot = [], [], [], []
    for part in parts:
        values, best, scarce_best = summarize(part)
        name = f"{part['task']} {'-'.join(map(str, part['hidden']))} ({part['params']:,} params)"
        full_rows.append(
            [name]
            + [cell(values, key, None if key in SCRATCH else best) for key, _ in ROWS]
            + [best]
        )
        scarce_rows.append(
            [
                name,
                f"{100 * part['teacher']:.1f}",
                cell(values, "scarce_scratch"),
                cell(values, "scarce_scratch_aug"),
                cell(values, "scarce_default", scarce_best, part["teacher"]),
                cell(values, "fm", scarce_best, part["teacher"]),
            ]
        )
        auto = with_auto(part, part_dir, values)
        if auto:
            auto_rows.append([name, cell(values, best), auto])
        plot.append((name, values, best))
    lines += ["", "### All labels (test accuracy %, mean ± std; (delta vs strongest scratch))", ""]
    lines.append(
        markdown.table(
            ["student"] + [label for _, label in ROWS] + ["strongest scratch"], full_rows
        )
    )
    if auto_rows:
        lines += [
            "",
            "### The recommended recipe (`recipes.train_recommended`): the better of "
            "today's default and function matching on a 20% validation split, then "
            "trained on all the training data",
            "",
        ]
        header = [
            "student",
            "strongest scratch",
            "recommended (delta); choices; seconds (its three trainings)",
        ]
        lines.append(markdown.table(header, auto_rows))
    lines += ["", "### 10% of the labels + teacher outputs on all training inputs", ""]
    lines.append(
        markdown.table(
            [
                "student",
                "teacher",
                "scratch on 10%",
                "scratch on 10% + aug + mixup",
                "today's default",
                "function matching (alpha 0: no label used, the full-label run)",
            ],
            scarce_rows,
        )
    )
    seconds = {
        key: np.mean([run[f"{key}_seconds"] for p in parts for run in p["runs"]]) for key, _ in ROWS
    }
    lines += [
        "",
        "Mean seconds per run (all tasks): "
        + ", ".join(f"{key} {value:.0f}" for key, value in seconds.items())
        + ".",
    ]
    write_report(lines, out_dir / "quality.md")
    save_plot(plot, out_dir / "quality.png")


def save_plot(plot, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(plot), figsize=(4.2 * len(plot), 3.6), sharey=False)
    for ax, (name, values, best) in zip(np.atleast_1d(axes), plot, strict=True):
        keys = [key for key, _ in ROWS if key not in SCRATCH]
        deltas = [100 * (values[k].mean() - values[best].mean()) for k in keys]
        errors = [100 * values[k].std() for k in keys]
        ax.bar(range(len(keys)), deltas, yerr=errors, color=["#999"] + ["#2a7"] * (len(keys) - 1))
        ax.axhline(0, color="k", linewidth=0.8)
        ax.set_xticks(range(len(keys)), keys, rotation=45, ha="right")
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("points vs strongest scratch")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main():
    arguments = parser(__doc__, "benchmarks/results", out_help="the folder of the reports")
    arguments.add_argument("--task", choices=["digits", "MNIST-1D"])
    arguments.add_argument("--student", type=int, choices=[0, 1])
    arguments.add_argument("--report", action="store_true", help="merge the parts into the report")
    arguments.add_argument("--auto", action="store_true", help="run the recommended recipe only")
    arguments.add_argument("--part-dir", default="benchmarks/results/tmp/quality")
    args = arguments.parse_args()
    seeds = [0, 1] if args.quick else [0, 1, 2, 3, 4]
    epochs = {"digits": 20, "MNIST-1D": 20} if args.quick else {"digits": 200, "MNIST-1D": 300}
    teacher_epochs = (
        {"digits": 15, "MNIST-1D": 10} if args.quick else {"digits": 100, "MNIST-1D": 60}
    )
    part_dir, out_dir = pathlib.Path(args.part_dir), pathlib.Path(args.out)
    part_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    if not args.report:
        for task in [args.task] if args.task else list(tasks()):
            run = run_auto if args.auto else run_part
            run(task, args.student, seeds, epochs[task], teacher_epochs[task], part_dir)
    if args.report or not (args.task or args.auto):
        header = [
            f"# Quality benchmark ({'quick' if args.quick else 'full'} run)",
            "",
            f"{provenance()} (Parts run in parallel with --task/--student, merged with "
            f"--report.) {len(seeds)} seeds; student epochs {epochs}, batch {BATCH}, "
            "Adam 3e-3 with cosine decay for every row; teacher epochs "
            f"{teacher_epochs}. Test accuracy in %, mean ± std over seeds; in brackets the "
            "difference to the strongest scratch baseline (the best of the three scratch rows, "
            "same student, epochs and augmentation).",
        ]
        if not args.report:
            header.append(f"Took {(time.time() - started) / 60:.0f} min.")
        report(part_dir, out_dir if not args.quick else out_dir / "quick", header)


if __name__ == "__main__":
    main()
