import keras
import numpy as np
import pytest
from conftest import SCE, mlp
from numpy_references import reference_kl

from keras_distill import Distiller, TemperatureScheduler
from keras_distill._src.training import schedules


class CountingDistiller(Distiller):
    """Counts how often the training step is traced (Python runs only then)."""

    traces = 0

    def train_step(self, data):
        self.traces += 1
        return super().train_step(data)


def frozen_run(teacher, x, y, callbacks, epochs=3):
    """Distil with a zero learning rate, so only the temperature changes the loss."""
    distiller = CountingDistiller(teacher, mlp([8], seed=1), temperature=1.0)
    distiller.compile(keras.optimizers.SGD(0.0), SCE)
    history = distiller.fit(x, y, epochs=epochs, batch_size=64, callbacks=callbacks, verbose=0)
    return distiller, history.history


def test_annealing_reaches_the_compiled_step_without_retracing(digits, teacher):
    x, y = digits.x_train[:256], digits.y_train[:256]
    annealed, logs = frozen_run(
        teacher, x, y, [TemperatureScheduler(schedules.Step([1, 2], [1.0, 2.0, 4.0]))]
    )
    constant, constant_logs = frozen_run(teacher, x, y, [])
    t, s = teacher.predict(x, verbose=0), annealed.predict(x, verbose=0)
    expected = [reference_kl(t, s, temperature).mean() for temperature in (1.0, 2.0, 4.0)]
    np.testing.assert_allclose(logs["distillation_loss"], expected, rtol=1e-4, atol=1e-6)
    assert logs["temperature"] == [1.0, 2.0, 4.0]
    np.testing.assert_allclose(
        constant_logs["distillation_loss"], [expected[0]] * 3, rtol=1e-4, atol=1e-6
    )
    assert annealed.traces == constant.traces <= 2


def test_batch_updates_follow_the_global_step(digits, teacher):
    x, y = digits.x_train[:256], digits.y_train[:256]  # 4 batches per epoch
    seen = []
    recorder = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append(logs["temperature"])
    )
    scheduler = TemperatureScheduler(lambda step: 1.0 + step, update="batch")
    distiller, logs = frozen_run(teacher, x, y, [scheduler, recorder], epochs=2)
    assert seen == [float(step) for step in range(1, 9)]
    assert logs["temperature"] == [4.0, 8.0]
    distiller.fit(x, y, epochs=1, batch_size=64, callbacks=[scheduler, recorder], verbose=0)
    assert seen[-4:] == [9.0, 10.0, 11.0, 12.0]  # a second fit() continues the count


def test_alpha_schedule_and_verbose_messages(digits, teacher, capsys):
    x, y = digits.x_train[:128], digits.y_train[:128]
    scheduler = TemperatureScheduler(4.0, alpha_schedule=schedules.Linear(0.0, 1.0, 2), verbose=1)
    _, logs = frozen_run(teacher, x, y, [scheduler])
    assert logs["alpha"] == [0.0, 0.5, 1.0]
    assert logs["temperature"] == [4.0, 4.0, 4.0]
    out = capsys.readouterr().out
    assert "Epoch 2: TemperatureScheduler set alpha to 0.5." in out


def test_bad_schedules_and_models_are_rejected(digits, teacher):
    with pytest.raises(ValueError, match="'epoch' or 'batch'; received 'step'"):
        TemperatureScheduler(2.0, update="step")
    with pytest.raises(TypeError, match="received 'hot'"):
        TemperatureScheduler("hot")
    x, y = digits.x_train[:64], digits.y_train[:64]
    with pytest.raises(ValueError, match=r"returned -1.0 at epoch 1: `temperature` must be"):
        frozen_run(teacher, x, y, [TemperatureScheduler(lambda epoch: 1.0 - 2 * epoch)])
    plain = mlp([4])
    plain.compile("sgd", SCE)
    with pytest.raises(TypeError, match="needs a keras_distill.Distiller.*Sequential"):
        plain.fit(x, y, callbacks=[TemperatureScheduler(2.0)], verbose=0)


class Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise RuntimeError("interrupted")


@pytest.mark.parametrize("update", ["epoch", "batch"])
def test_schedule_continues_after_backup_and_restore(digits, teacher, tmp_path, update):
    x, y = digits.x_train[:128], digits.y_train[:128]  # 2 batches per epoch
    schedule = schedules.Linear(8.0, 1.0, steps=7 if update == "epoch" else 14)

    def run(extra):
        distiller = Distiller(teacher, mlp([8], seed=3))
        distiller.compile(keras.optimizers.Adam(1e-3), SCE)
        callbacks = [
            keras.callbacks.BackupAndRestore(tmp_path / "backup"),
            TemperatureScheduler(schedule, update=update),
        ] + extra
        return distiller.fit(x, y, epochs=5, batch_size=64, callbacks=callbacks, verbose=0)

    with pytest.raises(RuntimeError, match="interrupted"):
        run([Interrupt()])
    resumed = run([])
    steps = [2, 3, 4] if update == "epoch" else [5, 7, 9]  # last step of each epoch
    assert resumed.epoch == [2, 3, 4]
    assert resumed.history["temperature"] == pytest.approx([schedule(s) for s in steps])


def test_scheduler_round_trips_its_config():
    scheduler = TemperatureScheduler(schedules.Cosine(8.0, 2.0, 10), update="batch")
    restored = TemperatureScheduler.from_config(scheduler.get_config())
    assert restored.schedule == scheduler.schedule and restored.update == "batch"


def test_epoch_logs_show_temperature_and_alpha_however_callbacks_are_given(digits, teacher):
    x, y = digits.x_train[:128], digits.y_train[:128]
    distiller = Distiller(teacher, mlp([8], seed=1), temperature=3.0, alpha=0.25)
    distiller.compile(keras.optimizers.SGD(0.0), SCE)
    seen = []
    recorder = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(logs))
    made = keras.callbacks.CallbackList([recorder], add_history=True, model=distiller)
    given = [recorder]
    for callbacks in (None, recorder, given, (recorder,), made, made):
        history = distiller.fit(x, y, epochs=1, batch_size=64, callbacks=callbacks, verbose=0)
        assert history.history["temperature"][-1] == 3.0 and history.history["alpha"][-1] == 0.25
    assert [(logs["temperature"], logs["alpha"]) for logs in seen] == [(3.0, 0.25)] * 5
    assert given == [recorder] and len(made.callbacks) == 2  # the user's lists left as they were
    assert distiller.train_on_batch(x, y, return_dict=True).keys() == {
        "loss",
        "student_loss",
        "distillation_loss",
    }  # a step returns losses and metrics only (each value it returns costs a conversion)
