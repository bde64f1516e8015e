"""Speed protocol: epoch time of distillation implementations, round-robin in one run.

Two teachers (digits: MLP 64-1024-1024-1024-10, 2.2M parameters, student
64-32-10; MNIST-1D: the quality benchmark's CNN, student 40-32-32-10) at batch
64 and 256. For each, the median epoch time (an epoch timer inside `fit`,
epochs 2-5 of 5-epoch fits, the implementations taking turns for several
rounds so that drifts of the machine hit all alike) of:

- S: plain student training on the arrays; S (tf.data): the same from a cached
  `tf.data` pipeline, reshuffled every epoch; S (stored pipeline): the same from
  `load_teacher_labels`' pipeline, its labels only (the stored row's baseline: the
  same records read and parsed); T: the teacher's inference pass alone;
- keras-distill with in-memory arrays (the teacher's outputs computed once per
  fit, the default), with the live teacher (`cache_teacher_outputs=False`),
  with `jit_compile=True` (live), and from stored outputs (`load_teacher_labels`);
- Keras' `keras.distillation.Distiller` (LogitsDistillation with a KLDivergence()
  instance) and the keras.io example;
- the floor: Keras' own train step with CE + T**2-scaled KL on the cached logits
  written out by hand (what any distillation step must compute);

as ratios to S and to S + T; and each compiled train step alone on one batch
(without Keras' input pipeline, whose per-fit speed varies). Also the whole
`fit` of 60 epochs (teacher pass included), the peak resident memory of a
cached and a live fit (each in a fresh subprocess), and every student's test
accuracy after the timing.

`--quick` measures MNIST-1D at batch 64 and 256 only (3 rounds, no whole fits), and every run
ends with the targets' check: the live teacher at most 1.0 x `keras.distillation.Distiller`, the
in-memory default at most 1.15 x a plain student epoch, stored outputs at most 1.05 x a plain
student epoch from the same `tf.data` pipeline (MNIST-1D epoch medians, this run); the script
exits with status 1 when one misses its target.

Usage: python benchmarks/speed_benchmark.py [--quick] [--rounds N] [--steps-only]
       [--only TASK:BATCH] [--out FILE]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import EpochTimer, write_report  # noqa: E402

import keras_distill as kd  # noqa: E402
from keras_distill._src.studies.datasets import load_digits, load_mnist1d  # noqa: E402
from keras_distill._src.studies.demo import teacher_cnn  # noqa: E402
from keras_distill._src.utils import markdown  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
IN_MEMORY = "keras-distill, in memory (outputs once per fit)"
FLOOR = "hand-written Keras step, CE + KL on the cached logits (the floor)"
STORED_BASELINE = "S (stored pipeline)"
TEMPERATURE, ALPHA = 2.0, 0.5


class KerasIoDistiller(keras.Model):
    """The keras.io example's Distiller (Keras 3 version), T**2-scaled KL."""

    def __init__(self, student, teacher):
        super().__init__()
        self.teacher, self.student = teacher, student

    def compile(
        self, optimizer, metrics, student_loss_fn, distillation_loss_fn, alpha, temperature
    ):
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


class HandWritten(keras.Model):
    """The floor: Keras' own `train_step`, CE + T**2-scaled KL on cached logits, nothing else."""

    def __init__(self, student):
        super().__init__()
        self.student = student

    def call(self, x):
        return self.student(x)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        ops = keras.ops
        hard = ops.mean(LOSS.call(y["labels"], y_pred))
        teacher = ops.log_softmax(y["teacher_logits"] / TEMPERATURE)
        student = ops.log_softmax(y_pred / TEMPERATURE)
        soft = ops.mean(ops.sum(ops.exp(teacher) * (teacher - student), -1)) * TEMPERATURE**2
        return ALPHA * hard + (1 - ALPHA) * soft


def mlp(inputs, hidden, seed):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((inputs,))]
    layers += [keras.layers.Dense(units, activation="relu") for units in hidden]
    return keras.Sequential(layers + [keras.layers.Dense(10)])


def tasks():
    digits, mnist1d = load_digits(), load_mnist1d()
    return {
        "digits": (digits, lambda: mlp(64, [1024, 1024, 1024], 0), lambda: mlp(64, [32], 1)),
        "MNIST-1D": (mnist1d, lambda: teacher_cnn(0), lambda: mlp(40, [32, 32], 1)),
    }


def implementations(teacher, student, data, stored, batch):
    """name -> (compiled model, fit inputs as keyword arguments)."""
    arrays = dict(x=data.x_train, y=data.y_train, batch_size=batch)
    pipeline = tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
    pipeline = pipeline.cache().shuffle(len(data.x_train)).batch(batch).prefetch(2)  # reshuffled

    def compiled(model, **options):
        model.compile(keras.optimizers.Adam(1e-3), LOSS, metrics=["accuracy"], **options)
        return model

    def ours(**options):
        return kd.Distiller(teacher, student(), temperature=TEMPERATURE, alpha=ALPHA, **options)

    builtin = keras.distillation.Distiller(
        teacher=teacher,
        student=student(),
        student_loss_weight=ALPHA,
        distillation_losses=keras.distillation.LogitsDistillation(
            temperature=TEMPERATURE, loss=keras.losses.KLDivergence()
        ),
    )
    stored_pipeline = kd.load_teacher_labels(stored, batch_size=batch, shuffle=len(data.x_train))
    logits = teacher.predict(data.x_train, batch_size=1024, verbose=0)
    floor = HandWritten(student())
    floor.compile(keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    kerasio = KerasIoDistiller(student(), teacher)
    kerasio.compile(
        keras.optimizers.Adam(1e-3),
        ["accuracy"],
        LOSS,
        keras.losses.KLDivergence(),
        ALPHA,
        TEMPERATURE,
    )
    return {
        "S: plain student": (compiled(student()), arrays),
        "S (tf.data)": (compiled(student()), dict(x=pipeline)),
        IN_MEMORY: (compiled(ours()), arrays),
        FLOOR: (floor, dict(arrays, y={"labels": data.y_train, "teacher_logits": logits})),
        "keras-distill, live teacher": (compiled(ours(cache_teacher_outputs=False)), arrays),
        "keras-distill, live, jit_compile=True": (
            compiled(ours(cache_teacher_outputs=False), jit_compile=True),
            arrays,
        ),
        "keras-distill, stored outputs": (
            compiled(kd.Distiller(None, student(), temperature=TEMPERATURE, alpha=ALPHA)),
            dict(x=stored_pipeline),
        ),
        STORED_BASELINE: (
            compiled(student()),
            dict(x=stored_pipeline.map(lambda x, targets: (x, targets["labels"]))),
        ),
        "keras.distillation.Distiller": (compiled(builtin), arrays),
        "keras.io example": (kerasio, arrays),
    }


def teacher_pass(teacher, data, batch):
    forward = tf.function(lambda x: teacher(x, training=False))
    batches = tf.data.Dataset.from_tensor_slices(data.x_train).batch(batch).cache()

    def run():
        for x in batches:
            forward(x)

    return run


FIT_EPOCHS = 5  # per timed fit; the first (tracing) is not timed
TARGET_TASK = "MNIST-1D"
# (row, the row it is compared with, the largest ratio allowed, a row whose ratio to the same
# reference is printed beside it or None) of the epoch medians; the floor is what any step from
# cached logits costs
TARGETS = (
    ("keras-distill, live teacher", "keras.distillation.Distiller", 1.0, None),
    (IN_MEMORY, "S: plain student", 1.15, FLOOR),
    ("keras-distill, stored outputs", STORED_BASELINE, 1.05, None),
)


def target_lines(batch, samples):
    """One line per target for this setting's epoch medians, and whether all were met."""
    medians = {
        name: float(np.median([t for fit in fits for t in fit])) for name, fits in samples.items()
    }
    lines, met = [], True
    for row, reference, limit, context in TARGETS:
        ratio = medians[row] / medians[reference]
        met = met and ratio <= limit
        verdict = "met" if ratio <= limit else "MISSED"
        beside = (
            "" if context is None else f"; {context}: {medians[context] / medians[reference]:.3f}"
        )
        lines.append(
            f"- batch {batch}: {row} / {reference} = {ratio:.3f} (target <= {limit:.2f}): {verdict}"
            + beside
        )
    return lines, met


def round_robin(runs, rounds):
    """Every entry's times, a list per fit; entries take turns, one fit each per round."""
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            times[name].append(run())
    return times


def fit_epochs(model, inputs):
    def run():
        timer = EpochTimer()
        model.fit(**inputs, epochs=FIT_EPOCHS, verbose=0, callbacks=[timer])
        return timer.times[1:]

    return run


def timed(function):
    def run():
        function()  # warm, then time
        started = time.perf_counter()
        function()
        return [time.perf_counter() - started]

    return run


STEP_CALLS = 300  # per timing of the compiled train step alone


def compiled_step(model, batch):
    """Seconds per call of `model.train_step` compiled as `fit` does, on one fixed batch."""
    step = tf.function(model.train_step)
    step(batch)  # traced once

    def run():
        started = time.perf_counter()
        for _ in range(STEP_CALLS):
            step(batch)
        return [(time.perf_counter() - started) / STEP_CALLS]

    return run


def step_runs(entries, data, batch):
    """The compiled steps worth timing alone (no data pipeline), each on the batch it receives."""
    x, y = data.x_train[:batch], data.y_train[:batch]
    plain = (x, y)
    cached = (x, {"labels": y, "teacher_logits": entries[FLOOR][1]["y"]["teacher_logits"][:batch]})
    stored = next(iter(entries["keras-distill, stored outputs"][1]["x"]))
    batches = {
        "S: plain student": plain,
        FLOOR: cached,
        IN_MEMORY: cached,
        "keras-distill, stored outputs": stored,
        "keras-distill, live teacher": plain,
        "keras.distillation.Distiller": plain,
        "keras.io example": plain,
    }
    return {
        name: compiled_step(entries[name][0], tf.nest.map_structure(tf.convert_to_tensor, b))
        for name, b in batches.items()
    }


MEMORY = """
import os, resource, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
sys.path.insert(0, sys.argv[1])
import speed_benchmark as sb
data, teacher, student = sb.tasks()[sys.argv[2]]
model = teacher()
model.compile("adam", sb.LOSS)
model.fit(data.x_train, data.y_train, epochs=1, verbose=0)
distiller = sb.kd.Distiller(model, student(), cache_teacher_outputs=sys.argv[3] == "cached")
distiller.compile("adam", sb.LOSS)
distiller.fit(data.x_train, data.y_train, epochs=3, batch_size=64, verbose=0)
print("PEAK", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_memory(task):
    """Peak resident memory (MiB) of a cached and of a live 3-epoch fit, fresh processes."""
    peaks = {}
    for mode in ("cached", "live"):
        result = subprocess.run(
            [sys.executable, "-c", MEMORY, os.path.dirname(__file__), task, mode],
            capture_output=True,
            text=True,
            timeout=900,
        )
        line = [line for line in result.stdout.splitlines() if line.startswith("PEAK")]
        peaks[mode] = int(line[0].split()[1]) / 1024 if line else float("nan")
    return peaks


def whole_fit(teacher, student, data, stored, epochs):
    """Seconds of one `fit` of `epochs` epochs at batch 64, the teacher pass included."""
    seconds = {}
    for name, options in (("in memory", {}), ("live", {"cache_teacher_outputs": False})):
        model = kd.Distiller(teacher, student(), **options)
        model.compile(keras.optimizers.Adam(1e-3), LOSS)
        started = time.perf_counter()
        model.fit(data.x_train, data.y_train, batch_size=64, epochs=epochs, verbose=0)
        seconds[name] = time.perf_counter() - started
    started = time.perf_counter()
    kd.label_with_teacher(teacher, (data.x_train, data.y_train), stored + "-fit", verbose=0)
    model = kd.Distiller(None, student())
    model.compile(keras.optimizers.Adam(1e-3), LOSS)
    model.fit(
        kd.load_teacher_labels(stored + "-fit", batch_size=64, shuffle=len(data.x_train)),
        epochs=epochs,
        verbose=0,
    )
    seconds["labelled once + stored"] = time.perf_counter() - started
    return seconds


def setting(task, batch, work):
    """The data, the trained teacher and every implementation of one task and batch size."""
    data, make_teacher, student = tasks()[task]
    teacher = make_teacher()
    teacher.compile(keras.optimizers.Adam(1e-3), LOSS)
    teacher.fit(data.x_train, data.y_train, epochs=10, batch_size=64, verbose=0)
    stored = os.path.join(work, f"{task}-{batch}")
    kd.label_with_teacher(teacher, (data.x_train, data.y_train), stored, verbose=0)
    return data, teacher, implementations(teacher, student, data, stored, batch)


def measure_steps(task, batch, rounds, work):
    """Only the compiled steps (`--steps-only`); each model is fit for an epoch first."""
    data, teacher, entries = setting(task, batch, work)
    for model, inputs in entries.values():
        model.fit(**inputs, epochs=1, verbose=0)
    return teacher, round_robin(step_runs(entries, data, batch), 2 * rounds)


def measure(task, batch, rounds, work):
    data, teacher, entries = setting(task, batch, work)
    runs = {"T: teacher pass": timed(teacher_pass(teacher, data, batch))}
    runs.update({name: fit_epochs(model, inputs) for name, (model, inputs) in entries.items()})
    times = round_robin(runs, rounds)
    accuracy = {}
    for name, (model, _) in entries.items():
        predictions = model.predict(data.x_test, batch_size=1024, verbose=0)
        accuracy[name] = float(np.mean(predictions.argmax(-1) == data.y_test))
    steps = round_robin(step_runs(entries, data, batch), 2 * rounds)
    return teacher, times, accuracy, steps


def table(samples, accuracy):
    """Median epoch time, its ratios, its spread, and the fastest fit's median."""
    epochs = {name: [t for fit in fits for t in fit] for name, fits in samples.items()}
    times = {name: float(np.median(values)) for name, values in epochs.items()}
    fastest = {name: min(float(np.median(fit)) for fit in fits) for name, fits in samples.items()}
    s, t = times["S: plain student"], times["T: teacher pass"]
    spread = {
        name: float(np.subtract(*np.percentile(values, [75, 25]))) / times[name]
        for name, values in epochs.items()
    }
    rows = [
        [
            name,
            f"{seconds * 1000:.1f} ms",
            f"±{spread[name] / 2:.0%}",
            f"{seconds / s:.2f}",
            f"{seconds / (s + t):.2f}",
            f"{fastest[name] / fastest['S: plain student']:.2f}",
            f"{accuracy[name]:.1%}" if name in accuracy else "",
        ]
        for name, seconds in times.items()
    ]
    header = [
        "",
        "epoch (median)",
        "half IQR",
        "/ S",
        "/ (S + T)",
        "/ S, fastest fits",
        "test accuracy",
    ]
    return markdown.table(header, rows)


def step_table(samples):
    """The compiled step alone: median time per call and its ratio to the plain student's."""
    times = {name: float(np.median(fits)) for name, fits in samples.items()}
    spread = {
        name: float(np.subtract(*np.percentile(fits, [75, 25]))) / times[name]
        for name, fits in samples.items()
    }
    s = times["S: plain student"]
    rows = [
        [name, f"{seconds * 1e6:.0f} us", f"±{spread[name] / 2:.0%}", f"{seconds / s:.2f}"]
        for name, seconds in times.items()
    ]
    return markdown.table(["compiled step alone", "per call (median)", "half IQR", "/ S"], rows)


def steps_report(rounds, work):
    """The `--steps-only` report: each setting's compiled-step table."""
    cpus = sorted(os.sched_getaffinity(0))
    lines = [
        "# Speed benchmark: the compiled train steps alone",
        "",
        f"Command: `python benchmarks/speed_benchmark.py --steps-only --rounds {rounds}`, on "
        f"CPUs {cpus} of {os.cpu_count()} (one CPU, e.g. `taskset -c 1`, makes these timings "
        f"several times quieter). TensorFlow {tf.__version__}, Keras {keras.__version__}; "
        f"{STEP_CALLS} calls per timing, {2 * rounds} timings taking turns, on one fixed batch.",
    ]
    for task in tasks():
        for batch in (64, 256):
            teacher, steps = measure_steps(task, batch, rounds, work)
            lines += [
                "",
                f"## {task}, teacher {teacher.count_params():,} parameters, batch {batch}",
                "",
                step_table(steps),
            ]
            print("\n".join(lines[-3:]), flush=True)
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--out", help="default: benchmarks/results/speed.md (speed_quick.md with --quick)"
    )
    parser.add_argument("--rounds", type=int, help="rounds of fits (3 quick, 16 full)")
    parser.add_argument(
        "--steps-only",
        action="store_true",
        help="only the compiled steps (e.g. under `taskset -c 1`)",
    )
    parser.add_argument("--only", help="one setting, TASK:BATCH (e.g. MNIST-1D:64), no whole fits")
    args = parser.parse_args()
    rounds, epochs = (3, 10) if args.quick else (16, 60)
    name = "speed_quick.md" if args.quick else "speed.md"
    args.out = args.out or os.path.join(os.path.dirname(__file__), "results", name)
    rounds = args.rounds or rounds
    work = tempfile.mkdtemp()
    if args.steps_only:
        return write_report(steps_report(rounds, work), args.out)
    lines = [
        f"# Speed benchmark ({'quick' if args.quick else 'full'} run)",
        "",
        f"Command: `{' '.join(['python benchmarks/speed_benchmark.py', *sys.argv[1:]])}`. "
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, TensorFlow {tf.__version__}, "
        f"Keras {keras.__version__}. T = {TEMPERATURE:g}, alpha = {ALPHA:g}. Epoch time: median "
        f"of epochs 2-{FIT_EPOCHS} of {FIT_EPOCHS}-epoch fits, {rounds} rounds taking turns "
        f"({(FIT_EPOCHS - 1) * rounds} epochs per row; half IQR: half the interquartile range "
        f"as a share of the median); accuracy after the {FIT_EPOCHS * rounds} epochs. "
        "Keras' `fit` on arrays is fast in some fits and slow in others (its input pipeline, "
        "the same for S and the cached rows), so '/ S, fastest fits' also compares the fastest "
        "fit's median of each row. Second table of each setting: the compiled train step alone "
        f"on one fixed batch ({STEP_CALLS} calls per timing, {2 * rounds} timings taking turns), "
        "which is what the library itself adds, without the input pipeline.",
    ]
    checks, all_met = [], True
    for task in tasks():
        if args.quick and task != TARGET_TASK:
            continue
        for batch in (64, 256):
            if args.only and args.only != f"{task}:{batch}":
                continue
            teacher, times, accuracy, steps = measure(task, batch, rounds, work)
            if task == TARGET_TASK:
                met_lines, met = target_lines(batch, times)
                checks += met_lines
                all_met = all_met and met
            lines += [
                "",
                f"## {task}, teacher {teacher.count_params():,} parameters, batch {batch}",
                "",
                table(times, accuracy),
                "",
                step_table(steps),
            ]
            print("\n".join(lines[-5:]), flush=True)
        if args.only or args.quick:
            continue
        data, _, student = tasks()[task]
        seconds = whole_fit(teacher, student, data, os.path.join(work, task), epochs)
        peaks = peak_memory(task)
        lines += [
            "",
            f"Whole `fit` of {epochs} epochs at batch 64 (teacher pass included): "
            + ", ".join(f"{name} {value:.1f} s" for name, value in seconds.items())
            + f". Peak resident memory of a 3-epoch fit: in memory {peaks['cached']:,.0f} "
            f"MiB, live {peaks['live']:,.0f} MiB.",
        ]
        print(json.dumps({"whole_fit": seconds, "memory": peaks}), flush=True)
    if checks:
        lines += ["", f"## Targets ({TARGET_TASK}, epoch medians of this run)", "", *checks]
    write_report(lines, args.out)
    if not all_met:
        sys.exit(1)


if __name__ == "__main__":
    main()
