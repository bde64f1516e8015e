"""`compare`: how much smaller, faster and less accurate a student is than its teacher."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np

from keras_distill._src.studies import input_checks
from keras_distill._src.utils import markdown
from keras_distill._src.utils.tflite_interpreter import tflite_interpreter


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Top-1 accuracy of class scores `y_pred` against integer labels `y_true`.

    Example:
    >>> accuracy(np.array([0, 1]), np.array([[0.9, 0.1], [0.8, 0.2]]))
    0.5
    """
    return float(np.mean(np.argmax(y_pred, axis=-1) == np.asarray(y_true).reshape(-1)))


@dataclasses.dataclass(frozen=True)
class ModelStats:
    """Size, latency (seconds per example) and quality of one model.

    Example:
    >>> ModelStats("m", 10, 40, 900, {1: 1e-4}, {1: 1e-5}, 0.9).float32_bytes
    40
    """

    name: str
    params: int
    float32_bytes: int
    int8_bytes: int | None
    keras_latency: dict  # batch size -> seconds per example
    tflite_latency: dict  # batch size -> seconds per example (int8 model)
    metric: float


@dataclasses.dataclass(frozen=True)
class CompressionReport:
    """Teacher, student and optional baseline side by side; see `compare`.

    Example:
    >>> t = ModelStats("teacher", 1000, 4000, 1500, {1: 2e-4}, {1: 2e-5}, 0.98)
    >>> s = ModelStats("student", 100, 400, 600, {1: 1e-4}, {1: 5e-6}, 0.95)
    >>> report = CompressionReport(t, s, None, "accuracy")
    >>> report.compression_ratio, round(report.retained, 3), report.speedup(1, "tflite")
    (10.0, 0.969, 4.0)
    """

    teacher: ModelStats
    student: ModelStats
    baseline: ModelStats | None
    metric_name: str

    @property
    def compression_ratio(self) -> float:
        """Teacher parameters per student parameter."""
        return self.teacher.params / self.student.params

    @property
    def retained(self) -> float:
        """Student metric as a fraction of the teacher's."""
        return self.student.metric / self.teacher.metric

    def speedup(self, batch_size: int, runtime: str = "keras") -> float:
        """Teacher latency over student latency, for `"keras"` or `"tflite"`."""
        key = f"{runtime}_latency"
        return getattr(self.teacher, key)[batch_size] / getattr(self.student, key)[batch_size]

    @property
    def models(self) -> list[ModelStats]:
        """The teacher, the student and the baseline if any."""
        return [m for m in (self.teacher, self.student, self.baseline) if m is not None]

    def to_markdown(self) -> str:
        """The report as a Markdown table and a summary line.

        Returns:
            Markdown text.

        Example:
        >>> t = ModelStats("teacher", 1000, 4000, 1500, {1: 2e-4}, {1: 2e-5}, 0.98)
        >>> s = ModelStats("student", 100, 400, 600, {1: 1e-4}, {1: 5e-6}, 0.95)
        >>> table = CompressionReport(t, s, None, "accuracy").to_markdown()
        >>> table.splitlines()[0].split(" | ")[:4]
        ['| model', 'params', 'float32', 'int8 TFLite']
        """
        batches = sorted(self.teacher.keras_latency)
        header = ["model", "params", "float32", "int8 TFLite"]
        header += [f"Keras, batch {b}" for b in batches]
        header += [f"TFLite int8, batch {b}" for b in batches]
        header.append(self.metric_name)
        rows = []
        for m in self.models:
            cells = [m.name, f"{m.params:,}", f"{m.float32_bytes:,} B"]
            cells.append(f"{m.int8_bytes:,} B" if m.int8_bytes else "n/a")
            cells += [f"{m.keras_latency[b] * 1e6:.3g} us" for b in batches]
            cells += [
                f"{m.tflite_latency[b] * 1e6:.3g} us" if b in m.tflite_latency else "n/a"
                for b in batches
            ]
            cells.append(f"{m.metric:.4g}")
            rows.append(cells)
        summary = (
            f"\nCompression {self.compression_ratio:.1f}x, {self.retained:.1%} of the teacher's "
            f"{self.metric_name} retained, Keras speed-up {self.speedup(batches[0]):.1f}x at batch "
            f"{batches[0]} and {self.speedup(batches[-1]):.1f}x at batch {batches[-1]}"
        )
        if self.baseline is not None:
            gain = self.student.metric - self.baseline.metric
            summary += f"; student vs baseline {gain:+.4g} {self.metric_name}"
        return markdown.table(header, rows) + summary + "."

    def plot(self):
        """A matplotlib figure: size, latency and metric of each model.

        Returns:
            A `matplotlib.figure.Figure`.

        Example:
        >>> t = ModelStats("teacher", 1000, 4000, 1500, {1: 2e-4}, {1: 2e-5}, 0.98)
        >>> s = ModelStats("student", 100, 400, 600, {1: 1e-4}, {1: 5e-6}, 0.95)
        >>> len(CompressionReport(t, s, None, "accuracy").plot().axes)
        3
        """
        from matplotlib import pyplot

        names = [m.name for m in self.models]
        figure, axes = pyplot.subplots(1, 3, figsize=(13, 3.4))
        positions = np.arange(len(names))
        axes[0].bar(
            positions - 0.2, [m.float32_bytes / 1024 for m in self.models], 0.4, label="float32"
        )
        axes[0].bar(
            positions + 0.2,
            [(m.int8_bytes or 0) / 1024 for m in self.models],
            0.4,
            label="int8 TFLite",
        )
        axes[0].set_ylabel("KiB")
        axes[0].set_title("size")
        batch = min(self.teacher.keras_latency)
        axes[1].bar(
            positions - 0.2, [m.keras_latency[batch] * 1e6 for m in self.models], 0.4, label="Keras"
        )
        axes[1].bar(
            positions + 0.2,
            [m.tflite_latency.get(batch, 0) * 1e6 for m in self.models],
            0.4,
            label="TFLite int8",
        )
        axes[1].set_ylabel("microseconds per example")
        axes[1].set_title(f"latency at batch {batch}")
        metrics = [m.metric for m in self.models]
        axes[2].bar(positions, metrics, 0.5)
        axes[2].set_ylim(0.9 * min(metrics), 1.02 * max(metrics))
        axes[2].set_title(self.metric_name)
        for ax in axes:
            ax.set_xticks(positions, names)
        axes[0].legend()
        axes[1].legend()
        figure.tight_layout()
        return figure


def median_seconds(run: Callable, argument, repeats: int, warmup: int = 3) -> float:
    """Median wall time of `run(argument)` over `repeats` calls after `warmup` calls.

    Example:
    >>> median_seconds(lambda x: sum(x), range(1000), repeats=5) > 0
    True
    """
    for _ in range(warmup):
        run(argument)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(argument)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _median_seconds_per_example(run: Callable, batch, repeats: int) -> float:
    return median_seconds(run, batch, repeats) / len(batch)


def _tflite_latency(model_bytes: bytes, x: np.ndarray, batch_size: int, repeats: int) -> float:
    interpreter = tflite_interpreter(model_bytes)
    details = interpreter.get_input_details()[0]
    source = details["index"]
    interpreter.resize_tensor_input(source, (batch_size, *x.shape[1:]))
    interpreter.allocate_tensors()
    batch = x[:batch_size]
    scale, zero_point = details["quantization"]
    if scale:  # an int8 input: q = round(x / scale) + zero point
        limits = np.iinfo(details["dtype"])
        batch = np.clip(np.round(batch / scale) + zero_point, limits.min, limits.max)
    quantized = np.asarray(batch, details["dtype"])

    def run(batch):
        interpreter.set_tensor(source, batch)
        interpreter.invoke()

    return _median_seconds_per_example(run, quantized, repeats)


def model_stats(
    model,
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    metric: Callable = accuracy,
    batch_sizes: tuple = (1, 32),
    repeats: int = 50,
    tflite: bool = True,
) -> ModelStats:
    """Measures one model: parameters, sizes, latencies and the metric on `(x, y)`.

    Args:
        model: A Keras model with one input.
        name: Its name in the report.
        x: Evaluation inputs (also the int8 calibration data, up to 200 examples).
        y: Evaluation targets.
        metric: `metric(y, predictions) -> float`; top-1 accuracy by default.
        batch_sizes: Batch sizes for the latency measurements.
        repeats: Timed runs per latency (median taken, after 3 warm-up runs).
        tflite: Also convert to int8 TFLite and time it in the TFLite interpreter.

    Returns:
        A `ModelStats`.

    Example:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> x, y = np.random.rand(40, 4).astype("float32"), np.arange(40) % 2
    >>> model_stats(model, "tiny", x, y, repeats=3, tflite=False).params
    10
    """
    import tensorflow as tf

    from keras_distill._src.micro.isolated_conversion import to_int8_tflite_safely

    x = np.asarray(x, "float32")
    if len(x) < max(batch_sizes):
        raise ValueError(
            f"Latency at batch size {max(batch_sizes)} needs at least that many examples; "
            f"received {len(x)}."
        )
    forward = tf.function(lambda batch: model(batch, training=False))
    keras_latency = {
        b: _median_seconds_per_example(forward, tf.constant(x[:b]), repeats) for b in batch_sizes
    }
    int8_bytes, tflite_latency = None, {}
    if tflite:
        fixed = to_int8_tflite_safely(model, x[:200])
        resizable = to_int8_tflite_safely(model, x[:200], batch_size=None)
        int8_bytes = len(fixed)
        tflite_latency = {b: _tflite_latency(resizable, x, b, repeats) for b in batch_sizes}
    predictions = model.predict(x, verbose=0)
    return ModelStats(
        name=name,
        params=model.count_params(),
        float32_bytes=4 * model.count_params(),
        int8_bytes=int8_bytes,
        keras_latency=keras_latency,
        tflite_latency=tflite_latency,
        metric=float(metric(y, predictions)),
    )


def _evaluation_data(data, metric: Callable) -> tuple:
    """`(x, y)` of `compare`: a pair, one target per example (a class for the accuracy)."""
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise TypeError(
            "`data` must be a pair `(x, y)` of evaluation inputs and targets; received "
            f"{type(data).__name__}{f' of {len(data)} items' if isinstance(data, tuple) else ''}."
        )
    x, y = data
    if metric is accuracy:
        input_checks.check_labels(x, y, "y")
    elif len(y) != len(x):
        raise ValueError(
            f"`y` has {len(y)} targets but `x` has {len(x)} examples; give one per example."
        )
    return x, y


def compare(
    teacher,
    student,
    data,
    *,
    baseline=None,
    metric: Callable = accuracy,
    metric_name: str = "accuracy",
    batch_sizes: tuple = (1, 32),
    repeats: int = 50,
    tflite: bool = True,
) -> CompressionReport:
    """Compares a teacher, its student and optionally a scratch-trained baseline.

    Reports parameters, float32 size, int8 TFLite size, latency per example at
    each batch size in Keras and in the TFLite interpreter (int8 model; median
    of `repeats` runs after warm-up), the metric of each model, the share of
    the teacher's metric the student keeps, compression ratio and speed-up.

    Args:
        teacher: The teacher `keras.Model`.
        student: The student `keras.Model`.
        data: Evaluation data `(x, y)` of arrays, one target per example
            (integer classes for the default metric).
        baseline: Optional model with the student's architecture trained alone.
        metric: `metric(y, predictions) -> float`, higher is better; top-1
            accuracy by default.
        metric_name: Its name in the report.
        batch_sizes: Batch sizes for the latency measurements.
        repeats: Timed runs per latency.
        tflite: Measure the int8 TFLite model too.

    Returns:
        A `CompressionReport`: `print(report.to_markdown())`, `report.plot()`.

    Raises:
        TypeError: If `data` is not a pair `(x, y)`.
        ValueError: If `x` and `y` differ in length, or `y` is one-hot (or
            otherwise not one class per example) for the default accuracy.
        kd.micro.MicroExportError: (a `ValueError`) with
            `tflite=True`, if a model cannot be converted to int8 TFLite (a
            recurrent layer is converted in a separate process and named).

    Example:
    >>> import keras
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(64),
    ...                             keras.layers.Dense(2)])
    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> x, y = np.random.rand(64, 4).astype("float32"), np.arange(64) % 2
    >>> report = compare(teacher, student, (x, y), repeats=3)
    >>> round(report.compression_ratio, 1)
    45.0
    """
    x, y = _evaluation_data(data, metric)
    kwargs = dict(metric=metric, batch_sizes=batch_sizes, repeats=repeats, tflite=tflite)
    return CompressionReport(
        teacher=model_stats(teacher, "teacher", x, y, **kwargs),
        student=model_stats(student, "student", x, y, **kwargs),
        baseline=None if baseline is None else model_stats(baseline, "baseline", x, y, **kwargs),
        metric_name=metric_name,
    )
