"""What a search returns: every `Trial`, the front's `Candidate`s, and the `SearchResult`."""

from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np

from keras_distill._src.micro import exporter
from keras_distill._src.search.budget import Budget, Latency
from keras_distill._src.utils import markdown

# The front's table in `SearchResult.to_markdown`: (header, alignment) by column.
FRONT_COLUMNS = (
    ("trial", "l"),
    ("architecture", "l"),
    ("teacher", "l"),
    ("recipe", "l"),
    ("epochs", "r"),
    ("params", "r"),
    ("flash (B)", "r"),
    ("arena (B)", "r"),
    ("latency (ms, est.)", "r"),  # "(ms, Cortex-M4)" when every latency was counted there
    ("int8 acc", "r"),
    ("float acc", "r"),
    ("scratch int8 acc", "r"),
    ("int8 acc after its trial", "r"),
)


@dataclasses.dataclass(frozen=True)
class Trial:
    """One candidate the search looked at: its pre-flight, and its measurements if it fitted.

    Attributes:
        number: The Optuna trial number.
        architecture: The architecture's choices (e.g. `{"family": "dense", ...}`).
        teacher: The name of the teacher it learned from.
        recipe: `temperature`, `alpha`, `function_matching`,
            `quantization_aware`.
        reason: Why it is infeasible (never trained, or over the budget once trained), or None.
        flash_bytes: Bytes of the int8 model.
        arena_bytes: Smallest tensor arena measured in TFLite Micro.
        params: Parameters of the float model.
        macs: Multiply-accumulates per inference.
        latency: A `Latency`.
        int8_accuracy: Accuracy of the int8 model in TFLM on the validation data.
        float_accuracy: Accuracy of the float model on the validation data.
        preflight_seconds: Time of the pre-flight (conversion and TFLM measurement).
        seconds: Time of the whole trial.
        model_path: The saved Keras student (`.keras`; quantization-aware if
            its recipe is), or None.

    Example:
    >>> trial = Trial(3, {"family": "dense", "width": 8, "depth": 1}, "cnn",
    ...               {"temperature": 1.0, "alpha": 0.5, "function_matching": False,
    ...                "quantization_aware": False},
    ...               "over budget: flash 90,112 B > 65,536 B", 90_112, None, 21_930, 21_760,
    ...               Latency(0.0025, "estimated"), None, None, 1.4, 1.4, None)
    >>> trial.feasible
    False
    """

    number: int
    architecture: dict
    teacher: str
    recipe: dict
    reason: str | None
    flash_bytes: int | None
    arena_bytes: int | None
    params: int
    macs: int
    latency: Latency
    int8_accuracy: float | None
    float_accuracy: float | None
    preflight_seconds: float
    seconds: float
    model_path: str | None

    @property
    def feasible(self) -> bool:
        """Within the budget and trained."""
        return self.reason is None

    def to_json(self) -> dict:
        """A JSON-ready dict (what the Optuna storage keeps)."""
        return {**dataclasses.asdict(self), "latency": dataclasses.asdict(self.latency)}

    @classmethod
    def from_json(cls, record: dict) -> Trial:
        """The inverse of `to_json`."""
        return cls(**{**record, "latency": Latency(**record["latency"])})


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A student of the front: distilled, int8, measured in TFLite Micro, beside its scratch twin.

    Attributes:
        number: The Optuna trial number.
        architecture: The architecture's choices.
        teacher: The teacher's name.
        recipe: `temperature`, `alpha`, `function_matching`,
            `quantization_aware`.
        params: Parameters of the float model (a quantization-aware model's
            range variables left out).
        macs: Multiply-accumulates per inference.
        flash_bytes: Bytes of the int8 model.
        arena_bytes: Smallest tensor arena measured in TFLM.
        int8_accuracy: Accuracy of the int8 model in TFLM (validation data).
        float_accuracy: Accuracy of the float model.
        scratch_accuracy: Int8 accuracy in TFLM of the same architecture trained
            on the labels alone (same epochs and augmentation); None until it ran.
        latency: A `Latency` (measured, or estimated and how).
        model_path: The saved Keras student (`.keras`; quantization-aware if
            its recipe is).
        epochs: Epochs it (and its scratch twin) trained: the search's, or
            `find_student(final_epochs=)` for the candidates trained again
            after the search; None if not recorded.
        trial_int8_accuracy: Its int8 accuracy after the search's own trial
            (the same as `int8_accuracy` unless it was trained again).

    Example:
    >>> candidate = Candidate(7, {"family": "dense", "width": 16, "depth": 1}, "mlp",
    ...     {"temperature": 2.0, "alpha": 0.5, "function_matching": False,
    ...      "quantization_aware": False}, 834, 784,
    ...     2_872, 1_648, 0.91, 0.92, 0.88, Latency(9e-05, "estimated"), "trial_7.keras")
    >>> round(candidate.distillation_gain, 2)
    0.03
    """

    number: int
    architecture: dict
    teacher: str
    recipe: dict
    params: int
    macs: int
    flash_bytes: int
    arena_bytes: int
    int8_accuracy: float
    float_accuracy: float
    scratch_accuracy: float | None
    latency: Latency
    model_path: str
    epochs: int | None = None
    trial_int8_accuracy: float | None = None

    @property
    def distillation_gain(self) -> float | None:
        """`int8_accuracy - scratch_accuracy`: what distillation paid at this size."""
        return None if self.scratch_accuracy is None else self.int8_accuracy - self.scratch_accuracy

    @classmethod
    def from_trial(
        cls,
        trial: Trial,
        scratch_accuracy: float | None,
        epochs: int | None = None,
        trial_int8_accuracy: float | None = None,
    ) -> Candidate:
        """The candidate of a feasible trial (or of its training again after the search)."""
        given = {"scratch_accuracy", "epochs", "trial_int8_accuracy"}
        names = [f.name for f in dataclasses.fields(cls) if f.name not in given]
        return cls(
            **{name: getattr(trial, name) for name in names},
            scratch_accuracy=scratch_accuracy,
            epochs=epochs,
            trial_int8_accuracy=(
                trial.int8_accuracy if trial_int8_accuracy is None else trial_int8_accuracy
            ),
        )


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """The outcome of `find_student`: the front, every trial, and the budget.

    Attributes:
        front: The Pareto front (`Candidate`s), best int8 accuracy first.
        trials: Every finished `Trial`, infeasible ones with their reason.
        budget: The `Budget`.
        minimize: The second objective: `"flash"`, `"arena"` or `"latency"`.
        directory: The search's output folder.
        representative: Training inputs for the int8 calibration of `export`.
        validation: `(x, y)` validation data.

    Example:
    >>> import keras_distill as kd
    >>> budget = kd.search.Budget(65_536, 16_384)
    >>> result = kd.search.SearchResult([], [], budget, "flash", ".")
    >>> print(result.to_markdown().splitlines()[0])
    Budget: flash 65,536 B, RAM 16,384 B. 0 trials, 0 feasible.
    """

    front: list
    trials: list
    budget: Budget
    minimize: str
    directory: str
    representative: np.ndarray | None = dataclasses.field(default=None, repr=False)
    validation: tuple | None = dataclasses.field(default=None, repr=False)

    def to_markdown(self) -> str:
        """The budget, the trials' count, and the front beside its scratch twins, as a table."""
        feasible = [trial for trial in self.trials if trial.feasible]
        lines = [
            f"Budget: {self.budget.describe()}. {len(self.trials)} trials, "
            f"{len(feasible)} feasible.",
            "",
        ]
        rows = [
            (
                c.number,
                _describe(c.architecture),
                c.teacher,
                f"T={c.recipe['temperature']:g} a={c.recipe['alpha']:g}"
                + (" FM" if c.recipe["function_matching"] else "")
                + (" QAT" if c.recipe["quantization_aware"] else ""),
                "-" if c.epochs is None else str(c.epochs),
                f"{c.params:,}",
                f"{c.flash_bytes:,}",
                f"{c.arena_bytes:,}",
                "-" if c.latency.seconds is None else f"{c.latency.milliseconds:.2f}",
                f"{c.int8_accuracy:.1%}",
                f"{c.float_accuracy:.1%}",
                "-" if c.scratch_accuracy is None else f"{c.scratch_accuracy:.1%}",
                "-" if c.trial_int8_accuracy is None else f"{c.trial_int8_accuracy:.1%}",
            )
            for c in self.front
        ]
        counted = self.front and all(c.latency.instructions is not None for c in self.front)
        header = tuple(
            "latency (ms, Cortex-M4)" if counted and name.startswith("latency") else name
            for name, _ in FRONT_COLUMNS
        )
        align = "".join(side for _, side in FRONT_COLUMNS)
        lines.append(markdown.table(header, rows, align=align))
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike) -> pathlib.Path:
        """Accuracy against flash: the distilled front, the scratch front, infeasible apart.

        Example:
        >>> import tempfile
        >>> import keras_distill as kd
        >>> budget = kd.search.Budget(65_536, None)
        >>> result = kd.search.SearchResult([], [], budget, "flash", ".")
        >>> result.plot(tempfile.mkdtemp() + "/front.png").suffix
        '.png'
        """
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot

        figure, axis = pyplot.subplots(figsize=(6, 4))
        trained = [t for t in self.trials if t.feasible]
        axis.scatter(
            [t.flash_bytes for t in trained],
            [t.int8_accuracy for t in trained],
            color="lightgray",
            label="feasible trials",
        )
        front = sorted(self.front, key=lambda c: c.flash_bytes)
        axis.plot(
            [c.flash_bytes for c in front],
            [c.int8_accuracy for c in front],
            "o-",
            label="distilled front (int8, TFLM)",
        )
        scratch = [c for c in front if c.scratch_accuracy is not None]
        axis.plot(
            [c.flash_bytes for c in scratch],
            [c.scratch_accuracy for c in scratch],
            "s--",
            label="same students from scratch",
        )
        infeasible = [t for t in self.trials if not t.feasible and t.flash_bytes]
        axis.scatter(
            [t.flash_bytes for t in infeasible],
            [0.0] * len(infeasible),
            marker="x",
            color="red",
            label="infeasible",
        )
        if self.budget.flash_bytes:
            axis.axvline(self.budget.flash_bytes, color="red", linestyle=":", label="flash budget")
        axis.set(xlabel="flash (bytes, int8 model)", ylabel="validation accuracy")
        axis.legend(fontsize=7)
        path = pathlib.Path(path)
        figure.tight_layout()
        figure.savefig(path, dpi=120)
        pyplot.close(figure)
        return path

    def export(
        self,
        candidate: Candidate,
        directory: str | os.PathLike,
        name: str = "model",
        validation_data=None,
    ):
        """The verified TFLite Micro export of a candidate (`kd.micro.export`), board-checked.

        A quantization-aware candidate converts with the ranges it learned (no
        representative data); the others are calibrated on the search's
        training inputs.

        Args:
            candidate: A `Candidate` of the front (its saved student is exported).
            directory: Where the `.tflite`, C++ source and header go (replaced).
            name: The C identifier prefix of the sources.
            validation_data: Where the int8 model's accuracy in TFLM is measured:
                `(x, y)` arrays or a `tf.data.Dataset` of `(x, y)` batches, e.g.
                a held-out test set; default: the search's validation data.

        Returns:
            A `kd.micro.MicroExport` (C++ sources, arena, int8 accuracy, board check).
        """
        import keras

        model = keras.saving.load_model(candidate.model_path)
        aware = candidate.recipe["quantization_aware"]
        return exporter.export(
            model,
            None if aware else self.representative,
            directory,
            name=name,
            board=self.budget.board,
            flash_bytes=self.budget.flash_bytes,
            ram_bytes=self.budget.ram_bytes,
            validation_data=self.validation if validation_data is None else validation_data,
            overwrite=True,
        )


def _describe(architecture: dict) -> str:
    return " ".join(f"{key}={value}" for key, value in architecture.items())
