import numpy as np
import pytest
from conftest import mlp

from keras_distill import compare
from keras_distill._src.studies import recipes
from keras_distill._src.studies.compression_report import accuracy


@pytest.fixture(scope="module")
def students(digits):
    trained = {}
    for name in ("student", "baseline"):
        model = mlp([8], seed=1)
        recipes.train_from_scratch(model, digits, epochs=5)
        trained[name] = model
    return trained


def test_compare_reports_sizes_latency_and_accuracy(teacher, students, digits, tmp_path):
    data = (digits.x_test, digits.y_test)
    report = compare(teacher, students["student"], data, baseline=students["baseline"], repeats=5)
    assert report.compression_ratio == pytest.approx(teacher.count_params() / 610)
    teacher_accuracy = accuracy(digits.y_test, teacher.predict(digits.x_test, verbose=0))
    student_accuracy = accuracy(
        digits.y_test, students["student"].predict(digits.x_test, verbose=0)
    )
    assert report.teacher.metric == pytest.approx(teacher_accuracy, abs=1e-6)
    assert report.retained == pytest.approx(student_accuracy / teacher_accuracy, abs=1e-6)
    assert report.teacher.float32_bytes == 4 * teacher.count_params()
    assert 0 < report.student.int8_bytes < report.teacher.int8_bytes
    for stats in report.models:
        assert set(stats.keras_latency) == set(stats.tflite_latency) == {1, 32}
        assert all(v > 0 for v in stats.keras_latency.values())
        # batching amortizes the per-call overhead
        assert stats.keras_latency[32] < stats.keras_latency[1]
    text = report.to_markdown()
    assert text.count("\n| ") == 3 and "| baseline | 610 |" in text
    assert "student vs baseline" in text
    figure = report.plot()
    figure.savefig(tmp_path / "report.png")
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_compare_with_a_custom_metric_and_too_little_data(teacher, students, digits):
    def top2(y, predictions):
        return float(np.mean([t in np.argsort(p)[-2:] for t, p in zip(y, predictions)]))

    report = compare(
        teacher,
        students["student"],
        (digits.x_test, digits.y_test),
        metric=top2,
        metric_name="top-2 accuracy",
        repeats=2,
        tflite=False,
        batch_sizes=(1, 8),
    )
    assert report.student.metric >= accuracy(
        digits.y_test, students["student"].predict(digits.x_test, verbose=0)
    )
    assert report.student.int8_bytes is None and "top-2 accuracy" in report.to_markdown()
    with pytest.raises(ValueError, match="batch size 32 needs at least that many examples"):
        compare(teacher, students["student"], (digits.x_test[:10], digits.y_test[:10]))


def test_the_tflite_interpreter_is_litert_when_installed_and_never_warns(monkeypatch):
    import sys
    import warnings

    import keras
    import numpy as np

    from keras_distill._src.micro.convert import to_int8_tflite
    from keras_distill._src.utils.tflite_interpreter import backend, tflite_interpreter

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    tflite = to_int8_tflite(model, np.random.default_rng(0).random((8, 4)))
    assert backend() == "LiteRT"  # the [micro] extra installs ai-edge-litert
    assert type(tflite_interpreter(tflite)).__module__.startswith("ai_edge_litert")
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # not installed
    assert backend() == "tf.lite"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a deprecation notice reaching the user fails
        fallback = tflite_interpreter(tflite)
    fallback.allocate_tensors()
    assert type(fallback).__module__.startswith("tensorflow")
