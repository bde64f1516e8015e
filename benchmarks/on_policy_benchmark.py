"""On-policy distillation (GKD) vs offline distillation of a small language model, same steps.

Task: two-digit addition as text (`"12+34="` -> `"46<end>"`, `keras_distill._src.studies.datasets.
make_addition`); exact match of greedy decoding on 500 held-out problems. The teacher
(`architectures.causal_lm`, 2 blocks, width 64) learns from 3,000 labelled problems; each
student (1 block, width 32) has 200 labelled problems and 2,000 prompts without answers, and
trains for the same number of optimizer steps (batch 64, Adam 2e-3) in every row:

- labelled only: cross-entropy on the 200 labelled answers;
- sequence-level KD: cross-entropy on those and the teacher's greedy answers to the 2,000 prompts;
- offline top-k token KD: forward KL to the teacher's top-4 next tokens (and the remaining mass)
  at every position of those same fixed answers (`OnPolicyDistiller` with `lmbda=0`);
- GKD, lmbda 0.5 / 1, beta 0 / 0.5 / 1: `OnPolicyDistiller`; on-policy batches are the student's
  samples (T = 1), off-policy ones the fixed answers above; the teacher's full distribution.

Teacher forward passes are batched passes (64 sequences): greedy labelling costs one per new
token (4) per batch, scoring a batch one. Decoding speed: tokens/s of greedy decoding with and
without the key/value cache (`architectures.causal_lm`s and keras-hub `GPT2CausalLM`s of the
teacher's and the student's sizes, random weights, 64 prompts of 8 tokens, 32 and 128 new tokens).

The rows run in pieces (so others can use the machine between them): `--seed S --rows a,b`
stores each result in `--parts`; `--speed` measures decoding; `--report` writes the results
file from the stored parts. `main` with no piece option runs everything.

Usage: python benchmarks/on_policy_benchmark.py [--quick] [--seeds 5] [--steps 1200]
       [--seed S --rows ROWS | --speed | --report] [--out benchmarks/results/on_policy.md]
"""

import json
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import mean_std, parser, provenance, write_report  # noqa: E402

from keras_distill._src.studies import datasets  # noqa: E402
from keras_distill._src.studies.architectures import causal_lm  # noqa: E402
from keras_distill._src.teachers import cached_decoding as decoding  # noqa: E402
from keras_distill._src.training.on_policy import OnPolicyDistiller  # noqa: E402
from keras_distill._src.utils import markdown  # noqa: E402

VOCAB, LENGTH, END, PROMPT, ANSWER = len(datasets.ADDITION_TOKENS), 12, datasets.ADDITION_END, 6, 4
BATCH, TOP_K, SIZES = 64, 4, (200, 2000, 500)
GKD_ROWS = {f"GKD lmbda {lm} beta {b}": (lm, b) for lm in (0.5, 1.0) for b in (0.0, 0.5, 1.0)}
SPEED_COMMAND = "python benchmarks/on_policy_benchmark.py --speed"
ROWS = ["labelled only", "sequence-level KD", "offline top-k token KD", *GKD_ROWS]


NOTES = [
    "## Reading",
    "",
    "- Cost in teacher calls: an on-policy row scores every batch with the teacher, one batched "
    "pass per optimizer step (1,200 here), plus the 128 passes of the greedy answers its "
    "off-policy batches use; sequence-level KD needs only those 128. Each on-policy step also "
    "samples 4 tokens from the student: a row's wall time is 3-7 x sequence-level KD's here "
    "(the wall times are noisy: 2 cores shared with other jobs).",
    "- The offline top-k row scores the same fixed answers live through `OnPolicyDistiller` "
    "(`lmbda=0`, a top-4 teacher callable); stored once, as `label_with_teacher(top_k=...)` "
    "does, it would cost 35 passes (2,200 prompts / 64) instead of 1,200.",
    "- Every student starts from random weights, as the offline rows do; the GKD paper starts "
    "from a supervised (SFT) student. With `lmbda=1` a random student's first samples are noise, "
    "and some seeds did not recover within the step budget (see the per-seed values).",
    "- When on-policy pays: when the student, at inference, must continue its own prefixes "
    "for long and errors compound (long answers), and when the teacher's full or top-k "
    "distribution is cheap to get per step. On 4-token answers the exposure bias is small, "
    "which is where this benchmark sits.",
]


def padded(rows, width):
    out = np.zeros((len(rows), width), "int32")
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def teacher_model(epochs, path):
    """The teacher, trained once and kept in `path` for the later pieces."""
    teacher = causal_lm(VOCAB, LENGTH, blocks=2, width=64, seed=0, name="teacher")
    if path.exists():
        teacher.load_weights(path)
        return teacher
    prompts, answers = datasets.make_addition(3000, seed=7)
    cross_entropy(teacher, prompts, answers, epochs * -(-3000 // BATCH), seed=0)
    teacher.save_weights(path)
    return teacher


def cross_entropy(model, prompts, answers, steps, seed):
    """Teacher-forced cross-entropy on the answer tokens, `steps` optimizer steps."""
    sequences = padded(
        [np.concatenate([p, a]) for p, a in zip(prompts, answers, strict=True)], LENGTH + 1
    )
    weights = np.zeros((len(prompts), LENGTH), "float32")
    for i, p in enumerate(prompts):
        weights[i, len(p) - 1 : len(p) - 1 + len(answers[i])] = 1.0
    data = tf.data.Dataset.from_tensor_slices((sequences[:, :-1], sequences[:, 1:], weights))
    data = data.shuffle(len(prompts), seed=seed).repeat().batch(BATCH)
    keras.utils.set_random_seed(seed)
    model.compile(
        keras.optimizers.Adam(2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    return model


def greedy(model, prompts):
    return decoding.TokenDecoder(model, ANSWER, end_id=END)(padded(prompts, PROMPT)).responses()


def exact_match(model, prompts, answers) -> float:
    responses = greedy(model, prompts)
    return float(np.mean([np.array_equal(r, a) for r, a in zip(responses, answers, strict=True)]))


def top_k_scorer(teacher):
    """The teacher as a callable giving its top-k next-token log-probabilities."""
    log_probs = tf.function(lambda t: tf.nn.log_softmax(decoding.lm_logits(teacher, t)))

    def score(tokens):
        values, ids = tf.math.top_k(log_probs(tokens), TOP_K)
        return values.numpy(), ids.numpy()

    score.vocabulary_size = VOCAB
    return score


def distil(teacher, prompts, answers, steps, seed, lmbda, beta):
    """An `OnPolicyDistiller` run of `steps` steps; (student, teacher forward passes)."""
    student = causal_lm(VOCAB, LENGTH, blocks=1, width=32, seed=seed, name="student")
    distiller = OnPolicyDistiller(
        teacher, student, lmbda, beta, max_new_tokens=ANSWER, end_id=END, seed=seed
    )
    distiller.compile(keras.optimizers.Adam(2e-3))
    data = tf.data.Dataset.from_tensor_slices((padded(prompts, PROMPT), padded(answers, ANSWER)))
    data = data.shuffle(len(prompts), seed=seed).repeat().batch(BATCH, drop_remainder=True)
    distiller.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    return student, distiller.teacher_forward_passes


def run_row(row, seed, teacher, steps):
    """One row at one seed: exact match, seconds, teacher forward passes."""
    labelled, unlabelled, held_out = SIZES
    pool, answers = datasets.make_addition(sum(SIZES), seed=100 + seed)
    test = (pool[-held_out:], answers[-held_out:])
    prompts = pool[: labelled + unlabelled]
    started = time.perf_counter()
    teacher_answers = greedy(teacher, prompts[labelled:])
    fixed = answers[:labelled] + teacher_answers
    labelling = ANSWER * -(-unlabelled // BATCH)
    if row == "labelled only":
        student = causal_lm(VOCAB, LENGTH, blocks=1, width=32, seed=seed, name="student")
        model, passes = (
            cross_entropy(student, prompts[:labelled], answers[:labelled], steps, seed),
            0,
        )
    elif row == "sequence-level KD":
        student = causal_lm(VOCAB, LENGTH, blocks=1, width=32, seed=seed, name="student")
        model, passes = cross_entropy(student, prompts, fixed, steps, seed), labelling
    elif row == "offline top-k token KD":
        model, passes = distil(top_k_scorer(teacher), prompts, fixed, steps, seed, 0.0, 0.0)
        passes += labelling
    else:
        model, passes = distil(teacher, prompts, fixed, steps, seed, *GKD_ROWS[row])
        passes += labelling
    seconds = time.perf_counter() - started
    return {"exact_match": exact_match(model, *test), "seconds": seconds, "teacher_passes": passes}


def speed_row(label, lm, prompts, new_tokens) -> list[str]:
    """Tokens/s of greedy decoding of `lm` with and without the cache, and whether they agree."""
    speeds, decoded = {}, {}
    for cached in (True, False):
        decoder = decoding.TokenDecoder(lm, new_tokens, use_cache=cached)
        decoder(prompts)  # traces the loop
        started = time.perf_counter()
        decoded[cached] = decoder(prompts).tokens
        speeds[cached] = BATCH * new_tokens / (time.perf_counter() - started)
    return [
        label,
        str(new_tokens),
        f"{speeds[True]:,.0f}",
        f"{speeds[False]:,.0f}",
        f"{speeds[True] / speeds[False]:.1f} x",
        "yes" if np.array_equal(decoded[True], decoded[False]) else "NO",
    ]


def decoding_speed() -> list[list[str]]:
    """Tokens/s of greedy decoding with and without the cache, for 32 and 128 new tokens."""
    rows = []
    prompts = np.random.default_rng(0).integers(1, VOCAB, (BATCH, 8)).astype("int32")
    for name, blocks, width in (("teacher size", 2, 64), ("student size", 1, 32)):
        models = {
            "`causal_lm`": causal_lm(VOCAB, 8 + 128, blocks, width, heads=4, seed=0),
            "`GPT2CausalLM`": decoding.small_gpt2_lm(VOCAB, 8 + 128, blocks, width, heads=4),
        }
        for family, lm in models.items():
            label = f"{family}, {name} ({blocks} blocks, width {width})"
            rows += [speed_row(label, lm, prompts, new) for new in (32, 128)]
    return rows


def piece_path(parts: pathlib.Path, row: str, seed: int) -> pathlib.Path:
    return parts / f"{row.replace(' ', '_')}__seed{seed}.json"


def run_pieces(args, parts: pathlib.Path) -> None:
    teacher = teacher_model(args.teacher_epochs, parts / "teacher.weights.h5")
    rows = ROWS if args.rows == "all" else args.rows.split(",")
    for row in rows:
        if piece_path(parts, row, args.seed).exists():
            continue  # done by an earlier piece
        result = run_row(row, args.seed, teacher, args.steps)
        piece_path(parts, row, args.seed).write_text(json.dumps(result))
        print(row, args.seed, result, flush=True)


def row_scores(parts: pathlib.Path) -> dict:
    """Each row's exact matches (%) over the seeds stored so far."""
    scores = {}
    for row in ROWS:
        found = parts.glob(f"{row.replace(' ', '_')}__seed*.json")
        values = [100 * json.loads(p.read_text())["exact_match"] for p in found]
        if values:
            scores[row] = values
    return scores


def plot(parts: pathlib.Path, path: pathlib.Path) -> None:
    """Exact match per row: the mean, and each seed as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = row_scores(parts)
    figure, axis = plt.subplots(figsize=(8, 3.8))
    for i, (row, values) in enumerate(scores.items()):
        axis.bar(i, np.mean(values), yerr=np.std(values), color="C1" if "GKD" in row else "C0")
        axis.plot([i] * len(values), values, "k.", alpha=0.6)
    axis.set_xticks(range(len(scores)), [r.replace(" beta", "\nbeta") for r in scores], fontsize=7)
    axis.set_ylabel("exact match (%)")
    axis.set_ylim(0, 100)
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def verdict(parts: pathlib.Path) -> list[str]:
    """Whether the best on-policy row beats the best offline row by 3 points beyond one std."""
    scores = {row: (np.mean(v), np.std(v)) for row, v in row_scores(parts).items()}
    offline = [r for r in ("sequence-level KD", "offline top-k token KD") if r in scores]
    online = [r for r in GKD_ROWS if r in scores]
    if not offline or not online:
        return []
    best_off = max(offline, key=lambda r: scores[r][0])
    best_on = max(online, key=lambda r: scores[r][0])
    (m_on, s_on), (m_off, s_off) = scores[best_on], scores[best_off]
    margin = (m_on - s_on) - (m_off + s_off)
    return [
        f"**Target (on-policy beats the best offline row by >= 3 points beyond one std): "
        f"{'met' if margin >= 3 else 'not met'}.** Best on-policy row: {best_on}, "
        f"{m_on:.1f} ± {s_on:.1f}; best offline row: {best_off}, {m_off:.1f} ± {s_off:.1f}; "
        f"(mean - std) of the one minus (mean + std) of the other: {margin:+.1f} points.",
    ]


def report(args, parts: pathlib.Path, speed_rows) -> list[str]:
    teacher = teacher_model(args.teacher_epochs, parts / "teacher.weights.h5")
    taught = datasets.make_addition(3000, seed=7)[0]  # the teacher's own problems
    check, check_answers = datasets.make_addition(500, seed=8, exclude=taught)
    table, seeds = [], set()
    for row in ROWS:
        found = sorted(parts.glob(f"{row.replace(' ', '_')}__seed*.json"))
        results = [json.loads(p.read_text()) for p in found]
        seeds |= {p.stem.split("__seed")[1] for p in found}
        if not results:
            continue
        em = [r["exact_match"] for r in results]
        seconds = np.mean([r["seconds"] for r in results])
        passes = int(np.mean([r["teacher_passes"] for r in results]))
        each = " / ".join(f"{100 * v:.1f}" for v in em)
        table.append([row, mean_std(em), each, f"{seconds:.0f}", f"{passes:,}"])
    return [
        "# On-policy distillation benchmark",
        "",
        *verdict(parts),
        "",
        f"{provenance()}{args.pieces} Two-digit addition; every "
        f"student (1 block, width 32) trains {args.steps} optimizer steps (batch {BATCH}, "
        "Adam 2e-3); "
        f"{SIZES[0]} labelled problems, {SIZES[1]:,} prompts without answers; exact match of "
        f"greedy decoding on {SIZES[2]} held-out problems, in %, mean ± std over seeds "
        f"{', '.join(sorted(seeds))}. Teacher (2 blocks, width 64, {args.teacher_epochs} epochs "
        f"on 3,000 problems): {100 * exact_match(teacher, check, check_answers):.1f}%. Seconds: "
        "the row's wall time (teacher labelling, training; not the evaluation). Teacher passes: "
        "batched (64 sequences) forward passes of the teacher.",
        "",
        markdown.table(
            ["student trained with", "exact match", "per seed", "seconds", "teacher passes"],
            table,
        ),
        "",
        "![exact match per row, each seed a dot](on_policy.png)",
        "",
        *NOTES,
        "",
        "## Decoding speed",
        "",
        f"Greedy decoding of {BATCH} prompts of 8 tokens with keras-hub's `GreedySampler`, "
        "compiled (`cached_decoding.TokenDecoder`); random-weight `architectures.causal_lm`s "
        "(the benchmark's models, with a context of 136 tokens) and keras-hub `GPT2CausalLM`s; "
        "tokens generated per second, the second of two calls (the first traces). "
        f"Measured by `{SPEED_COMMAND}`. Uncached, a `causal_lm` (a fixed input length) reruns "
        "its whole context of 136 positions for every token, a `GPT2CausalLM` only the tokens so "
        "far (40 for 32 new tokens): hence its larger speed-up at 32 tokens. Cached, both cost "
        "one position per token.",
        "",
        markdown.table(
            ["model", "new tokens", "cached tok/s", "uncached tok/s", "speed-up", "same tokens"],
            speed_rows,
        ),
    ]


def main():
    arguments = parser(__doc__, "benchmarks/results/on_policy.md")
    arguments.add_argument("--seeds", type=int, default=5)
    arguments.add_argument("--steps", type=int, default=1200)
    arguments.add_argument("--teacher-epochs", type=int, default=80)
    arguments.add_argument("--seed", type=int, default=None)
    arguments.add_argument("--rows", default="all")
    arguments.add_argument("--speed", action="store_true")
    arguments.add_argument("--report", action="store_true")
    arguments.add_argument("--parts", default="/tmp/keras_distill_on_policy_parts")
    args = arguments.parse_args()
    if args.quick:
        args.steps, args.teacher_epochs, args.seeds = 30, 2, 1
        args.parts += "_quick"
    args.pieces = " (Run in pieces: `--seed S` for each seed, then `--report`.)" * args.report
    parts = pathlib.Path(args.parts)
    parts.mkdir(parents=True, exist_ok=True)
    if args.seed is not None:
        return run_pieces(args, parts)
    speed_file = parts / "speed.json"
    if args.speed or not speed_file.exists():
        speed_file.write_text(json.dumps(decoding_speed()))
        if args.speed:
            return None
    if not args.report:
        for seed in range(args.seeds):
            args.seed = seed
            run_pieces(args, parts)
    write_report(report(args, parts, json.loads(speed_file.read_text())), args.out)
    plot(parts, pathlib.Path(args.out).with_suffix(".png"))
    return None


if __name__ == "__main__":
    main()
