"""Bulk labelling throughput with one vs two local worker processes, in one run.

A teacher MLP (64-1024-1024-1024-10) labels 20,000 digit-like inputs (the
digits, tiled with noise) with `label_with_teacher`, once in one process and
once split between two processes on this machine (`worker_index`/`num_workers`,
as on two machines). Each process's time includes Python and TensorFlow
start-up and the teacher's construction, as a real run's would.

On a 2-core machine near-linear scaling is not expected: TensorFlow already
uses both cores inside one process, so two processes mostly compete for them.

Usage: python benchmarks/labelling_workers_benchmark.py [--quick] [--out ...]
"""

import pathlib
import subprocess
import sys
import tempfile
import textwrap
import time

from common import parser, provenance, write_report

HERE = str(pathlib.Path(__file__).parent)

WORKER = textwrap.dedent(
    """
    import os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, sys.argv[5])
    import numpy as np
    from common import mlp
    from keras_distill import label_with_teacher
    from keras_distill._src.studies.datasets import load_digits

    path, index, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    digits = load_digits().x_train
    rng = np.random.default_rng(0)
    x = np.tile(digits, (size // len(digits) + 1, 1))[:size]
    x = (x + rng.normal(scale=0.05, size=x.shape)).astype("float32")
    teacher = mlp(64, [1024] * 3, seed=0)
    label_with_teacher(teacher, x, path, worker_index=index, num_workers=count, batch_size=256,
                       verbose=0)
    """
)


def run(workers, size, path):
    start = time.perf_counter()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path), str(i), str(workers), str(size), HERE]
        )
        for i in range(workers)
    ]
    for process in processes:
        if process.wait() != 0:
            raise RuntimeError(f"labelling worker failed with exit status {process.returncode}")
    return time.perf_counter() - start


def main():
    args = parser(__doc__, "benchmarks/results/labelling_workers.md").parse_args()
    size = 5_000 if args.quick else 20_000
    work = pathlib.Path(tempfile.mkdtemp())
    one = run(1, size, work / "one")
    two = run(2, size, work / "two")
    lines = [
        f"# Labelling with one vs two local workers ({'quick' if args.quick else 'full'} run)",
        "",
        f"{provenance()} {size:,} examples, teacher MLP 64-1024-1024-1024-10, batch "
        "256; wall time of the whole run, process start-up included.",
        "",
        "| workers | wall time | examples/s | speed-up |",
        "|---:|---:|---:|---:|",
        f"| 1 | {one:.1f} s | {size / one:,.0f} | 1.00 |",
        f"| 2 | {two:.1f} s | {size / two:,.0f} | {one / two:.2f} |",
        "",
        "On this 2-core machine TensorFlow already spreads one process's matrix products over "
        "both cores, so two processes mostly share the same two cores; the split pays on "
        "separate machines.",
    ]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
