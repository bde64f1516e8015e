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
        restored.predict(x, verbose=0), trained.predict(x, verbose=0), rtol=1e-6
    )
    np.testing.assert_allclose(
        restored.teacher.predict(x, verbose=0), trained.teacher.predict(x, verbose=0), rtol=1e-6
    )
    history = restored.fit(digits.x_train[:128], digits.y_train[:128], epochs=1, verbose=0)
    assert history.history["temperature"] == [2.5]


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
        np.testing.assert_allclose(got, np.load({str(tmp_path / "expected.npy")!r}), rtol=1e-6)
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
