import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from conftest import SCE, mlp

from keras_distill import Distiller, losses


@pytest.fixture
def trained(digits, teacher):
    distiller = Distiller(teacher, mlp([8], seed=1), temperature=5.0, alpha=0.3)
    distiller.compile(keras.optimizers.Adam(1e-3), SCE, metrics=["accuracy"])
    distiller.fit(digits.x_train[:256], digits.y_train[:256], epochs=1, verbose=0)
    distiller.temperature = 2.5  # as a scheduler would leave it
    return distiller


def test_saved_distiller_keeps_temperature_alpha_weights_and_trains_on(trained, digits, tmp_path):
    path = tmp_path / "distiller.keras"
    trained.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored, Distiller)
    assert float(restored.temperature) == 2.5 and float(restored.alpha) == pytest.approx(0.3)
    x = digits.x_test[:16]
    np.testing.assert_allclose(
        restored.predict(x, verbose=0), trained.predict(x, verbose=0), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(
        restored.teacher.predict(x, verbose=0),
        trained.teacher.predict(x, verbose=0),
        rtol=1e-6,
        atol=1e-6,
    )
    history = restored.fit(digits.x_train[:128], digits.y_train[:128], epochs=1, verbose=0)
    assert history.history["temperature"] == [2.5]


@pytest.mark.slow
def test_student_saves_as_a_plain_keras_model(trained, digits, tmp_path):
    path = tmp_path / "student.keras"
    trained.student.save(path)
    expected = trained.student.predict(digits.x_test[:4], verbose=0)
    np.save(tmp_path / "x.npy", digits.x_test[:4])
    np.save(tmp_path / "expected.npy", expected)
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["keras_distill"] = None  # importing it would now fail
        import keras, numpy as np
        model = keras.models.load_model({str(path)!r})
        got = model.predict(np.load({str(tmp_path / "x.npy")!r}), verbose=0)
        expected = np.load({str(tmp_path / "expected.npy")!r})
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
        print(type(model).__name__, "OK")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("Sequential OK")


def test_config_round_trip_with_a_loss_object(teacher):
    distiller = Distiller(
        teacher,
        mlp([4]),
        temperature=3.0,
        alpha=0.6,
        distillation_loss=losses.JensenShannonDivergence(),
        teacher_output="logits",
    )
    config = distiller.get_config()
    assert config["temperature"] == 3.0 and config["alpha"] == pytest.approx(0.6)
    restored = Distiller.from_config(config)
    assert isinstance(restored.distillation_loss, losses.JensenShannonDivergence)
    assert restored._distillation_loss_fns == [losses.jensen_shannon_divergence]
    assert restored.teacher_output == "logits"
    assert restored.student.count_params() == distiller.student.count_params()


def test_files_saved_by_version_0_1_still_load(tmp_path):
    """tests/data holds .keras files written by keras-distill 0.1.0 (see its README)."""
    data = pathlib.Path(__file__).parent / "data"
    expected = np.load(data / "saved_v0.1.0_expected.npz")
    distiller = keras.models.load_model(data / "distiller_annealed_features_v0.1.0.keras")
    assert isinstance(distiller, Distiller)
    assert float(distiller.temperature) == pytest.approx(float(expected["temperature"]))
    assert float(distiller.alpha) == pytest.approx(float(expected["alpha"]))
    x = expected["x"]
    np.testing.assert_allclose(
        distiller.predict(x, verbose=0), expected["distiller"], rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        distiller.teacher.predict(x, verbose=0), expected["teacher"], rtol=1e-5, atol=1e-5
    )
    assert len(distiller.distillation_loss) == 2  # the KL and the feature term, with its projector
    student = keras.models.load_model(data / "student_v0.1.0.keras")
    np.testing.assert_allclose(
        student.predict(x, verbose=0), expected["student"], rtol=1e-5, atol=1e-5
    )
    labels = np.argmax(expected["teacher"], axis=-1)
    history = distiller.fit(x, labels, epochs=1, verbose=0)  # and it trains on
    assert np.isfinite(history.history["loss"][0])
