"""Beam protocol: labelling throughput of the Beam DirectRunner against the single-process path.

Two Keras teachers label the digits training set tiled to the given sizes, in shards of 2,000:
the digits MLP 64-1024-1024-1024-10 (2.2M parameters) and a teacher about ten times slower per
example (64-3200-3200-3200-10, 20.7M parameters). Each is run with `label_with_teacher` in this
process, and with `keras_distill._src.labelling.beam.label` on the DirectRunner with 1 worker (in
memory) and with 2 worker processes (multi_processing). Examples per second include pipeline
start-up (worker processes import TensorFlow and load the model). The Beam path carries one
element per shard (a `ShardChunk`), so its cost per example is the teacher's.

Usage: python benchmarks/beam_benchmark.py [--quick] [--pieces fast,fast-large,slow]
    [--out benchmarks/results/beam.md]
(`--pieces` runs part of the table, to keep each run short on a shared machine; the report
then holds only those rows.)

`--inputs` instead compares the inputs a cluster user has, with the 2.2M teacher on 100,000
labelled examples and 1 worker: arrays, a `tf.data` dataset of batches and TFRecord files
(`beam.TFRecordInputs`), against `label_with_teacher` on the arrays; all must write the same
shards (report: `benchmarks/results/beam_inputs.md`).
"""

import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402
from common import mlp, parser, provenance, write_report  # noqa: E402

import keras_distill as kd  # noqa: E402
from keras_distill._src.studies.datasets import load_digits  # noqa: E402
from keras_distill._src.utils import markdown  # noqa: E402
from keras_distill.labelling import beam as kbeam  # noqa: E402

SHARD = 2_000
RUNNERS = {
    "label_with_teacher (one process)": None,
    "Beam DirectRunner, 1 worker": PipelineOptions(direct_num_workers=1),
    "Beam DirectRunner, 2 worker processes": PipelineOptions(
        direct_num_workers=2, direct_running_mode="multi_processing"
    ),
}


def seconds_to_label(teacher, x, options) -> float:
    """Wall-clock seconds of one labelling run into a new directory."""
    path = tempfile.mkdtemp()
    started = time.perf_counter()
    if options is None:
        kd.label_with_teacher(teacher, x, path, shard_size=SHARD, verbose=0)
    else:
        kbeam.label(teacher, x, path, shard_size=SHARD, pipeline_options=options)
    return time.perf_counter() - started


def rows_of(name: str, teacher, x) -> list[list[str]]:
    """One table row per runner: teacher, size, runner, time, examples/s, ratio to one process."""
    rows, base = [], None
    for runner, options in RUNNERS.items():
        seconds = seconds_to_label(teacher, x, options)
        base = base or seconds
        rate = f"{len(x) / seconds:,.0f}"
        cells = [name, f"{len(x):,}", runner, f"{seconds:.1f} s", rate, f"{base / seconds:.2f}"]
        print(" | ".join(cells), flush=True)
        rows.append(cells)
    return rows


def tfrecords_of(x, y, folder: str) -> "kbeam.TFRecordInputs":
    """`(x, y)` written as TFRecord files of serialized tensors, and how to read them back."""
    path = os.path.join(folder, "examples.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for row, label in zip(x, y, strict=True):
            packed = np.append(row, np.float32(label)).astype("float32")
            writer.write(tf.io.serialize_tensor(packed).numpy())

    def parse(record):
        packed = tf.ensure_shape(tf.io.parse_tensor(record, tf.float32), [x.shape[1] + 1])
        return packed[:-1], tf.cast(packed[-1], tf.int64)

    return kbeam.TFRecordInputs(os.path.join(folder, "*.tfrecord"), parse)


def input_rows(teacher, x, y) -> list[list[str]]:
    """One row per input form; raises if any form writes other shards than the arrays."""
    one_worker = RUNNERS["Beam DirectRunner, 1 worker"]
    forms = {
        "label_with_teacher, arrays": lambda path: kd.label_with_teacher(
            teacher, (x, y), path, shard_size=SHARD, verbose=0
        ),
        "beam.label, arrays": (x, y),
        "beam.label, tf.data batches of 256": tf.data.Dataset.from_tensor_slices((x, y)).batch(256),
        "beam.label, TFRecordInputs": tfrecords_of(x, y, tempfile.mkdtemp()),
    }
    rows, base, shards = [], None, set()
    for name, data in forms.items():
        path, started = tempfile.mkdtemp(), time.perf_counter()
        if callable(data):
            manifest = data(path)
        else:
            manifest = kbeam.label(
                teacher, data, path, shard_size=SHARD, pipeline_options=one_worker
            )
        seconds = time.perf_counter() - started
        base = base or seconds
        shards.add(tuple(shard["sha256"] for shard in manifest["shards"]))
        cells = [name, f"{len(x):,}", f"{seconds:.1f} s", f"{len(x) / seconds:,.0f}"]
        rows.append(cells + [f"{base / seconds:.2f}"])
        print(" | ".join(rows[-1]), flush=True)
    if len(shards) != 1:
        raise AssertionError("the input forms wrote different shards")
    return rows


def write_input_report(args, digits, teacher) -> None:
    size = 100_000 // (50 if args.quick else 1)
    x = np.resize(digits.x_train, (size, 64)).astype("float32")
    y = np.resize(digits.y_train, size).astype("int64")
    rows = input_rows(teacher, x, y)
    lines = [
        "# Beam benchmark: input forms",
        "",
        f"{provenance()} The {teacher.count_params() / 1e6:.1f}M teacher, digits examples tiled, "
        f"shards of {SHARD:,}, "
        "Beam's DirectRunner with 1 worker; one run per row, start-up and staging included; every "
        "form wrote the same shards (checked). Ratio: examples/s over `label_with_teacher`.",
        "",
        markdown.table(["input", "examples", "time", "examples/s", "ratio"], rows),
    ]
    write_report(lines, args.out or "benchmarks/results/beam_inputs.md")


def main():
    arguments = parser(__doc__, None, out_help="the report (default: beam.md, beam_inputs.md)")
    arguments.add_argument("--pieces", default="fast,fast-large,slow")
    arguments.add_argument("--inputs", action="store_true", help="compare the input forms instead")
    args = arguments.parse_args()
    scale = 50 if args.quick else 1
    digits = load_digits()
    if args.inputs:
        return write_input_report(args, digits, mlp(64, [1024] * 3))
    teachers = {"fast": mlp(64, [1024] * 3), "slow": mlp(64, [3200] * 3)}
    pieces = {  # piece: (teacher, examples)
        "fast": ("fast", 100_000 // scale),
        "fast-large": ("fast", 400_000 // scale),
        "slow": ("slow", 100_000 // scale),
    }
    rows = []
    for piece in args.pieces.split(","):
        kind, size = pieces[piece]
        teacher = teachers[kind]
        name = f"{teacher.count_params() / 1e6:.1f}M"
        rows += rows_of(name, teacher, np.resize(digits.x_train, (size, 64)).astype("float32"))
    lines = [
        "# Beam benchmark",
        "",
        f"{provenance()} Pieces {args.pieces}; digits examples tiled, shards of "
        f"{SHARD:,}; one run per row, start-up included; ratio: examples/s over the one-process "
        "run of the same teacher and size.",
        "",
        markdown.table(
            ["teacher", "examples", "labelling", "time", "examples/s", "ratio"],
            rows,
        ),
    ]
    write_report(lines, args.out or "benchmarks/results/beam.md")


if __name__ == "__main__":
    main()
