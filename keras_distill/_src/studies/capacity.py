"""Tools for the teacher/student capacity gap: `sweep` and `teacher_assistant_chain`.

A bigger teacher is not always a better one (Mirzadeh et al., 2019): when the
gap is large, a student may learn more through an intermediate "teacher
assistant". These tools measure that on your own task, with the library's
recommended recipe (`kd.recipes`) for every run.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time
from collections.abc import Callable, Mapping, Sequence

import keras
import numpy as np

from keras_distill._src.studies import input_checks, recipes, sweep_runs
from keras_distill._src.utils import markdown
from keras_distill._src.utils.model_inspection import weights_digest

Builder = Callable[[int], keras.Model]


def _evaluate(model, data) -> float:
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    return float(model.evaluate(data.x_test, data.y_test, return_dict=True, verbose=0)["accuracy"])


@dataclasses.dataclass
class SweepResult:
    """The runs of a `sweep`: one record per (teacher, student, seed).

    Example:
    >>> result = SweepResult([
    ...     {"teacher": "t", "student": "s", "seed": 0, "compression": 10.0,
    ...      "params": 100, "teacher_accuracy": 0.98, "scratch": 0.90, "distilled": 0.92},
    ...     {"teacher": "t", "student": "s", "seed": 1, "compression": 10.0,
    ...      "params": 100, "teacher_accuracy": 0.98, "scratch": 0.92, "distilled": 0.94}])
    >>> row = result.summary()[0]
    >>> round(row["distilled_mean"], 3), round(row["gap_recovered"], 3)
    (0.93, 0.286)
    """

    records: list[dict]

    def summary(self) -> list[dict]:
        """Mean and standard deviation per (teacher, student), and the gap recovered.

        `gap_recovered = (distilled - scratch) / (teacher - scratch)`, on the means.
        """
        groups: dict[tuple, list[dict]] = {}
        for record in self.records:
            groups.setdefault((record["teacher"], record["student"]), []).append(record)
        rows = []
        for (teacher, student), runs in groups.items():
            scratch = np.array([r["scratch"] for r in runs])
            distilled = np.array([r["distilled"] for r in runs])
            teacher_accuracy = runs[0]["teacher_accuracy"]
            gap = teacher_accuracy - scratch.mean()
            rows.append(
                {
                    "teacher": teacher,
                    "student": student,
                    "params": runs[0]["params"],
                    "compression": runs[0]["compression"],
                    "seeds": len(runs),
                    "teacher_accuracy": teacher_accuracy,
                    "scratch_mean": float(scratch.mean()),
                    "scratch_std": float(scratch.std()),
                    "distilled_mean": float(distilled.mean()),
                    "distilled_std": float(distilled.std()),
                    "gap_recovered": float((distilled.mean() - scratch.mean()) / gap)
                    if abs(gap) > 1e-12
                    else float("nan"),
                }
            )
        return sorted(rows, key=lambda row: (row["teacher"], row["compression"]))

    def to_markdown(self) -> str:
        """The summary as a Markdown table (accuracies in %).

        Example:
        >>> SweepResult([]).to_markdown().splitlines()[0].split(" | ")[-1]
        'gap recovered |'
        """
        header = [
            "teacher",
            "student",
            "params",
            "compression",
            "seeds",
            "teacher",
            "scratch",
            "distilled",
            "gap recovered",
        ]
        rows = [
            [
                r["teacher"],
                r["student"],
                f"{r['params']:,}",
                f"{r['compression']:.0f}x",
                r["seeds"],
                f"{100 * r['teacher_accuracy']:.1f}",
                f"{100 * r['scratch_mean']:.1f} ± {100 * r['scratch_std']:.1f}",
                f"{100 * r['distilled_mean']:.1f} ± {100 * r['distilled_std']:.1f}",
                f"{r['gap_recovered']:+.2f}",
            ]
            for r in self.summary()
        ]
        return markdown.table(header, rows, align="llrrrrrrr")

    def plot(self):
        """Accuracy against compression ratio (log scale), scratch vs distilled.

        Returns:
            A `matplotlib.figure.Figure`.

        Example:
        >>> figure = SweepResult([{"teacher": "t", "student": "s", "seed": 0,
        ...     "compression": 10.0, "params": 100, "teacher_accuracy": 0.98,
        ...     "scratch": 0.9, "distilled": 0.92}]).plot()
        >>> figure.axes[0].get_xscale()
        'log'
        """
        from matplotlib import pyplot

        figure, ax = pyplot.subplots(figsize=(6.5, 4))
        rows = self.summary()
        for teacher in sorted({r["teacher"] for r in rows}):
            mine = [r for r in rows if r["teacher"] == teacher]
            ratios = [r["compression"] for r in mine]
            for kind, style in (("scratch", "o--"), ("distilled", "s-")):
                ax.errorbar(
                    ratios,
                    [r[f"{kind}_mean"] for r in mine],
                    [r[f"{kind}_std"] for r in mine],
                    fmt=style,
                    capsize=3,
                    label=f"{kind} (teacher {teacher})",
                )
            ax.axhline(mine[0]["teacher_accuracy"], color="gray", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("compression ratio (teacher params / student params)")
        ax.set_ylabel("test accuracy")
        ax.legend(fontsize=8)
        figure.tight_layout()
        return figure


def _identities(students, teachers, data, seeds, settings) -> dict:
    """`(teacher, student, seed) -> RunIdentity` of every run the sweep plans."""
    data_digest = sweep_runs.data_digest(data)
    teacher_digests = {name: weights_digest(model) for name, model in teachers.items()}
    student_digests = {
        (name, seed): weights_digest(build(seed))
        for name, build in students.items()
        for seed in seeds
    }
    return {
        (t, s, seed): sweep_runs.RunIdentity(
            settings, data_digest, teacher_digests[t], student_digests[s, seed]
        )
        for t in teachers
        for s in students
        for seed in seeds
    }


def _checked_teachers(students, teachers, seeds) -> dict:
    if isinstance(teachers, keras.Model):
        teachers = {"teacher": teachers}
    if not students or not teachers or not seeds:
        raise ValueError("`students`, `teachers` and `seeds` must not be empty.")
    for name, build in students.items():
        input_checks.check_builder(build, f"students[{name!r}]", "a fresh student for a seed")
    return dict(teachers)


def _run(teacher, build, data, epochs: int, seed: int, recipe: dict) -> dict:
    """Trains one student from scratch and one distilled; returns the run's numbers."""
    scratch = recipes.train_from_scratch(build(seed), data, epochs=epochs)
    student = build(seed)
    distilled = recipes.train_distilled(teacher, student, data, epochs=epochs, **recipe)
    return {
        "params": student.count_params(),
        "compression": teacher.count_params() / student.count_params(),
        "scratch": scratch,
        "distilled": distilled,
    }


def sweep(
    students: Mapping[str, Builder],
    teachers: Mapping[str, keras.Model] | keras.Model,
    data,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    epochs: int = 60,
    path: str | os.PathLike | None = None,
    verbose: int = 1,
    **recipe,
) -> SweepResult:
    """Trains each student size from scratch and distilled, over seeds and teachers.

    Args:
        students: Name -> `builder(seed)` returning a fresh, uncompiled student.
        teachers: A trained teacher, or name -> trained teacher.
        data: A `kd.datasets.Split` (train and test arrays).
        seeds: Seeds; each builds and trains its own scratch and distilled student.
        epochs: Training epochs per student.
        path: Optional JSON-lines file: every finished run is appended at once
            with what determined it (the settings, a data fingerprint, the
            teacher's and the built student's weights fingerprints), and a
            rerun skips the runs already there (resume after interruption). A
            stored run of the same teacher, student and seed names made
            differently is refused, naming what differs; a torn last line (a
            run killed while writing) is dropped with a warning and that run
            trained again.
        verbose: 1 prints one line per run.
        **recipe: Passed to `kd.recipes.train_distilled` (e.g. `temperature`, `alpha`).

    Returns:
        A `SweepResult` with every run (also those loaded from `path`).

    Raises:
        ValueError: For empty arguments, invalid data, or stored runs that do
            not match this sweep.

    Example:
    >>> import keras, numpy as np
    >>> import keras_distill as kd
    >>> x, y = np.random.rand(64, 4).astype("float32"), np.arange(64) % 2
    >>> def tiny(seed):
    ...     keras.utils.set_random_seed(seed)
    ...     return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(32),
    ...                             keras.layers.Dense(2)])
    >>> result = kd.sweep({"tiny": tiny}, teacher, kd.datasets.Split(x, y, x, y),
    ...                   seeds=[0], epochs=1, verbose=0)
    >>> len(result.records), round(result.records[0]["compression"], 1)
    (1, 22.6)
    """
    teachers = _checked_teachers(students, teachers, seeds)
    data = input_checks.checked_split(data)
    settings = sweep_runs.settings_record(input_checks.positive_int("epochs", epochs), recipe)
    identities = _identities(students, teachers, data, seeds, settings)
    path = None if path is None else pathlib.Path(path)
    records = [] if path is None else sweep_runs.read_runs(path)
    if path is not None:
        sweep_runs.check_stored(records, identities, path)
    done = {sweep_runs.run_key(r) for r in records}
    plan = [key for key in identities if key not in done]
    teacher_accuracy = {name: _evaluate(model, data) for name, model in teachers.items()}
    for index, (t, s, seed) in enumerate(plan, start=len(done) + 1):
        started = time.perf_counter()
        record = {"teacher": t, "student": s, "seed": seed}
        record |= _run(teachers[t], students[s], data, epochs, seed, recipe)
        record["teacher_accuracy"] = teacher_accuracy[t]
        record["identity"] = dataclasses.asdict(identities[t, s, seed])
        records.append(record)
        if path is not None:
            sweep_runs.append_run(path, record)
        if verbose:
            print(
                f"[{index}/{len(plan) + len(done)}] teacher {t}, student {s} "
                f"({record['compression']:.0f}x), seed {seed}: scratch {record['scratch']:.1%}, "
                f"distilled {record['distilled']:.1%} ({time.perf_counter() - started:.1f} s)",
                flush=True,
            )
    return SweepResult(records)


@dataclasses.dataclass
class ChainResult:
    """Accuracies along a teacher-assistant chain, direct distillation and scratch.

    Example:
    >>> result = ChainResult([("teacher", 1000, 0.98), ("assistant", 100, 0.96),
    ...                       ("student", 10, 0.90)], direct=0.88, scratch=0.87)
    >>> result.chain_gain
    0.02...
    """

    steps: list[tuple]  # (name, params, test accuracy) along the chain
    direct: float  # the same student distilled directly from the teacher
    scratch: float  # the same student trained on the labels alone

    @property
    def chain_gain(self) -> float:
        """Student accuracy through the chain minus direct distillation."""
        return self.steps[-1][2] - self.direct

    def to_markdown(self) -> str:
        """The chain and the comparison as a Markdown table.

        Example:
        >>> ChainResult([("t", 10, 0.9), ("s", 1, 0.8)], 0.8, 0.7).to_markdown().count("|")
        24
        """
        student_params = self.steps[-1][1]
        rows = [(f"{name} (chain)", params, acc) for name, params, acc in self.steps]
        rows += [
            ("student, distilled directly", student_params, self.direct),
            ("student, from scratch", student_params, self.scratch),
        ]
        cells = [(name, f"{params:,}", f"{acc:.1%}") for name, params, acc in rows]
        return markdown.table(["model", "params", "test accuracy"], cells)


def teacher_assistant_chain(
    models: Sequence[keras.Model],
    data,
    *,
    epochs: int = 60,
    verbose: int = 1,
    **recipe,
) -> ChainResult:
    """Distils step by step: teacher -> assistant(s) -> student; compares with direct.

    The first model is the trained teacher; each following model is distilled
    from the one before it. The last one, the student, is also cloned twice
    with its initial weights: one copy is distilled directly from the teacher,
    one trained from scratch, for the comparison.

    Args:
        models: `[teacher, assistant, ..., student]`, all but the teacher untrained.
        data: A `kd.datasets.Split`.
        epochs: Training epochs per step.
        verbose: 1 prints one line per step.
        **recipe: Passed to `kd.recipes.train_distilled`.

    Returns:
        A `ChainResult`.

    Raises:
        TypeError: If `models` is a single model rather than a list.
        ValueError: If fewer than three models are given, or the data is invalid.

    Example:
    >>> import keras, numpy as np
    >>> import keras_distill as kd
    >>> x, y = np.random.rand(64, 4).astype("float32"), np.arange(64) % 2
    >>> def mlp(units):
    ...     return keras.Sequential([keras.Input((4,)), keras.layers.Dense(units),
    ...                              keras.layers.Dense(2)])
    >>> result = kd.teacher_assistant_chain([mlp(64), mlp(16), mlp(2)],
    ...                                     kd.datasets.Split(x, y, x, y), epochs=1, verbose=0)
    >>> [name for name, _, _ in result.steps]
    ['teacher', 'assistant 1', 'student']
    """
    if isinstance(models, keras.Model) or not isinstance(models, Sequence):
        raise TypeError(
            "`models` must be a list [teacher, assistant, ..., student] of at least three "
            f"models; received a single {type(models).__name__}. Pass the chain as a list."
        )
    if len(models) < 3:
        raise ValueError(
            "A teacher-assistant chain needs a teacher, at least one assistant and a student; "
            f"received {len(models)} models."
        )
    data = input_checks.checked_split(data)
    teacher, student = models[0], models[-1]
    copies = []
    for _ in range(2):
        copy = keras.models.clone_model(student)
        copy.set_weights(student.get_weights())
        copies.append(copy)
    names = ["teacher"] + [f"assistant {i}" for i in range(1, len(models) - 1)] + ["student"]
    steps = [("teacher", teacher.count_params(), _evaluate(teacher, data))]
    for previous, model, name in zip(models, models[1:], names[1:], strict=False):
        accuracy = recipes.train_distilled(previous, model, data, epochs=epochs, **recipe)
        steps.append((name, model.count_params(), accuracy))
        if verbose:
            print(f"{name}: {model.count_params():,} parameters, {accuracy:.1%}", flush=True)
    direct = recipes.train_distilled(teacher, copies[0], data, epochs=epochs, **recipe)
    scratch = recipes.train_from_scratch(copies[1], data, epochs=epochs)
    if verbose:
        print(f"student distilled directly: {direct:.1%}; from scratch: {scratch:.1%}", flush=True)
    return ChainResult(steps=steps, direct=direct, scratch=scratch)
