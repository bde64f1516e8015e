"""Teacher outputs computed once per fit for in-memory inputs: same result, no live teacher."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import SCE, Counting, mlp
from numpy_references import reference_kl

from keras_distill import Distiller


def counting_teacher(teacher):
    inputs = keras.Input((64,))
    counter = Counting()
    return keras.Model(inputs, counter(teacher(inputs))), counter


def train(teacher, digits, cache, epochs=3, **fit_kwargs):
    keras.utils.set_random_seed(5)
    distiller = Distiller(teacher, mlp([8], seed=5), temperature=2.0, cache_teacher_outputs=cache)
    distiller.compile(keras.optimizers.Adam(1e-2), SCE, metrics=["accuracy"])
    x, y = digits.x_train[:512], digits.y_train[:512]
    history = distiller.fit(x, y, epochs=epochs, batch_size=64, verbose=0, **fit_kwargs)
    return distiller, history.history


def test_cached_outputs_train_exactly_like_the_live_teacher(digits, teacher):
    validation = (digits.x_test[:128], digits.y_test[:128])
    live, live_history = train(teacher, digits, False, validation_data=validation)
    cached, cached_history = train(teacher, digits, "auto", validation_data=validation)
    for a, b in zip(live.student.get_weights(), cached.student.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
    for key in ("loss", "distillation_loss", "val_loss", "val_distillation_loss", "accuracy"):
        np.testing.assert_allclose(cached_history[key], live_history[key], rtol=1e-5, atol=1e-6)


def test_the_teacher_runs_once_before_the_epochs(digits, teacher):
    model, counter = counting_teacher(teacher)
    train(model, digits, "auto", epochs=3)
    assert float(counter.calls) == 1.0  # one predict batch of 1024 for 512 inputs
    model, counter = counting_teacher(teacher)
    train(model, digits, False, epochs=3)
    assert float(counter.calls) == 3 * 8 + 1  # live: every step of every epoch, and the probe


def test_a_second_fit_never_reuses_stale_outputs(digits, teacher):
    distiller = Distiller(teacher, mlp([8], seed=6), temperature=2.0)
    distiller.compile(keras.optimizers.SGD(0.0), SCE)
    a, b = digits.x_train[:256], digits.x_train[256:512]
    distiller.fit(a, digits.y_train[:256], batch_size=256, verbose=0)
    history = distiller.fit(b, digits.y_train[256:512], batch_size=256, verbose=0)
    expected = reference_kl(teacher.predict(b, verbose=0), distiller.predict(b, verbose=0), 2.0)
    assert history.history["distillation_loss"][0] == pytest.approx(
        expected.mean(), rel=1e-4, abs=1e-6
    )


def test_datasets_run_live_and_the_setting_is_checked(digits, teacher, capsys):
    dataset = tf.data.Dataset.from_tensor_slices((digits.x_train[:64], digits.y_train[:64]))
    distiller = Distiller(teacher, mlp([4]))
    distiller.compile("adam", SCE)
    distiller.fit(dataset.batch(32), verbose=1)
    printed = capsys.readouterr().out
    assert "Teacher outputs not cached (the inputs are not arrays in memory" in printed
    insisting = Distiller(teacher, mlp([4]), cache_teacher_outputs=True)
    insisting.compile("adam", SCE)
    with pytest.raises(ValueError, match=r"cache_teacher_outputs=True, but .*a tf.data dataset"):
        insisting.fit(dataset.batch(32), verbose=0)
    with pytest.raises(ValueError, match=r"`cache_teacher_outputs` must be .*received 'always'"):
        Distiller(teacher, mlp([4]), cache_teacher_outputs="always")


def test_outputs_over_the_budget_run_live(digits, teacher, capsys):
    distiller = Distiller(teacher, mlp([4]), cache_teacher_outputs=1000)  # bytes
    distiller.compile("adam", SCE)
    distiller.fit(digits.x_train[:64], digits.y_train[:64], verbose=1)
    assert "over the budget" in capsys.readouterr().out


def test_the_cache_holds_the_outputs_only_and_never_copies_the_inputs(digits, teacher):
    from keras_distill._src.training import teacher_cache

    distiller = Distiller(teacher, mlp([8], seed=7))
    x, y = digits.x_train[:300], digits.y_train[:300]
    validation = (digits.x_test[:50], digits.y_test[:50])
    changed = teacher_cache.cached_arguments(
        distiller, {"x": x, "y": y, "validation_data": validation, "verbose": 0}
    )
    assert "x" not in changed  # fit receives the caller's array itself
    assert changed["y"]["labels"] is y
    logits = changed["y"]["teacher_logits"]
    assert logits.dtype == np.float32 and logits.nbytes == 300 * 10 * 4  # outputs only
    assert changed["validation_data"][0] is validation[0]
    assert changed["validation_data"][1]["teacher_logits"].shape == (50, 10)
