"""Code from the keras.io distillation example runs with only the import changed."""

import keras
import pytest
from conftest import mlp
from numpy_references import reference_kl

from keras_distill import Distiller


def test_the_keras_io_example_runs_unchanged(digits, teacher, capsys):
    student = mlp([16], seed=1)
    # --- as on keras.io (examples/vision/knowledge_distillation) ---
    distiller = Distiller(student=student, teacher=teacher)
    distiller.compile(
        optimizer=keras.optimizers.Adam(),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
        student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        distillation_loss_fn=keras.losses.KLDivergence(),
        alpha=0.1,
        temperature=10,
    )
    distiller.fit(digits.x_train, digits.y_train, epochs=3, verbose=0)
    results = distiller.evaluate(digits.x_test, digits.y_test, verbose=0)
    # ---
    assert "distillation_loss_fn=KLDivergence is used as kd.losses.kl_divergence" in (
        capsys.readouterr().out
    )
    assert float(distiller.temperature) == 10.0 and float(distiller.alpha) == pytest.approx(0.1)
    logs = distiller.evaluate(digits.x_test, digits.y_test, return_dict=True, verbose=0)
    order = ["loss", "sparse_categorical_accuracy", "student_loss", "distillation_loss"]
    assert results == [pytest.approx(logs[key]) for key in order]  # as the docstring says
    t = teacher.predict(digits.x_test, verbose=0)
    s = student.predict(digits.x_test, verbose=0)
    assert logs["distillation_loss"] == pytest.approx(
        reference_kl(t, s, 10.0).mean(), rel=1e-4, abs=1e-6
    )
    assert logs["sparse_categorical_accuracy"] > 0.3  # it learns (chance: 0.1)


def test_keras_io_arguments_are_checked(teacher):
    distiller = Distiller(teacher=teacher, student=mlp([4]))
    with pytest.raises(ValueError, match=r"as `loss` or as the keras.io example's"):
        distiller.compile("adam", loss="mse", student_loss_fn="mse")
    with pytest.raises(TypeError, match=r"distillation_loss_fn=.*cannot see the temperature"):
        distiller.compile("adam", "mse", distillation_loss_fn=keras.losses.MeanSquaredError())
    with pytest.raises(ValueError, match=r"`temperature` must be .*received 0.0"):
        distiller.compile("adam", "mse", temperature=0)


def test_swapped_roles_are_warned_about(teacher):
    with pytest.warns(
        UserWarning,
        match=r"teacher 'student_like' \(610 parameters\) is smaller "
        r"than the student 'teacher' \(9,610\).*by keyword",
    ):
        Distiller(mlp([8], name="student_like"), teacher)  # keras.io's (student, teacher) order
