"""Beam protocol: labelling throughput of the Beam DirectRunner against the single-process path.

The same Keras teacher (digits MLP 64-1024-1024-1024-10, 2.2M parameters) labels the same
examples (the digits training set tiled to 100,000) into shards of 2,000: with
`label_with_teacher` in this process, and with `keras_distill.labelling.beam.label` on the
DirectRunner with 1 worker (in memory) and 2 worker processes (multi_processing). One run;
examples per second including pipeline start-up (worker processes import TensorFlow and
load the model).

Usage: python benchmarks/beam_benchmark.py [--quick] [--out benchmarks/results/beam.md]
"""

import argparse
import os
import platform
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402
from common import write_report  # noqa: E402

import keras_distill as kd  # noqa: E402
from keras_distill.labelling import beam as kbeam  # noqa: E402
from keras_distill.studies.datasets import load_digits  # noqa: E402
from keras_distill.utils import markdown  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/beam.md")
    args = parser.parse_args()
    size = 2_000 if args.quick else 100_000
    digits = load_digits()
    x = np.resize(digits.x_train, (size, 64)).astype("float32")
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential(
        [keras.Input((64,))]
        + [keras.layers.Dense(1024, activation="relu") for _ in range(3)]
        + [keras.layers.Dense(10)]
    )
    runs = {
        "label_with_teacher (one process)": lambda path: kd.label_with_teacher(
            teacher, x, path, shard_size=2_000, verbose=0
        ),
        "Beam DirectRunner, 1 worker": lambda path: kbeam.label(
            teacher,
            x,
            path,
            shard_size=2_000,
            pipeline_options=PipelineOptions(direct_num_workers=1),
        ),
        "Beam DirectRunner, 2 worker processes": lambda path: kbeam.label(
            teacher,
            x,
            path,
            shard_size=2_000,
            pipeline_options=PipelineOptions(
                direct_num_workers=2, direct_running_mode="multi_processing"
            ),
        ),
    }
    rows, base = [], None
    for name, run in runs.items():
        started = time.perf_counter()
        run(tempfile.mkdtemp())
        seconds = time.perf_counter() - started
        base = base or seconds
        rows.append([name, f"{seconds:.1f} s", f"{size / seconds:,.0f}", f"{base / seconds:.2f}"])
    lines = [
        "# Beam benchmark",
        "",
        f"Command: `python benchmarks/beam_benchmark.py{' --quick' if args.quick else ''}`. "
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Keras {keras.__version__}; "
        f"{size:,} digits examples, teacher {teacher.count_params():,} parameters, shards of "
        "2,000; one run, start-up included.",
        "",
        markdown.table(["labelling", "time", "examples/s", "speed-up"], rows),
    ]
    print("\n".join(lines))
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
