"""Generation protocol: a small language model learns from a teacher's generated responses.

Task: two-digit addition as text (`"12+34="` -> `"46<end>"`, `keras_distill._src.studies.datasets.
make_addition`), exact-match accuracy of greedy decoding on held-out prompts. A teacher
(`architectures.causal_lm`, 2 blocks, width 64) is trained on its own labelled problems; the
student (1 block, width 32) has a few labelled problems and many prompts without answers, which
the teacher answers (`label_with_teacher(generate, prompts, output="sequences")`). Every
student trains for the same number of steps' worth of epochs, teacher-forced on response tokens
(`Distiller(teacher=None, student, alpha=0)`):

- labelled only: the student's labelled problems;
- + teacher (greedy): and the teacher's greedy answers to the unlabelled prompts;
- + teacher (greedy), 4 x the epochs: the same, trained as many steps as the 4-sample rows
  (which see four responses per prompt each epoch);
- + teacher, 4 samples weighted by log-prob: 4 sampled answers (T = 1) per prompt, each
  weighted by `score_weighting="softmax"` of the teacher's own log-probabilities;
- + teacher, best of 4: only the most probable of those 4 samples (`best_of_n=True`).

Usage: python benchmarks/generation_benchmark.py [--quick] [--seeds 5]
       [--out benchmarks/results/generation.md]
"""

import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from common import mean_std, parser, provenance, write_report  # noqa: E402

import keras_distill as kd  # noqa: E402
from keras_distill._src.studies import datasets  # noqa: E402
from keras_distill._src.studies.architectures import causal_lm  # noqa: E402
from keras_distill._src.teachers import generation
from keras_distill._src.utils import markdown

VOCAB, LENGTH, END = len(datasets.ADDITION_TOKENS), 12, datasets.ADDITION_END
OPTIONS = dict(vocabulary_size=VOCAB, max_length=LENGTH, verbose=0)


def oracle(prompts, answers):
    table = {tuple(p.tolist()): a for p, a in zip(prompts, answers, strict=True)}
    return lambda batch: [table[tuple(np.asarray(p).tolist())] for p in batch]


def stored(generate, prompts, **options):
    """Labels `prompts` with `generate` into a fresh directory; its path."""
    path = tempfile.mkdtemp()
    kd.label_with_teacher(
        generate, prompts, path, output="sequences", teacher_id="benchmark", **OPTIONS, **options
    )
    return path


def loaded(path, **options):
    return kd.load_teacher_labels(path, batch_size=None, **options)


def train(model, sets, epochs, seed):
    data = sets[0]
    for more in sets[1:]:
        data = data.concatenate(more)
    size = int(data.reduce(0, lambda n, _: n + 1))
    data = data.shuffle(size, seed=seed, reshuffle_each_iteration=True).batch(64)
    distiller = kd.Distiller(None, model, alpha=0.0)
    distiller.compile(
        keras.optimizers.Adam(2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    distiller.fit(data, epochs=epochs, verbose=0, shuffle=False)
    return model


def exact_match(model, prompts, answers) -> float:
    return generation.exact_match(model, prompts, answers, end_id=END)


def run_seed(seed, teacher, sizes, epochs):
    labelled, unlabelled, held_out = sizes
    pool, answers = datasets.make_addition(labelled + unlabelled + held_out, seed=100 + seed)
    test = (pool[-held_out:], answers[-held_out:])
    mine = stored(oracle(pool, answers), pool[:labelled])
    prompts = pool[labelled : labelled + unlabelled]
    greedy = stored(generation.keras_generator(teacher, 4, end_id=END), prompts)
    sampled = stored(
        generation.keras_generator(teacher, 4, end_id=END, temperature=1.0, seed=seed),
        prompts,
        num_samples=4,
    )
    runs = {
        "labelled only": [loaded(mine)],
        "+ teacher (greedy)": [loaded(mine), loaded(greedy)],
        "+ teacher (greedy), 4 x the epochs": [loaded(mine), loaded(greedy)],
        "+ teacher, 4 samples weighted by log-prob": [
            loaded(mine),
            loaded(sampled, score_weighting="softmax"),
        ],
        "+ teacher, best of 4": [loaded(mine), loaded(sampled, best_of_n=True)],
    }
    return {
        name: exact_match(
            train(
                causal_lm(VOCAB, LENGTH, blocks=1, width=32, seed=seed, name="student"),
                sets,
                epochs * (4 if "4 x" in name else 1),
                seed,
            ),
            *test,
        )
        for name, sets in runs.items()
    }


def main():
    arguments = parser(__doc__, "benchmarks/results/generation.md")
    arguments.add_argument("--seeds", type=int, default=5)
    args = arguments.parse_args()
    seeds, epochs = ([0], 3) if args.quick else (list(range(args.seeds)), 40)
    sizes = (200, 2000, 500)
    started = time.perf_counter()
    teacher_prompts, teacher_answers = datasets.make_addition(3000, seed=7)
    teacher = train(
        causal_lm(VOCAB, LENGTH, blocks=2, width=64, seed=0, name="teacher"),
        [loaded(stored(oracle(teacher_prompts, teacher_answers), teacher_prompts))],
        2 * epochs,
        0,
    )
    check, check_answers = datasets.make_addition(500, seed=8, exclude=teacher_prompts)
    teacher_accuracy = exact_match(teacher, check, check_answers)
    results = [run_seed(seed, teacher, sizes, epochs) for seed in seeds]
    rows = []
    for key in results[0]:
        values = np.array([r[key] for r in results])
        base = np.array([r["labelled only"] for r in results])
        rows.append([key, mean_std(values), f"{100 * (values.mean() - base.mean()):+.1f}"])
    lines = [
        "# Generation benchmark",
        "",
        f"{provenance()} {len(seeds)} seeds, {epochs} epochs per student (teacher "
        f"{2 * epochs}, on 3,000 labelled problems), Adam 2e-3, batch 64. The student has "
        f"{sizes[0]} labelled problems and {sizes[1]:,} prompts without answers; exact match "
        f"of greedy decoding on {sizes[2]} held-out problems, in %. Teacher (2 blocks, width 64, "
        f"{teacher.count_params():,} parameters): {100 * teacher_accuracy:.1f}% on held-out "
        f"problems; student: 1 block, width 32. Total {time.perf_counter() - started:.0f} s.",
        "",
        markdown.table(["student trained on", "exact match", "vs labelled only"], rows),
    ]
    print("\n".join(lines), flush=True)
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
