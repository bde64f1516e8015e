"""Plots the features benchmark: each method's difference to the same student from scratch.

Reads the tables that `features_benchmark.py` wrote (`benchmarks/results/features.md` and
`features_transformer.md`) and draws one panel per task, so the README's plot is the run's numbers.

Usage: python benchmarks/features_plot.py [--out benchmarks/results/features.png]
"""

import argparse
import pathlib
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = pathlib.Path(__file__).parent / "results"
ROW = re.compile(r"^\| (.+?) \| ([\d.]+) ± ([\d.]+) \(([+-][\d.]+)\) \|$")


def tasks(paths):
    """{task title: [(row, difference to scratch, std)]} from the benchmark's Markdown."""
    found, title = {}, None
    for path in paths:
        for line in path.read_text().splitlines():
            if line.startswith("## "):
                title = line[3:].split(" (teachers")[0]
                found[title] = []
            elif (match := ROW.match(line)) and title:
                name, _, std, gain = match.groups()
                found[title].append((name, float(gain), float(std)))
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(RESULTS / "features.png"))
    args = parser.parse_args()
    found = tasks([RESULTS / "features.md", RESULTS / "features_transformer.md"])
    figure, axes = plt.subplots(len(found), 1, figsize=(8, 2.4 * len(found)))
    for axis, (title, rows) in zip(axes, found.items(), strict=True):
        rows = [r for r in rows if not r[0].endswith("scratch")]
        names = [r[0].replace("half depth, ", "half: ") for r in rows]
        axis.barh(
            names,
            [r[1] for r in rows],
            xerr=[r[2] for r in rows],
            color=["#2a7" if r[1] > 0 else "#c55" for r in rows],
        )
        axis.axvline(0, color="k", linewidth=0.8)
        axis.set_title(title, fontsize=10)
        axis.set_xlabel(
            "test accuracy vs the same student from scratch, points (5 seeds; lines: std)",
            fontsize=8,
        )
        axis.invert_yaxis()
    plt.tight_layout()
    figure.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
