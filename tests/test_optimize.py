"""tensorflow-model-optimization students, run with TF_USE_LEGACY_KERAS=1 in a subprocess."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import pytest

from keras_distill import optimize

LEGACY = textwrap.dedent(
    """
    import json, os, sys, tempfile
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import numpy as np
    import tensorflow as tf
    import keras
    import keras_distill as kd
    from keras_distill import optimize
    from keras_distill.datasets import load_digits

    split = load_digits()
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def mlp(hidden, seed):
        tf.keras.utils.set_random_seed(seed)
        layers = [tf.keras.Input((64,))]
        layers += [tf.keras.layers.Dense(u, activation="relu") for u in hidden]
        return tf.keras.Sequential(layers + [tf.keras.layers.Dense(10)])

    report = {"tf_keras": tf.keras.__name__}
    teacher = mlp([128], 0)
    teacher.compile("adam", loss, metrics=["accuracy"])
    teacher.fit(split.x_train, split.y_train, epochs=20, verbose=0)

    qat = optimize.quantization_aware(mlp([32], 1))
    distiller = kd.Distiller(teacher, qat, temperature=2.0, alpha=0.5)
    report["distiller"] = type(distiller).__name__
    distiller.compile(tf.keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    history = distiller.fit(split.x_train, split.y_train, epochs=15, verbose=0,
                            callbacks=[kd.TemperatureScheduler(kd.schedules.Linear(2.0, 1.0, 14))])
    report["qat_history"] = {k: [float(v) for v in vs] for k, vs in history.history.items()}
    exported = kd.micro.export(qat, None, tempfile.mkdtemp(), name="qat",
                               validation_data=(split.x_test, split.y_test))
    report["qat_export"] = exported.validation | {"ops": list(exported.ops),
                                                  "bytes": exported.model_bytes}

    steps = 15 * int(np.ceil(len(split.x_train) / 32))
    pruned, callbacks = optimize.prune(mlp([32], 2), 0.75, end_step=steps // 2, frequency=20)
    distiller = kd.Distiller(teacher, pruned)
    distiller.compile(tf.keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    history = distiller.fit(split.x_train, split.y_train, epochs=15, verbose=0,
                            callbacks=callbacks + [kd.TemperatureScheduler(2.0, update="batch")])
    stripped = optimize.strip(pruned)
    report["sparsity"] = optimize.sparsity(stripped)
    report["pruned_temperature"] = history.history["temperature"][-1]
    exported = kd.micro.export(stripped, split.x_train, tempfile.mkdtemp(), name="pruned",
                               validation_data=(split.x_test, split.y_test))
    report["pruned_export"] = exported.validation | {"sparsity": exported.sparsity}
    try:
        kd.Distiller(keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)]), mlp([4], 3))
    except ValueError as error:
        report["mixed_error"] = str(error)
    print("REPORT " + json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def report():
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-c", LEGACY], capture_output=True, text=True, timeout=900, env=env
    )
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("REPORT "))
    return json.loads(line[len("REPORT ") :])


@pytest.mark.slow
def test_quantization_aware_distillation_exports_and_runs_in_tflm(report):
    assert report["tf_keras"].startswith("tf_keras")
    assert report["distiller"] == "LegacyDistiller"
    history = report["qat_history"]
    assert history["temperature"][0] == 2.0 and history["temperature"][-1] == 1.0
    assert history["distillation_loss"][-1] < 0.5 * history["distillation_loss"][0]
    assert history["accuracy"][-1] >= 0.9
    qat = report["qat_export"]
    assert qat["agreement"] >= 0.97 and qat["int8_accuracy"] >= 0.9
    assert qat["ops"] == ["FULLY_CONNECTED"]


@pytest.mark.slow
def test_pruned_student_reaches_the_sparsity_with_tfmot_callbacks(report):
    assert 0.74 <= report["sparsity"] <= 0.76
    assert report["pruned_temperature"] == 2.0  # TemperatureScheduler ran beside UpdatePruningStep
    assert report["pruned_export"]["sparsity"] == pytest.approx(report["sparsity"])
    assert report["pruned_export"]["agreement"] >= 0.95


@pytest.mark.slow
def test_mixing_keras_flavours_is_refused(report):
    assert "must both be Keras 3 models or both tf_keras" in report["mixed_error"]


def test_keras_3_users_get_told_what_to_set():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(RuntimeError, match="Set TF_USE_LEGACY_KERAS=1 before TensorFlow"):
        optimize.quantization_aware(model)
    with pytest.raises(ValueError, match=r"`target_sparsity` must be in \(0, 1\); received 1.5"):
        optimize.prune(model, 1.5, end_step=10)
