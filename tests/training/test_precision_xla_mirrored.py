"""Mixed precision, XLA and tf.distribute.MirroredStrategy."""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from conftest import SCE, mlp

from keras_distill import Distiller, TemperatureScheduler
from keras_distill._src.training import schedules


@pytest.fixture
def mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_mixed_float16_computes_the_losses_in_float32(digits, mixed_precision):
    teacher, student = mlp([32], seed=0), mlp([8], seed=1)
    assert student.compute_dtype == "float16"
    distiller = Distiller(teacher, student, temperature=4.0)
    distiller.compile(keras.optimizers.Adam(1e-3), SCE)
    assert isinstance(distiller.optimizer, keras.optimizers.LossScaleOptimizer)
    x, y = digits.x_train[:256], digits.y_train[:256]
    evaluation = distiller.evaluate(x, y, return_dict=True, verbose=0)
    t = teacher.predict(x, verbose=0).astype("float32")
    s = student.predict(x, verbose=0).astype("float32")
    from numpy_references import reference_kl

    # float32 math on the float16 logits: exact to float32 precision.
    assert evaluation["distillation_loss"] == pytest.approx(
        reference_kl(t, s, 4.0).mean(), rel=1e-4, abs=1e-6
    )
    history = distiller.fit(x, y, epochs=3, verbose=0)
    assert distiller.temperature.dtype == "float32"
    assert np.isfinite(history.history["loss"]).all()
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_jit_compile_matches_the_graph_step(digits, teacher):
    x, y = digits.x_train[:256], digits.y_train[:256]

    def run(jit):
        distiller = Distiller(teacher, mlp([8], seed=2), temperature=2.0, alpha=0.5)
        distiller.compile(keras.optimizers.SGD(0.05), SCE, jit_compile=jit)
        history = distiller.fit(
            x,
            y,
            epochs=3,
            batch_size=64,
            shuffle=False,
            verbose=0,
            callbacks=[TemperatureScheduler(schedules.Linear(4.0, 1.0, 2))],
        )
        return history.history

    xla, graph = run(True), run(False)
    np.testing.assert_allclose(xla["loss"], graph["loss"], rtol=1e-4, atol=1e-6)
    assert xla["temperature"] == [4.0, 2.5, 1.0]


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras, numpy as np
    from keras_distill import Distiller, TemperatureScheduler
    from keras_distill._src.training import schedules

    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 16)).astype("float32")
    y = rng.integers(0, 4, size=256)

    def model(units, seed):
        keras.utils.set_random_seed(seed)
        return keras.Sequential([
            keras.Input((16,)), keras.layers.Dense(units, activation="relu"),
            keras.layers.Dense(4),
        ])

    def run(strategy):
        with strategy.scope():
            distiller = Distiller(model(32, 0), model(8, 1), temperature=3.0, alpha=0.3)
            distiller.compile(
                keras.optimizers.SGD(0.1),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
        history = distiller.fit(
            data, epochs=2, verbose=0,
            callbacks=[TemperatureScheduler(schedules.Linear(3.0, 1.0, 1))],
        )
        return distiller.student.get_weights(), history.history, strategy.num_replicas_in_sync

    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    one_w, one_h, _ = run(tf.distribute.OneDeviceStrategy(devices[0]))
    two_w, two_h, replicas = run(tf.distribute.MirroredStrategy(devices))
    print(json.dumps({
        "replicas": replicas,
        "max_weight_diff": max(float(np.abs(a - b).max()) for a, b in zip(one_w, two_w)),
        "one": one_h, "two": two_h,
    }))
    """
)


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus_matches_one_device():
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["max_weight_diff"] < 1e-5
    for key in ("loss", "student_loss", "distillation_loss"):
        np.testing.assert_allclose(report["two"][key], report["one"][key], rtol=1e-5, atol=1e-6)
    assert report["two"]["temperature"] == [3.0, 1.0]


AUGMENTED_SCRIPT = MIRRORED_SCRIPT.replace(
    "temperature=3.0, alpha=0.3)",
    "temperature=3.0, alpha=0.3, augment=lambda x, training: 1.1 * x + 0.1)",
).replace(
    "print(json.dumps({",
    "from keras_distill import augment\n"
    "with tf.distribute.MirroredStrategy(devices).scope():\n"
    "    noisy = Distiller(model(32, 0), model(8, 1), alpha=0.0, augment=keras.Sequential(\n"
    "        [augment.RandomShift1D(2), keras.layers.GaussianNoise(0.1)]))\n"
    "    noisy.compile('adam', keras.losses.SparseCategoricalCrossentropy(from_logits=True))\n"
    "random_history = noisy.fit(x, y, epochs=2, batch_size=64, verbose=0).history\n"
    "print(json.dumps({'random': random_history,",
)


@pytest.mark.slow
def test_augmentation_under_mirrored_strategy_matches_one_device():
    assert "augment=lambda" in AUGMENTED_SCRIPT and "'random'" in AUGMENTED_SCRIPT
    result = subprocess.run(
        [sys.executable, "-c", AUGMENTED_SCRIPT], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2 and report["max_weight_diff"] < 1e-5
    np.testing.assert_allclose(report["two"]["loss"], report["one"]["loss"], rtol=1e-5, atol=1e-6)
    assert np.isfinite(report["random"]["loss"]).all()
